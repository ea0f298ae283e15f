"""One entry point for reading an image from disk, whatever its format."""

from __future__ import annotations

from pathlib import Path

from neurorad.errors import InputError
from neurorad.image.dicom_series import read_dicom_series
from neurorad.image.nifti import load_nifti
from neurorad.image.volume import Volume


def load_image(path: str | Path, series_uid: str | None = None) -> Volume:
    """A NIfTI file (``.nii``/``.nii.gz``) or a DICOM series (folder or file) as a :class:`Volume`."""
    p = Path(path)
    if not p.exists():
        raise InputError("file or folder not found", p)
    if p.is_file() and (p.name.endswith(".nii") or p.name.endswith(".nii.gz")):
        return load_nifti(p)
    return read_dicom_series(p, series_uid=series_uid)
