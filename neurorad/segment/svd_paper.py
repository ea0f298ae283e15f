"""The published WMH and microbleed networks' own preprocessing (PAPERS.md B2 and C2), as pure functions.

WMH 2D U-Net (Shan et al., B2):
1. z-score of the global 3D intensities (mean 0, SD 1 over the whole volume);
2. zero-pad each axial slice to a square;
3. to 384 x 384: bilinear interpolation when smaller, centre crop when larger (keeps the resolution
   that small lesions need);
4. the network sees 384 x 384 x 1 axial slices; slice masks are stacked back into 3D.

Microbleed 3-slice U-Net (C2):
1. SWI scaled so the white-matter histogram peak is 1 ("aligned on histogram peaks relative to white
   matter"), histogram bins with relative frequency < 1e-4 dropped, the window set to the remaining
   range, min-max normalised to 0-1;
2. crop to a square on the shortest side, then crop or resize to 384 x 384;
3. three consecutive slices in, the middle slice's mask out; training slices sampled positive:negative
   1:1 (a positive slice has a microbleed in its middle slice).

:func:`to_paper_grid` returns the 384 x 384 x Z stack as a :class:`Volume` whose affine is exact (each
pixel's world position is the native position it was interpolated from), so a network engine that
keeps the input's grid (``spacing_mm`` None, normalisation ``none``) runs on it and
:func:`from_paper_grid` brings the prediction back onto the native grid. Where the papers are silent
(the inverse mapping, thresholds) the choices are stated here: the inverse is bilinear for
probabilities, zero outside a crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from neurorad.image.volume import Volume

__all__ = ["PAPER_SIZE", "SquareGeometry", "to_paper_grid", "from_paper_grid", "wmh_paper_normalise",
           "swi_paper_normalise", "balanced_slices", "three_slice_input"]

PAPER_SIZE = 384


@dataclass(frozen=True)
class SquareGeometry:
    """How a native axial slice (``shape_ij``) maps to the network's ``size`` x ``size`` slice."""

    shape_ij: tuple[int, int]
    square: Literal["pad", "crop"]
    offset_ij: tuple[int, int]  # pad: zeros added before; crop: first index kept
    side: int  # the square's side
    size: int = PAPER_SIZE

    @property
    def mode(self) -> str:
        return "resize" if self.side < self.size else ("crop" if self.side > self.size else "none")

    @property
    def crop0(self) -> int:
        return (self.side - self.size) // 2 if self.side > self.size else 0

    def square_to_native(self, p: np.ndarray) -> np.ndarray:
        """Index in the square -> native index (both axes; works on arrays)."""
        off = np.asarray(self.offset_ij, float)
        return p - off if self.square == "pad" else p + off

    def net_to_square(self, u: np.ndarray) -> np.ndarray:
        if self.mode == "resize":  # pixel centres: p = (u + 0.5) S / N - 0.5
            return (u + 0.5) * self.side / self.size - 0.5
        return u + self.crop0


