"""Image layer: the :class:`Volume` type and its I/O, orientation and resampling."""

from neurorad.image.dicom_series import list_dicom_series, read_dicom_series, write_dicom_series
from neurorad.image.geometry import (
    crop_to_mask,
    reorient,
    resample_to_reference,
    resample_to_spacing,
    rigid_matrix,
)
from neurorad.image.io import load_image
from neurorad.image.nifti import load_nifti, save_nifti
from neurorad.image.volume import Volume

__all__ = [
    "Volume",
    "crop_to_mask",
    "list_dicom_series",
    "load_image",
    "load_nifti",
    "read_dicom_series",
    "reorient",
    "resample_to_reference",
    "resample_to_spacing",
    "rigid_matrix",
    "save_nifti",
    "write_dicom_series",
]
