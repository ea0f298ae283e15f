"""Volume <-> SimpleITK image, keeping geometry exact.

SimpleITK works in LPS+ world coordinates with arrays indexed ``[k, j, i]``; a
:class:`Volume` is RAS+ with ``data[i, j, k]``. These two functions are the one place that
converts between them (flip of x and y, transpose of the array).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from neurorad.image.volume import Volume

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_sitk(volume: Volume, dtype: type | np.dtype | None = None) -> sitk.Image:
    """A SimpleITK image with the same voxels and world geometry (3D volumes only)."""
    if volume.data.ndim != 3:
        raise ValueError(f"to_sitk needs a 3D volume, got shape {volume.shape}")
    data = volume.data if dtype is None else volume.data.astype(dtype, copy=False)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    lps = _RAS_TO_LPS @ volume.affine
    spacing = np.asarray(volume.spacing_mm)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in lps[:3, 3]))
    img.SetDirection(tuple(float(d) for d in (lps[:3, :3] / spacing).ravel()))
    return img


def affine_from_sitk(image: sitk.Image) -> np.ndarray:
    """The RAS+ voxel-to-world affine of a SimpleITK image."""
    spacing = np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = image.GetOrigin()
    return _RAS_TO_LPS @ lps


def from_sitk(image: sitk.Image, metadata: dict | None = None) -> Volume:
    """A Volume from a 3D SimpleITK image (array transposed back to ``[i, j, k]``)."""
    if image.GetDimension() != 3:
        raise ValueError(f"from_sitk needs a 3D image, got {image.GetDimension()}D")
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return Volume(data, affine_from_sitk(image), dict(metadata or {}))
