"""NIfTI I/O through nibabel, with clear errors and atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from neurorad.errors import InputError
from neurorad.image.volume import Volume


def load_nifti(path: str | Path, dtype: np.dtype | type | None = None) -> Volume:
    """Read a NIfTI-1/2 file into a :class:`Volume` (affine = nibabel's best affine, RAS+ mm).

    Raises :class:`InputError` naming the file when it is missing, unreadable, not an image,
    not 3D/4D, or holds NaN/inf voxels.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", p)
    if p.is_dir():
        raise InputError("is a folder, expected a NIfTI file (.nii or .nii.gz)", p)
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputError(f"not a readable NIfTI image ({type(exc).__name__}: {exc})", p) from exc
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    if data.ndim == 2:
        raise InputError(f"is a 2D image {data.shape}; a 3D volume is needed", p)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 5 and data.shape[3] == 1 and data.shape[4] == 1:
        data = data[..., 0, 0]
    vol = Volume(data, img.affine, {"source": str(p)})
    return vol.check_finite()


def gzip_bytes(data: bytes, level: int = 1) -> bytes:
    """``data`` as one gzip member (RFC 1952; modification time 0, so equal data give equal files) by ISA-L
    (Intel's igzip through ``isal``): 6-10x faster than zlib at the same level and about the same size (a 1 mm
    float32 map of 6 million voxels: 0.06 s against 0.36 s, 40 % of its size either way), and it releases the GIL.
    Any gzip reader (nibabel, zlib, gunzip) reads it. Falls back to the standard library's zlib without ``isal``."""
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover - isal is a pinned dependency
        import gzip

        return gzip.compress(data, compresslevel=level, mtime=0)
    return igzip.compress(data, level, mtime=0)


def save_nifti(volume: Volume, path: str | Path, dtype: np.dtype | type | None = None) -> Path:
    """Write ``volume`` as NIfTI atomically (temp file then rename): never a half-written file. ``.nii.gz`` is
    compressed by :func:`gzip_bytes` (ISA-L; the same bytes as nibabel's ``.nii`` inside)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = volume.data if dtype is None else volume.data.astype(dtype, copy=False)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    img = nib.Nifti1Image(data, volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    gz = p.name.endswith(".gz")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nii.gz" if gz else ".nii", dir=p.parent)
    os.close(fd)
    try:
        if gz:
            Path(tmp).write_bytes(gzip_bytes(img.to_bytes()))
        else:
            nib.save(img, tmp)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
