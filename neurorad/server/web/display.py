"""Compact display copies of result images for the viewer (what the browser downloads and decodes).

Workflows store normalised images as float32 and label maps as int16 (exact,
for analysis). For display that is twice the bytes the browser has to fetch, gunzip, parse and
turn into textures. The viewer therefore gets, per file version, a copy with

* intensity images as int16 with the NIfTI scaling (``scl_slope``/``scl_inter``, NIfTI-1
  header fields 'scl_slope'/'scl_inter'; nibabel picks them so the data range uses the int16
  range: a quantisation step of range/65535, far below a displayable grey level), so values and
  window levels stay in the original units;
* label maps as uint8 when every label is an integer in 0..255 (exact);

gzip level 1 (nibabel's default: fast to write, decompressed natively by the browser's
``DecompressionStream``). Files that are already compact are served as they are. Copies live
under ``DATA_DIR/cache/viewer`` keyed by the source's path, size and modification time (a
changed file gets a new copy); the folder can be deleted at any time. The stored results are
never modified.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from neurorad.image.nifti import gzip_bytes

_COMPACT_IMAGE = (np.int16, np.uint8, np.int8)


def compact_image(img: nib.Nifti1Image, is_label: bool) -> nib.Nifti1Image | None:
    """The display version of ``img``, or None when the stored one is already compact (or a label
    map cannot be uint8 without loss)."""
    dtype = np.dtype(img.get_data_dtype())
    if is_label:
        if dtype == np.uint8:
            return None
        data = np.asanyarray(img.dataobj)
        if data.size and (not np.all(np.isfinite(data)) or data.min() < 0 or data.max() > 255
                          or not np.array_equal(data, np.rint(data))):
            return None
        out = nib.Nifti1Image(data.astype(np.uint8), img.affine, header=img.header.copy())
        out.set_data_dtype(np.uint8)
        out.header.set_slope_inter(1.0, 0.0)
        return out
    if any(dtype == np.dtype(t) for t in _COMPACT_IMAGE) or dtype.kind not in "fiu":
        return None
    data = np.asarray(img.dataobj, dtype=np.float32)
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    out = nib.Nifti1Image(data, img.affine, header=img.header.copy())
    out.set_data_dtype(np.int16)  # nibabel's array writer chooses scl_slope/scl_inter on save
    return out


#: Largest side (voxels) of the preview the viewer shows first (then the full image replaces it).
PREVIEW_MAX_VOXELS = 128


def preview_factor(shape: tuple[int, ...], max_voxels: int = PREVIEW_MAX_VOXELS) -> int:
    """Integer downsampling factor that brings every side to at most ``max_voxels`` (1: none needed)."""
    return max(1, -(-max(shape[:3]) // max_voxels))


def downsample(img: nib.Nifti1Image, factor: int, is_label: bool) -> nib.Nifti1Image:
    """``img`` reduced by ``factor`` per axis: block mean for images, block maximum for label maps (so
    a finding smaller than a block still shows in the preview). The affine keeps world positions:
    the new voxel centre is the mean of the old centres of its block."""
    data = np.asanyarray(img.dataobj)
    data = data.reshape(data.shape[:3]) if data.ndim > 3 else data
    if factor <= 1:
        return img
    pad = [(0, (-n) % factor) for n in data.shape]
    arr = np.pad(np.asarray(data, dtype=np.float32 if not is_label else data.dtype), pad, mode="edge")
    nx, ny, nz = (n // factor for n in arr.shape)
    blocks = arr.reshape(nx, factor, ny, factor, nz, factor)
    out = blocks.max(axis=(1, 3, 5)) if is_label else blocks.mean(axis=(1, 3, 5), dtype=np.float32)
    step = np.diag([factor, factor, factor, 1.0])
    step[:3, 3] = (factor - 1) / 2.0
    res = nib.Nifti1Image(out, img.affine @ step)
    res.set_data_dtype(np.uint8 if is_label and out.max(initial=0) <= 255 else out.dtype)
    return res


def crop_to_content(img: nib.Nifti1Image, margin: int = 2, min_saving: float = 0.5) -> nib.Nifti1Image | None:
    """``img`` cropped to the bounding box of its non-zero voxels (plus ``margin``), the affine shifted
    so every voxel keeps its world position; None when that would save less than ``min_saving`` of
    the voxels. A skull-stripped 256^3 head keeps about a fifth of its voxels: the browser decodes
    and uploads that much less (the viewer aligns panels and overlays in world millimetres)."""
    data = np.asanyarray(img.dataobj)
    data = data.reshape(data.shape[:3]) if data.ndim > 3 else data
    nz = np.nonzero(np.any(data != 0, axis=(1, 2))), np.nonzero(np.any(data != 0, axis=(0, 2))), \
        np.nonzero(np.any(data != 0, axis=(0, 1)))
    if any(a[0].size == 0 for a in nz):
        return None
    lo = [max(0, int(a[0][0]) - margin) for a in nz]
    hi = [min(n, int(a[0][-1]) + 1 + margin) for a, n in zip(nz, data.shape, strict=True)]
    kept = float(np.prod([h - lo_ for lo_, h in zip(lo, hi, strict=True)])) / float(np.prod(data.shape))
    if kept > 1.0 - min_saving:
        return None
    shift = np.eye(4)
    shift[:3, 3] = lo
    out = nib.Nifti1Image(np.ascontiguousarray(data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]), img.affine @ shift,
                          header=img.header.copy())
    out.set_qform(img.affine @ shift, code=1)
    out.set_sform(img.affine @ shift, code=1)
    return out


def display_copy(src: Path, cache_dir: Path, is_label: bool, preview: bool = False) -> Path:
    """Path of the file to send for ``src``: a cached compact copy, or ``src`` itself. With ``preview``
    a downsampled copy (:func:`downsample`, at most :data:`PREVIEW_MAX_VOXELS` a side) that the viewer
    shows first, so the page is usable before the full images are decoded."""
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{is_label}|{preview}|v2"
                         .encode()).hexdigest()[:40]
    dest = cache_dir / f"{key}.nii.gz"
    if dest.exists():
        return dest
    img = nib.load(src)
    cropped = None if is_label else crop_to_content(img)
    if cropped is not None:
        img = cropped
    factor = preview_factor(img.shape) if preview else 1
    if factor > 1:
        img = downsample(img, factor, is_label)
    out = compact_image(img, is_label)
    if out is None and (factor > 1 or cropped is not None):
        out = img
    if out is None:
        return src
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp.nii.gz"
    try:
        tmp.write_bytes(gzip_bytes(out.to_bytes()))  # ISA-L gzip, as every NIfTI the platform writes
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
