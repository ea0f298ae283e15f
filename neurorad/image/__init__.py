"""Image layer: the :class:`Volume` type and its I/O, orientation and resampling."""

from neurorad.image.nifti import load_nifti, save_nifti
from neurorad.image.volume import Volume

__all__ = ["Volume", "load_nifti", "save_nifti"]
