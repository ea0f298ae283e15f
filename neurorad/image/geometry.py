"""Orientation, resampling and cropping of :class:`Volume` s (pure functions).

* :func:`reorient` - permute/flip array axes to RAS (or any axis codes) with nibabel's
  orientation tools (``io_orientation`` / ``ornt_transform`` / ``inv_ornt_aff``); exact, no
  interpolation, every voxel keeps its world position.
* :func:`resample_to_spacing`, :func:`resample_to_reference` - SimpleITK ``Resample``
  (linear, nearest neighbour or cubic B-spline) through :mod:`neurorad.image.sitk_bridge`;
  an optional rigid/affine ``world_transform`` (4x4, RAS mm) moves the image content.
* :func:`crop_to_mask` - bounding box of a mask plus a margin in mm, affine updated so that
  world coordinates are unchanged.
"""

from __future__ import annotations

from typing import Literal

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from neurorad.errors import InputError
from neurorad.image.sitk_bridge import to_sitk
from neurorad.image.volume import Volume

Interpolation = Literal["linear", "nearest", "bspline"]

_INTERP = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def reorient(volume: Volume, axcodes: str = "RAS") -> Volume:
    """Permute/flip the array so that its axes point to ``axcodes`` (default RAS+).

    For oblique images the closest axes are used (nibabel ``io_orientation``); no voxel is
    interpolated and ``voxel_to_world`` of each voxel value is unchanged.
    """
    start = nib.io_orientation(volume.affine)
    target = nib.orientations.axcodes2ornt(tuple(axcodes))
    transform = nib.orientations.ornt_transform(start, target)
    data = nib.orientations.apply_orientation(volume.data, transform)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, volume.spatial_shape)
    return Volume(np.ascontiguousarray(data), affine, dict(volume.metadata))


def grid_for_spacing(volume: Volume, spacing_mm: float | tuple[float, float, float]) -> tuple[tuple[int, int, int],
                                                                                              np.ndarray]:
    """Shape and affine of a grid with ``spacing_mm`` covering the same field of view.

    The axes keep their directions; the new grid is centred on the old field of view (voxel
    corners of both grids span the same extent up to rounding of the voxel count).
    """
    new_sp = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
    if np.any(new_sp <= 0):
        raise ValueError("spacing_mm must be positive")
    old_sp = np.asarray(volume.spacing_mm)
    extent = np.asarray(volume.spatial_shape) * old_sp
    shape = tuple(int(max(1, round(e / s))) for e, s in zip(extent, new_sp, strict=True))
    direction = volume.affine[:3, :3] / old_sp
    affine = np.eye(4)
    affine[:3, :3] = direction * new_sp
    # keep the field-of-view centre fixed
    affine[:3, 3] = volume.center_mm - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return shape, affine  # type: ignore[return-value]


def resample_to_spacing(volume: Volume, spacing_mm: float | tuple[float, float, float],
                        interpolation: Interpolation = "linear", default_value: float = 0.0) -> Volume:
    """Resample onto a grid of ``spacing_mm`` (same directions and field of view)."""
    shape, affine = grid_for_spacing(volume, spacing_mm)
    return resample_to_reference(volume, (shape, affine), interpolation, default_value=default_value)


def _affine_transform_lps(world_transform: np.ndarray) -> sitk.Transform:
    """SimpleITK transform mapping OUTPUT points to INPUT points for content moved by ``world_transform``.

    ``world_transform`` (RAS mm) moves the content: a feature at x in the input appears at
    ``world_transform @ x`` in the output. SimpleITK pulls values, so it needs the inverse, in LPS.
    """
    inv = _FLIP @ np.linalg.inv(world_transform) @ _FLIP
    t = sitk.AffineTransform(3)
    t.SetMatrix(tuple(float(v) for v in inv[:3, :3].ravel()))
    t.SetTranslation(tuple(float(v) for v in inv[:3, 3]))
    return t


