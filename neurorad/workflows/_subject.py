"""Single-series subject preparation shared by the small-vessel-disease workflows (WMH, microbleeds).

Steps, in order (each a pure function of its inputs except the reading):

1. :func:`load_series`   read a NIfTI file or DICOM series, reorient to RAS+, float32, refuse empty or
                         non-finite images (the error names the file).
2. :func:`check_slices`  refuse a 2D acquisition with slices >= 5 mm (the same limit as the MS workflow,
                         :data:`neurorad.preprocess.harmonize.MAX_2D_SLICE_THICKNESS_MM`): lesions of a few
                         millimetres are lost to partial volume in such slices. With ``max_spacing_mm``
                         (glioma) a NIfTI with slices up to that far apart is taken as thinner slices with a gap.
3. :func:`subject_anatomy` brain mask (``neurorad.preprocess.brain_extraction``, deepbet by default);
                         Colin27 brain registered affinely to the subject's brain (MI, at 4 mm: the same
                         step as the MS workflow's atlas, :func:`neurorad.pipelines.ms_lesions.atlas_to_subject`);
                         through that transform the MNI152 2009 tissue priors (GM, WM, CSF = brain - GM - WM;
                         Fonov et al. 2011) and the AAL/JHU labels are pulled onto the subject grid.

An empty brain mask (< 100 mL) stops the run with :class:`~neurorad.errors.ProcessingError`: every
later number would be meaningless. Nothing is written here; the runner's atomic folder makes sure a
failed run leaves nothing behind.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurorad import resources
from neurorad.errors import InputError, ProcessingError
from neurorad.image.geometry import reorient
from neurorad.image.io import load_image
from neurorad.image.nifti import load_nifti
from neurorad.image.volume import Volume
from neurorad.preprocess.harmonize import MAX_2D_SLICE_THICKNESS_MM, check_acquisition, slice_thickness_mm
from neurorad.preprocess.transforms import AffineTransform, resample

__all__ = ["SubjectAnatomy", "load_series", "check_slices", "subject_anatomy", "key_image", "MIN_BRAIN_ML"]

#: smallest plausible brain (mL); below it the brain mask is taken as failed ("empty brain")
MIN_BRAIN_ML = 100.0


def load_series(path: str | Path | Volume, what: str) -> Volume:
    """The series as a RAS+ float32 :class:`Volume`; :class:`InputError` for an empty or non-finite image."""
    vol = path if isinstance(path, Volume) else load_image(path)
    src = vol.metadata.get("source", None if isinstance(path, Volume) else path)
    if vol.data.ndim == 4:
        if vol.data.shape[3] != 1:
            raise InputError(f"{what} has {vol.data.shape[3]} volumes (4D); give one 3D series", src)
        vol = vol.with_data(vol.data[..., 0])
    vol = reorient(vol, "RAS")
    vol = vol.with_data(np.asarray(vol.data, np.float32))
    vol.metadata.setdefault("source", str(src) if src is not None else None)
    if not np.all(np.isfinite(vol.data)):
        raise InputError(f"{what} has NaN or infinite voxels", src)
    if min(vol.spatial_shape) < 3:
        raise InputError(f"{what} has only {min(vol.spatial_shape)} slice(s) along an axis; a 3D volume is needed", src)
    if float(np.ptp(vol.data)) == 0.0:
        raise InputError(f"{what} is empty (every voxel has the same value)", src)
    return vol


def check_slices(vol: Volume, what: str, max_2d_thickness_mm: float = MAX_2D_SLICE_THICKNESS_MM,
                 max_spacing_mm: float | None = None, warnings: list[str] | None = None) -> float:
    """Slice thickness in mm; :class:`InputError` for a 2D (or unknown) acquisition with thick slices.

    With ``max_spacing_mm`` the slices' spacing (largest voxel size, gap included) is judged on its own, as the MS
    workflow does (:func:`neurorad.preprocess.harmonize.check_acquisition`): slices ``max_spacing_mm`` or more
    apart are refused, and an image without a slice thickness in its metadata (a NIfTI file keeps only the
    spacing) whose spacing lies between ``max_2d_thickness_mm`` and ``max_spacing_mm`` is taken as thinner slices
    with a gap (5 mm slices 1-1.5 mm apart, a routine clinical 2D series): accepted, with a warning appended to
    ``warnings``. Without ``max_spacing_mm`` such an image is refused (the same series sent as DICOM, whose
    SliceThickness says 5 mm, would pass: the reason for the option)."""
    dcm = vol.metadata.get("dicom") or {}
    acq = str(dcm.get("MRAcquisitionType", "")).upper()
    thickness, source = slice_thickness_mm(vol)
    if acq == "3D":
        return float(thickness)
    if max_spacing_mm is not None:  # the MS workflow's rule, one place for both
        warning = check_acquisition(vol, what, max_2d_thickness_mm, max_spacing_mm, purpose="measurement")
        if warning and warnings is not None:
            warnings.append(warning)
        return float(thickness)
    if thickness >= max_2d_thickness_mm:
        kind = "2D acquisition" if acq == "2D" else "thick-slice acquisition (judged by voxel size)"
        raise InputError(
            f"{what} is a {kind} with {thickness:.1f} mm slices ({source}); lesions of a few millimetres are "
            f"lost to partial volume in slices of {max_2d_thickness_mm:g} mm or more. Please send a thinner "
            "(ideally 3D) series.", vol.metadata.get("source"))
    return float(thickness)


@dataclass
class SubjectAnatomy:
    """Brain mask, tissue priors and atlas labels on the subject's grid."""

    brain: np.ndarray  # bool
    gm_prior: np.ndarray  # float32 in [0, 1]
    wm_prior: np.ndarray
    csf_prior: np.ndarray
    atlas: dict[str, tuple[np.ndarray, dict[int, str]]]  # name -> (labels on the grid, names)
    transform: AffineTransform  # subject world -> MNI (Colin27) world
    nmi: float
    brain_engine: str
    seconds: dict[str, float] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def _mni_priors() -> dict[str, Volume]:
    """MNI152 2009 GM/WM probability maps in [0, 1] and CSF = brain - GM - WM (nilearn files)."""
    gm = load_nifti(resources.mni152("gm"))
    wm = load_nifti(resources.mni152("wm"))
    t1 = load_nifti(resources.mni152("t1"))
    g = np.asarray(gm.data, np.float32) / 255.0
    w = np.asarray(wm.data, np.float32) / 255.0
    brain = np.asarray(t1.data) > 0
    c = np.clip(brain.astype(np.float32) - g - w, 0.0, 1.0)
    return {"gm": gm.with_data(g), "wm": wm.with_data(w), "csf": gm.with_data(c)}


