"""Bidimensional tumour measurement (RANO / Macdonald): the product of the longest diameter on the
axial slice of largest extent and the longest diameter perpendicular to it.

Wen et al., "Updated response assessment criteria for high-grade gliomas: RANO", J Clin Oncol 2010:
"the product of the perpendicular diameters" of a lesion on the slice where it is largest. Computed
here automatically on the mask, as the EASE paper reports volume beside the 2D measurement
(PAPERS.md A3). The perpendicular diameter is the longest chord of the mask at right angles to the
longest diameter (measured on the in-plane pixel centres, so a disc of diameter d measures about
d - one pixel; stated, not corrected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError

__all__ = ["Bidimensional", "bidimensional_mm", "axial_slice_of_largest_area"]


@dataclass(frozen=True)
class Bidimensional:
    """Longest diameter, its perpendicular, their product, and the axial slice index used."""

    longest_mm: float
    perpendicular_mm: float
    product_mm2: float
    slice_index: int


def axial_slice_of_largest_area(mask: np.ndarray) -> int:
    """Index along the last array axis (axial for a RAS+ volume) with the most mask pixels; -1 if empty."""
    areas = mask.reshape(-1, mask.shape[-1]).sum(axis=0)
    return int(np.argmax(areas)) if areas.max() > 0 else -1


def _longest_chord(points: np.ndarray) -> tuple[float, np.ndarray]:
    """Length and unit direction of the longest segment between two points (on the convex hull)."""
    if len(points) >= 3:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # collinear points: all of them are on the 'hull'
            pass
    d = points[:, None, :] - points[None, :, :]
    dist2 = (d**2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(dist2)), dist2.shape)
    length = float(np.sqrt(dist2[i, j]))
    direction = (points[j] - points[i]) / length if length > 0 else np.array([1.0, 0.0])
    return length, direction


def bidimensional_mm(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> Bidimensional:
    """RANO bidimensional measurement of ``mask`` (axis-aligned RAS+ grid, ``spacing_mm`` per axis).

    The perpendicular diameter is the longest chord perpendicular to the longest diameter: pixels
    are binned by their position along the longest diameter (bins one pixel wide) and the widest
    bin across it is taken.
    """
    k = axial_slice_of_largest_area(mask)
    if k < 0:
        return Bidimensional(0.0, 0.0, 0.0, -1)
    ij = np.argwhere(mask[..., k])
    pts = ij * np.asarray(spacing_mm[:2], float)
    if len(pts) == 1:
        return Bidimensional(0.0, 0.0, 0.0, k)
    longest, u = _longest_chord(pts)
    v = np.array([-u[1], u[0]])
    along, across = pts @ u, pts @ v
    pixel = float(min(spacing_mm[:2]))
    bins = np.floor((along - along.min()) / pixel).astype(int)
    perp = 0.0
    for b in np.unique(bins):
        sel = across[bins == b]
        perp = max(perp, float(sel.max() - sel.min()))
    return Bidimensional(round(longest, 3), round(perp, 3), round(longest * perp, 3), k)