def resample_to_reference(
    volume: Volume,
    reference: Volume | tuple[tuple[int, int, int], np.ndarray],
    interpolation: Interpolation = "linear",
    world_transform: np.ndarray | None = None,
    default_value: float = 0.0,
    dtype: type | np.dtype | None = None,
) -> Volume:
    """Resample ``volume`` onto the grid of ``reference`` (a Volume or ``(shape, affine)``).

    ``world_transform`` (4x4, RAS mm, optional) moves the image content before sampling
    (see :func:`_affine_transform_lps`). Points outside the input take ``default_value``.
    Output dtype: float32 for linear/B-spline, the input dtype for nearest (unless ``dtype``).
    4D volumes are resampled channel by channel.
    """
    if interpolation not in _INTERP:
        raise ValueError(f"interpolation must be one of {sorted(_INTERP)}")
    if isinstance(reference, Volume):
        shape, affine = reference.spatial_shape, reference.affine
    else:
        shape, affine = tuple(int(s) for s in reference[0]), np.asarray(reference[1], dtype=float)
    ref_vol = Volume(np.zeros((1, 1, 1), np.uint8), affine)
    ref_img = to_sitk(ref_vol)
    if volume.data.ndim == 4:
        chans = [resample_to_reference(volume.with_data(volume.data[..., c]), (shape, affine), interpolation,
                                       world_transform, default_value, dtype).data
                 for c in range(volume.data.shape[3])]
        return Volume(np.stack(chans, axis=-1), affine, dict(volume.metadata))
    src = volume.data
    if interpolation == "nearest":
        work_dtype = src.dtype if src.dtype != np.bool_ else np.uint8
    else:
        work_dtype = np.float32
    img = to_sitk(volume, dtype=work_dtype)
    transform = sitk.Transform() if world_transform is None else _affine_transform_lps(np.asarray(world_transform))
    out = sitk.Resample(img, [int(s) for s in shape], transform, _INTERP[interpolation], ref_img.GetOrigin(),
                        ref_img.GetSpacing(), ref_img.GetDirection(), float(default_value), img.GetPixelID())
    data = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    if src.dtype == np.bool_ and interpolation == "nearest":
        data = data.astype(bool)
    if dtype is not None:
        data = data.astype(dtype)
    return Volume(np.ascontiguousarray(data), affine.copy(), dict(volume.metadata))


def crop_to_mask(volume: Volume, mask: Volume | np.ndarray, margin_mm: float = 0.0) -> Volume:
    """Crop ``volume`` to the bounding box of ``mask`` (same grid) grown by ``margin_mm`` per side.

    The affine's translation is updated so each kept voxel keeps its world position. The box is
    clipped to the image. An empty mask is an :class:`InputError`.
    """
    m = mask.data if isinstance(mask, Volume) else np.asarray(mask)
    if isinstance(mask, Volume) and not mask.same_grid(volume):
        raise InputError("mask is not on the image's grid", mask.metadata.get("source"))
    if m.shape[:3] != volume.spatial_shape:
        raise InputError(f"mask shape {m.shape} differs from image grid {volume.spatial_shape}",
                         volume.metadata.get("source"))
    idx = np.argwhere(m.reshape(m.shape[:3]) > 0)
    if idx.size == 0:
        raise InputError("mask is empty: nothing to crop to", volume.metadata.get("source"))
    margin_vox = np.ceil(margin_mm / np.asarray(volume.spacing_mm) - 1e-9).astype(int)
    lo = np.maximum(idx.min(axis=0) - margin_vox, 0)
    hi = np.minimum(idx.max(axis=0) + margin_vox + 1, volume.spatial_shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    affine = volume.affine.copy()
    affine[:3, 3] = volume.voxel_to_world(lo[None])[0]
    return Volume(np.ascontiguousarray(volume.data[sl]), affine, dict(volume.metadata))


def rigid_matrix(rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 translation_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 center_mm: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 RAS rigid transform: rotate about ``center_mm`` by x-y-z Euler angles (degrees, extrinsic
    order x then y then z, as ``scipy.spatial.transform.Rotation.from_euler('xyz')``), then translate."""
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    c = np.asarray(center_mm, dtype=float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(translation_mm, dtype=float)
    return m