def _mni_at(spacing_mm: float) -> Volume:
    """The MNI152 2009 T1 brain (the template of the priors) at ``spacing_mm``, anti-aliased."""
    from neurorad.pipelines.ms_lesions import _downsample

    t1 = load_nifti(resources.mni152("t1"))
    return _downsample(t1.with_data(np.asarray(t1.data, np.float32)), spacing_mm)


_mni_cached = functools.lru_cache(maxsize=2)(_mni_at)


def register_mni(vol: Volume, brain: np.ndarray, backend: str = "sitk", spacing_mm: float = 4.0
                 ) -> tuple[AffineTransform, float]:
    """Affine registration (mutual information) of the MNI152 T1 brain onto the subject's brain at
    ``spacing_mm``, started from the brains' centres of mass: (subject world -> MNI world, NMI after)."""
    from neurorad.pipelines.ms_lesions import _downsample
    from neurorad.preprocess.registration import RegistrationLimits, register

    mni = _mni_cached(float(spacing_mm))
    fixed = vol.with_data(np.where(brain, vol.data, 0).astype(np.float32))
    com_f = fixed.voxel_to_world(np.argwhere(brain).mean(0))[0]
    fixed = _downsample(fixed, spacing_mm)
    com_m = mni.voxel_to_world(np.argwhere(mni.data > 0).mean(0))[0]
    init = np.eye(4)
    init[:3, 3] = com_m - com_f
    res = register(fixed, mni, transform_type="affine", backend=backend, initial=AffineTransform(init),
                   limits=RegistrationLimits(max_translation_mm=150.0, min_nmi=1.0))
    return res.transform, float(res.nmi_after)