def _geometry(shape_ij: tuple[int, int], square: Literal["pad", "crop"], size: int) -> SquareGeometry:
    i, j = shape_ij
    side = max(i, j) if square == "pad" else min(i, j)
    off = ((side - i) // 2, (side - j) // 2) if square == "pad" else ((i - side) // 2, (j - side) // 2)
    return SquareGeometry((int(i), int(j)), square, (int(off[0]), int(off[1])), int(side), size)


def _to_square(a: np.ndarray, g: SquareGeometry) -> np.ndarray:
    s = g.side
    if g.square == "pad":
        out = np.zeros((s, s, *a.shape[2:]), a.dtype)
        out[g.offset_ij[0]:g.offset_ij[0] + a.shape[0], g.offset_ij[1]:g.offset_ij[1] + a.shape[1]] = a
        return out
    return a[g.offset_ij[0]:g.offset_ij[0] + s, g.offset_ij[1]:g.offset_ij[1] + s].copy()


def _resize_ij(a: np.ndarray, n: int, order: int) -> np.ndarray:
    """Axial-plane resize of a (S, S, Z) array to (n, n, Z), pixel-centre aligned."""
    s = a.shape[0]
    u = (np.arange(n) + 0.5) * s / n - 0.5
    ii, jj = np.meshgrid(u, u, indexing="ij")
    out = np.empty((n, n, a.shape[2]), np.float32)
    for k in range(a.shape[2]):
        out[:, :, k] = ndimage.map_coordinates(a[:, :, k].astype(np.float32), [ii, jj], order=order, mode="nearest")
    return out


def to_paper_grid(vol: Volume, data: np.ndarray | None = None, square: Literal["pad", "crop"] = "pad",
                  size: int = PAPER_SIZE, order: int = 1) -> tuple[Volume, SquareGeometry]:
    """``data`` (default ``vol.data``; RAS axial = third axis) as the network's ``size`` x ``size`` x Z stack:
    square by zero padding (WMH) or by cropping on the shortest side (microbleeds), then bilinear resize
    when smaller than ``size`` or centre crop when larger (``order`` 0 for label maps)."""
    a = np.asarray(vol.data if data is None else data)
    g = _geometry((a.shape[0], a.shape[1]), square, size)
    sq = _to_square(a, g)
    if g.mode == "resize":
        net = _resize_ij(sq, size, order)
        if order == 0:
            net = net.astype(a.dtype)
        scale = g.side / size
        t = np.eye(4)
        t[0, 0] = t[1, 1] = scale
        t[0, 3] = t[1, 3] = 0.5 * scale - 0.5
    else:
        c = g.crop0
        net = sq[c:c + size, c:c + size]
        t = np.eye(4)
        t[0, 3] = t[1, 3] = c
    sq_to_native = np.eye(4)
    d = -np.asarray(g.offset_ij, float) if g.square == "pad" else np.asarray(g.offset_ij, float)
    sq_to_native[0, 3], sq_to_native[1, 3] = d
    affine = vol.affine @ sq_to_native @ t
    return Volume(np.ascontiguousarray(net), affine, {"paper_grid": True}), g


def from_paper_grid(net: np.ndarray, g: SquareGeometry, order: int = 1) -> np.ndarray:
    """A (size, size, Z) array on the network grid back on the native (I, J, Z) grid (zero outside)."""
    net = np.asarray(net)
    if g.mode == "resize":
        sq = _resize_ij(net, g.side, order)
    else:
        sq = np.zeros((g.side, g.side, net.shape[2]), np.float32)
        c = g.crop0
        sq[c:c + g.size, c:c + g.size] = net
    i, j = g.shape_ij
    out = np.zeros((i, j, net.shape[2]), np.float32)
    if g.square == "pad":
        out[:] = sq[g.offset_ij[0]:g.offset_ij[0] + i, g.offset_ij[1]:g.offset_ij[1] + j]
    else:
        out[g.offset_ij[0]:g.offset_ij[0] + g.side, g.offset_ij[1]:g.offset_ij[1] + g.side] = sq
    return out


def wmh_paper_normalise(data: np.ndarray) -> np.ndarray:
    """Global 3D z-score (mean 0, SD 1 over every voxel), as B2 step 1."""
    a = np.asarray(data, np.float64)
    sd = float(a.std()) or 1.0
    return ((a - float(a.mean())) / sd).astype(np.float32)


def swi_paper_normalise(data: np.ndarray, wm_mask: np.ndarray | None = None, min_frequency: float = 1e-4,
                        bins: int = 1000) -> tuple[np.ndarray, dict[str, float]]:
    """SWI to 0-1 as C2 step 1: scale so the white-matter histogram peak is 1 (the peak of all non-zero
    voxels without ``wm_mask``), drop histogram bins of relative frequency < ``min_frequency``, window to
    the remaining range, min-max to [0, 1]. Returns the image and (wm_peak, window_lo, window_hi)."""
    a = np.asarray(data, np.float32)
    ref = a[wm_mask & (a > 0)] if wm_mask is not None and np.any(wm_mask) else a[a > 0]
    if ref.size == 0:
        raise ValueError("SWI has no positive voxel to normalise on")
    h, e = np.histogram(ref, bins=256)
    hs = ndimage.gaussian_filter1d(h.astype(float), 2.0)
    k = int(np.argmax(hs))
    peak = float(0.5 * (e[k] + e[k + 1])) or 1.0
    x = a / peak
    nz = x[x > 0]
    h, e = np.histogram(nz, bins=bins)
    keep = np.flatnonzero(h / max(nz.size, 1) >= min_frequency)
    lo, hi = (float(e[keep[0]]), float(e[keep[-1] + 1])) if keep.size else (float(nz.min()), float(nz.max()))
    y = np.clip((x - lo) / max(hi - lo, 1e-9), 0.0, 1.0).astype(np.float32)
    return y, {"wm_peak": peak, "window_lo": lo * peak, "window_hi": hi * peak}


def three_slice_input(stack: np.ndarray, k: int) -> np.ndarray:
    """Slices k-1, k, k+1 of a (X, Y, Z) stack as (3, X, Y) channels (edges repeat the end slice)."""
    z = stack.shape[2]
    idx = [min(max(k + d, 0), z - 1) for d in (-1, 0, 1)]
    return np.stack([stack[:, :, i] for i in idx], axis=0)


def balanced_slices(label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training slice indices, positive : negative = 1 : 1 (C2 step 4): (positive, negative) where a
    positive slice has a label in its middle slice; negatives drawn without replacement (all of them when
    fewer than the positives)."""
    has = np.asarray(label).reshape(-1, label.shape[2]).any(axis=0) if label.ndim == 3 else np.asarray(label)
    pos = np.flatnonzero(has)
    neg = np.flatnonzero(~has)
    if len(neg) > len(pos):
        neg = np.sort(rng.choice(neg, size=len(pos), replace=False))
    return pos, neg
