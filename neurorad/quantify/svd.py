"""Per-lesion measurements of the small-vessel-disease workflows (WMH, microbleeds) on one grid.

* :func:`periventricular_zone`: brain voxels within ``mm`` of the ventricles (not the ventricles).
* :func:`ventricle_mask`: the lateral ventricles of the subject: CSF-dark voxels (image / NAWM ratio <
  ``max_ratio``) inside the registered MNI152 ventricle region (CSF prior > 0.5 more than 20 mm deep
  in the brain, the phantom anatomy's definition) dilated by ``search_mm``, components > 1 mL; the
  prior region itself when the image finds none (e.g. contrast where CSF is not dark).
* :func:`measure_lesions`: 26-connected components (:mod:`neurorad.quantify.components`) with volume,
  centroid (RAS mm), bounding-box diagonal (mm), smallest and largest distance to the ventricles (mm),
  mean of a score map, and the most frequent atlas region names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from neurorad.image.volume import Volume
from neurorad.quantify.atlas import component_regions
from neurorad.quantify.components import connected_components, label_voxel_counts

__all__ = ["ventricle_mask", "periventricular_zone", "LesionMeasure", "measure_lesions"]


def _edt_mm(mask: np.ndarray, spacing_mm: np.ndarray, step: int = 2) -> np.ndarray:
    """Distance (mm) to the nearest False voxel, computed on every ``step``-th voxel and repeated back
    (error up to about ``step`` voxels; for region definitions, not for measurements)."""
    sub = mask[::step, ::step, ::step]
    d = ndimage.distance_transform_edt(sub, sampling=np.asarray(spacing_mm) * step)
    for ax in range(3):
        d = np.repeat(d, step, axis=ax)
    return d[: mask.shape[0], : mask.shape[1], : mask.shape[2]]


def ventricle_mask(ratio: np.ndarray, csf_prior: np.ndarray, brain: np.ndarray,
                   spacing_mm: tuple[float, float, float], max_ratio: float = 0.6, search_mm: float = 6.0,
                   min_ml: float = 1.0) -> np.ndarray:
    """Lateral ventricles (bool) on the image grid (see the module docstring)."""
    sp = np.asarray(spacing_mm, float)
    vox_ml = float(np.prod(sp)) / 1000.0
    depth = _edt_mm(np.asarray(brain, bool), sp)
    prior = (csf_prior > 0.5) & (depth > 20.0)
    lab, n = connected_components(prior, 26)
    if n:
        prior = np.isin(lab, 1 + np.flatnonzero(label_voxel_counts(lab, n) * vox_ml > min_ml))
    if not prior.any():
        return prior
    near = _edt_mm(~prior, sp) <= search_mm
    vent = near & brain & (ratio > 0) & (ratio < max_ratio)
    lab, n = connected_components(vent, 26)
    if n:
        vent = np.isin(lab, 1 + np.flatnonzero(label_voxel_counts(lab, n) * vox_ml > min_ml))
    return vent if vent.any() else prior


@dataclass(frozen=True)
class LesionMeasure:
    label: int  # component label 1..n
    n_voxels: int
    volume_mm3: float
    centroid_mm: tuple[float, float, float]
    max_diameter_mm: float
    min_distance_to_ventricle_mm: float
    max_distance_to_ventricle_mm: float
    mean_score: float | None
    regions: dict[str, str]  # atlas name -> region name


def measure_lesions(mask: np.ndarray, ref: Volume, ventricles: np.ndarray | None = None,
                    score: np.ndarray | None = None,
                    atlases: dict[str, tuple[np.ndarray, dict[int, str]]] | None = None,
                    connectivity: int = 26) -> tuple[np.ndarray, list[LesionMeasure]]:
    """Label map (int32, components 1..n in raster order) and one :class:`LesionMeasure` per component."""
    sp = np.asarray(ref.spacing_mm, float)
    lab, n = connected_components(np.asarray(mask, bool), connectivity)
    if n == 0:
        return lab, []
    counts = label_voxel_counts(lab, n)
    objs = ndimage.find_objects(lab)
    cents = ndimage.center_of_mass(np.ones(lab.shape, np.uint8), lab, np.arange(1, n + 1))
    cents_mm = ref.voxel_to_world(np.asarray(cents))
    tree = None
    if ventricles is not None and np.any(ventricles):
        from scipy.spatial import cKDTree

        v = np.asarray(ventricles, bool)
        surf = np.argwhere(v & ~ndimage.binary_erosion(v))
        tree = cKDTree(surf * sp)
    regions: dict[str, list[tuple[str, float]]] = {}
    for name, (alab, names) in (atlases or {}).items():
        regions[name] = component_regions(lab, n, alab, names)
    mean_score = None
    if score is not None:
        mean_score = ndimage.mean(np.asarray(score, np.float64), lab, np.arange(1, n + 1))
    out = []
    for i in range(n):
        sl = objs[i]
        ext = np.array([(s.stop - s.start) for s in sl], float) * sp
        diam = float(np.sqrt((ext**2).sum()))
        if tree is not None:
            pts = (np.argwhere(lab[sl] == i + 1) + np.array([s.start for s in sl])) * sp
            d, _ = tree.query(pts)
            dmin, dmax = float(d.min()), float(d.max())
        else:
            dmin = dmax = float("inf")
        out.append(LesionMeasure(
            i + 1, int(counts[i]), float(counts[i] * np.prod(sp)), tuple(float(x) for x in cents_mm[i]), diam,
            dmin, dmax, None if mean_score is None else float(mean_score[i]),
            {k: v[i][0] for k, v in regions.items()}))
    return lab, out


def periventricular_zone(ventricles: np.ndarray, brain: np.ndarray, spacing_mm: tuple[float, float, float],
                         mm: float = 8.0) -> np.ndarray:
    """Brain voxels within about ``mm`` of the ventricles, outside them (bool)."""
    v = np.asarray(ventricles, bool)
    if not v.any():
        return np.zeros(v.shape, bool)
    return (_edt_mm(~v, np.asarray(spacing_mm, float)) <= mm) & ~v & np.asarray(brain, bool)