@functools.lru_cache(maxsize=4)
def _atlas(name: str) -> tuple[Volume, dict[int, str]]:
    from neurorad.quantify.atlas import load_atlas

    jhu = "JHU-WhiteMatter-labels-1mm.nii"
    img, txt, mirror = {"aal": ("aal.nii.gz", "aal.nii.txt", False), "jhu": (f"{jhu}.gz", f"{jhu}.txt", True)}[name]
    a = load_atlas(name, resources.mricron(img), resources.mricron(txt), mirror_lr=mirror)
    return a.volume, a.names


def subject_anatomy(vol: Volume, brain_engine: str = "deepbet", backend: str = "sitk",
                    atlas_spacing_mm: float = 4.0, brain_mask: np.ndarray | None = None) -> SubjectAnatomy:
    """Brain mask, MNI152 tissue priors and AAL/JHU labels on ``vol``'s grid (see module docstring).

    ``brain_mask`` skips brain extraction (a mask the caller already has, e.g. from the phantom truth in
    tests). Raises :class:`ProcessingError` for an empty brain mask.
    """
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if brain_mask is None:
        from neurorad.preprocess.brain_extraction import extract_brain

        brain = np.asarray(extract_brain(vol, engine=brain_engine).data, bool)
        engine = brain_engine
    else:
        brain = np.asarray(brain_mask, bool)
        if brain.shape != vol.spatial_shape:
            raise InputError(f"brain mask shape {brain.shape} differs from the image {vol.spatial_shape}")
        engine = "given"
    seconds["brain"] = round(time.perf_counter() - t0, 3)
    brain_ml = float(brain.sum()) * vol.voxel_volume_mm3 / 1000.0
    if brain_ml < MIN_BRAIN_ML:
        raise ProcessingError(
            f"empty brain: the brain mask holds {brain_ml:.1f} mL (< {MIN_BRAIN_ML:g} mL); the image shows no brain "
            "or brain extraction failed, so no measurement can be trusted")
    t0 = time.perf_counter()
    transform, nmi = register_mni(vol, brain, backend, atlas_spacing_mm)
    seconds["atlas_registration"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    pri = _mni_priors()
    out = {k: np.clip(np.asarray(resample(v, vol, transform, "linear").data, np.float32), 0.0, 1.0) * brain
           for k, v in pri.items()}
    labels = {}
    for name in ("aal", "jhu"):
        avol, names = _atlas(name)
        labels[name] = (np.asarray(resample(avol, vol, transform, "nearest").data), names)
    seconds["priors"] = round(time.perf_counter() - t0, 3)
    return SubjectAnatomy(brain, out["gm"], out["wm"], out["csf"], labels, transform, nmi, engine, seconds)


def key_image(vol: Volume, labels: np.ndarray, centre_mm: tuple[float, float, float], path: Path,
              colour: tuple[int, int, int]) -> None:
    """A key image through ``centre_mm`` (the project's one renderer, radiological convention with
    R/L/A/P letters: :func:`neurorad.report.key_images.render_key_image`); the lesions in ``colour``."""
    from neurorad.report.key_images import KeyImagePanel, render_key_image, save_png

    lab = vol.with_data((np.asarray(labels) > 0).astype(np.uint8))
    save_png(render_key_image([KeyImagePanel(vol, overlay=True)], lab, centre_mm=centre_mm, colours={1: colour}),
             path)
