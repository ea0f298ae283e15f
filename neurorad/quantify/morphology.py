"""Shape of one 3D region (a haematoma): volume, mesh surface area, SR index, axis diameters, centre.

Definitions follow the published ICH morphology study (PAPERS.md D2.6: surface area, volume,
geometric centre and diameters with skimage, in template space):

* **volume** = voxel count x voxel volume;
* **surface area** A = area of the marching-cubes mesh (Lorensen & Cline 1987;
  ``skimage.measure.marching_cubes`` + ``mesh_surface_area``). Marching cubes on a binary mask
  follows the voxel staircase and overestimates the area of a smooth surface by ~8 % (a sphere
  then gets SR 0.92); the mask is therefore smoothed with a Gaussian of ``smooth_sigma_vox``
  voxels (default 1) before the 0.5 iso-surface is taken, which brings a sphere to SR 1.00
  at 0.5 mm voxels (tests/quantify/test_morphology.py);
* **SR index** (shape regularity) = pi^(1/3) (6V)^(2/3) / A: 1 for a sphere (then
  pi^(1/3)(6V)^(2/3) = 4 pi r^2), towards 0 for very irregular shapes;
* **diameters** AP (length), LR (width), SI (height) "measured on the slice of maximum
  haematoma area in planes parallel to the coordinate system": AP and LR are the extents along
  y and x in the axial slice of largest area, SI the extent along z in the coronal slice of
  largest area (extent = (last - first + 1) voxels x spacing);
* **geometric centre** = centroid of the largest connected region in 3D (connectivity is not
  stated in the paper; 26-connectivity here, neurorad's lesion definition);
* **centre movement** = distance between two centres and its projections on the axial (x-y),
  coronal (x-z) and sagittal (y-z) planes.

The mask must be on an axis-aligned RAS-like grid (template space, or any grid reoriented with
:func:`neurorad.image.geometry.reorient`): array axes 0, 1, 2 are x (left-right), y
(posterior-anterior), z (inferior-superior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from neurorad.image.volume import Volume
from neurorad.quantify.components import connected_components

__all__ = ["Shape", "surface_area_mm2", "sr_index", "axis_diameters_mm", "largest_region_centroid_mm",
           "describe_shape", "centre_movement", "ellipsoid_surface_area_mm2", "CentreMovement"]


def _check_axis_aligned(volume: Volume, tol: float = 1e-3) -> np.ndarray:
    direction = volume.affine[:3, :3] / np.asarray(volume.spacing_mm)
    if not np.allclose(np.abs(direction), np.eye(3), atol=tol) or np.any(np.diag(direction) < 0):
        raise ValueError("shape measurements need an axis-aligned RAS grid (reorient or resample to the template)")
    return np.asarray(volume.spacing_mm, float)


def surface_area_mm2(mask: np.ndarray, spacing_mm: tuple[float, float, float], smooth_sigma_vox: float = 1.0
                     ) -> float:
    """Area (mm^2) of the marching-cubes iso-surface of ``mask`` (see module doc for the smoothing)."""
    from skimage import measure

    m = np.asarray(mask, bool)
    if not m.any():
        return 0.0
    idx = np.argwhere(m)
    lo = np.maximum(idx.min(0) - 4, 0)
    hi = idx.max(0) + 5
    f = np.pad(m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))].astype(np.float32), 4)
    if smooth_sigma_vox > 0:
        f = ndimage.gaussian_filter(f, smooth_sigma_vox)
    if f.max() <= 0.5:  # a single voxel smoothed away: fall back to the binary surface
        f = np.pad(m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))].astype(np.float32), 4)
    verts, faces, _, _ = measure.marching_cubes(f, 0.5, spacing=tuple(float(s) for s in spacing_mm))
    return float(measure.mesh_surface_area(verts, faces))


def sr_index(volume_mm3: float, area_mm2: float) -> float:
    """Shape regularity index SR = pi^(1/3) (6V)^(2/3) / A (PAPERS.md D2.6); 1 for a sphere."""
    if area_mm2 <= 0:
        return float("nan")
    return float(math.pi ** (1 / 3) * (6.0 * volume_mm3) ** (2 / 3) / area_mm2)


def ellipsoid_surface_area_mm2(a: float, b: float, c: float) -> float:
    """Exact surface area of an ellipsoid with semi-axes a, b, c (Legendre's form with incomplete
    elliptic integrals; scipy ``ellipeinc``/``ellipkinc``). The analytic oracle of the SR tests."""
    from scipy.special import ellipeinc, ellipkinc

    a, b, c = sorted((float(a), float(b), float(c)), reverse=True)
    if math.isclose(a, c):
        return 4 * math.pi * a * a
    phi = math.acos(c / a)
    m = (a * a * (b * b - c * c)) / (b * b * (a * a - c * c))
    s = math.sin(phi)
    legendre = ellipeinc(phi, m) * s * s + ellipkinc(phi, m) * math.cos(phi) ** 2
    return 2 * math.pi * c * c + 2 * math.pi * a * b / s * legendre


def _extent(line_mask: np.ndarray, axis: int, spacing: float) -> float:
    occupied = np.flatnonzero(np.asarray(line_mask).any(axis=tuple(i for i in range(line_mask.ndim) if i != axis)))
    return 0.0 if occupied.size == 0 else float((occupied[-1] - occupied[0] + 1) * spacing)


def axis_diameters_mm(mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> dict[str, float]:
    """AP, LR and SI diameters on the slices of maximum area (module doc). Keys ``ap``, ``lr``, ``si``."""
    m = np.asarray(mask, bool)
    if not m.any():
        return {"ap": 0.0, "lr": 0.0, "si": 0.0}
    sx, sy, sz = (float(s) for s in spacing_mm)
    k = int(np.argmax(m.sum(axis=(0, 1))))  # axial slice of largest area
    axial = m[:, :, k]
    j = int(np.argmax(m.sum(axis=(0, 2))))  # coronal slice of largest area
    coronal = m[:, j, :]
    return {"ap": _extent(axial, 1, sy), "lr": _extent(axial, 0, sx), "si": _extent(coronal, 1, sz)}


def largest_region_centroid_mm(mask: np.ndarray, affine: np.ndarray) -> tuple[float, float, float] | None:
    """Centroid (RAS mm) of the largest 26-connected region of ``mask`` (None when empty)."""
    labels, n = connected_components(np.asarray(mask, bool), 26)
    if n == 0:
        return None
    counts = np.bincount(labels.ravel())[1:]
    ijk = np.argwhere(labels == int(np.argmax(counts)) + 1).mean(axis=0)
    xyz = affine[:3, :3] @ ijk + affine[:3, 3]
    return (float(xyz[0]), float(xyz[1]), float(xyz[2]))


@dataclass(frozen=True)
class Shape:
    """Morphometry of one region (PAPERS.md D2.6)."""

    volume_ml: float
    surface_area_mm2: float
    sr_index: float
    diameter_ap_mm: float
    diameter_lr_mm: float
    diameter_si_mm: float
    centre_mm: tuple[float, float, float] | None
    n_regions: int

    @property
    def diameters(self) -> dict[str, float]:
        return {"ap": self.diameter_ap_mm, "lr": self.diameter_lr_mm, "si": self.diameter_si_mm}


def describe_shape(mask: Volume, smooth_sigma_vox: float = 1.0) -> Shape:
    """All shape measurements of a binary mask on an axis-aligned RAS grid."""
    spacing = _check_axis_aligned(mask)
    m = np.asarray(mask.data) > 0
    vol_mm3 = float(m.sum() * mask.voxel_volume_mm3)
    area = surface_area_mm2(m, tuple(spacing), smooth_sigma_vox)
    d = axis_diameters_mm(m, tuple(spacing))
    _, n = connected_components(m, 26)
    return Shape(vol_mm3 / 1000.0, area, sr_index(vol_mm3, area), d["ap"], d["lr"], d["si"],
                 largest_region_centroid_mm(m, mask.affine), n)


@dataclass(frozen=True)
class CentreMovement:
    """Movement of the centre between two scans: distance (mm), vector (RAS mm, repeat - initial)
    and the lengths of its projections on the axial (x-y), coronal (x-z) and sagittal (y-z) planes."""

    distance_mm: float
    vector_mm: tuple[float, float, float]
    axial_mm: float
    coronal_mm: float
    sagittal_mm: float


def centre_movement(initial: tuple[float, float, float], repeat: tuple[float, float, float]) -> CentreMovement:
    """Centre movement distance and its plane projections (PAPERS.md D2.6)."""
    v = np.asarray(repeat, float) - np.asarray(initial, float)
    dx, dy, dz = (float(x) for x in v)
    return CentreMovement(float(np.linalg.norm(v)), (dx, dy, dz), math.hypot(dx, dy), math.hypot(dx, dz),
                          math.hypot(dy, dz))
