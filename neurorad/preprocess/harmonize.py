"""Harmonisation of a longitudinal pair (baseline, follow-up) before comparison.

Rules (from the MS lesion-change CAD literature, e.g. Jain et al. 2016 / MSmetrix-long):

* refuse 2D acquisitions with slices of 5 mm or more: new-lesion detection on such scans is
  unreliable (partial volume), and interpolating them creates artefacts;
* resample the **finer** scan onto the **coarser** grid (never upsample the coarse one), so
  that interpolation never invents detail; the coarser scan stays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neurorad.errors import InputError
from neurorad.image.volume import Volume
from neurorad.preprocess.transforms import AffineTransform, resample

MAX_2D_SLICE_THICKNESS_MM = 5.0


def slice_thickness_mm(volume: Volume) -> tuple[float, str]:
    """Slice thickness and where it came from (DICOM SliceThickness, else largest voxel size)."""
    dcm: dict[str, Any] = volume.metadata.get("dicom") or {}
    st = dcm.get("SliceThickness")
    if st not in (None, ""):
        try:
            return float(st), "DICOM SliceThickness"
        except (TypeError, ValueError):
            pass
    return max(volume.spacing_mm), "voxel spacing"


def check_acquisition(
    volume: Volume, name: str = "image", max_2d_thickness_mm: float = MAX_2D_SLICE_THICKNESS_MM,
    max_spacing_mm: float | None = None, purpose: str = "longitudinal comparison",
) -> str | None:
    """Raise :class:`InputError` for a 2D acquisition with slices >= ``max_2d_thickness_mm``.

    Uses DICOM ``MRAcquisitionType`` ('2D'/'3D') and ``SliceThickness`` when the metadata holds
    them; otherwise treats any image with a voxel size >= the limit as a thick 2D acquisition.

    With ``max_spacing_mm`` the slices' spacing (the largest voxel size, which includes any gap between
    slices) is judged on its own: a 2D series whose slices lie ``max_spacing_mm`` or more apart is refused, and
    an image without a slice thickness in its metadata (NIfTI) is refused only then. Such an image with a
    spacing at or over ``max_2d_thickness_mm`` may be thinner slices with a gap (5 mm slices 1-1.5 mm apart
    are a common clinical 2D FLAIR, and a NIfTI file keeps only the spacing): it is accepted, and the warning
    that a lesion smaller than the spacing can lie between slices is returned. Returns None otherwise.
    """
    dcm: dict[str, Any] = volume.metadata.get("dicom") or {}
    acq = str(dcm.get("MRAcquisitionType", "")).upper() or None
    thickness, source = slice_thickness_mm(volume)
    if acq == "3D":
        return None
    spacing = float(max(volume.spacing_mm))
    if max_spacing_mm is not None and spacing >= max_spacing_mm:
        raise InputError(
            f"{name} has slices {spacing:.1f} mm apart (voxel spacing); {purpose} needs slices less "
            f"than {max_spacing_mm:g} mm apart (ideally a 3D acquisition). Please provide a thinner or 3D series.",
            volume.metadata.get("source"))
    if max_spacing_mm is not None and source == "voxel spacing":
        if thickness < max_2d_thickness_mm:
            return None
        return (f"{name}: slices {spacing:.1f} mm apart and no slice thickness in the input (judged by voxel size): "
                f"compared as slices under {max_2d_thickness_mm:g} mm with a gap between them; a lesion smaller "
                "than the spacing can lie between two slices and be missed")
    if thickness >= max_2d_thickness_mm:
        kind = ("2D acquisition" if acq == "2D"
                else "thick-slice acquisition (no MRAcquisitionType; judged by voxel size)")
        raise InputError(
            f"{name} is a {kind} with {thickness:.1f} mm slices ({source}); {purpose} needs "
            f"slices thinner than {max_2d_thickness_mm:g} mm (ideally a 3D acquisition). Please provide a thinner "
            "or 3D series.", volume.metadata.get("source"))
    return None


@dataclass
class HarmonizedPair:
    """Both scans on one grid; ``reference`` names the one whose grid was kept."""

    baseline: Volume
    followup: Volume
    reference: str  # "baseline" | "followup"


def harmonize_pair(baseline: Volume, followup: Volume,
                   followup_to_baseline: AffineTransform | None = None) -> HarmonizedPair:
    """Put a longitudinal pair on the coarser of the two grids.

    ``followup_to_baseline`` is a registration result with the baseline as *fixed*: it maps
    baseline-world points to follow-up-world points (identity when both are already aligned in
    world space). The grid with the larger voxel volume is kept; the other scan is resampled onto
    it (linear; boolean/integer images nearest neighbour). Ties keep the baseline grid.
    """
    check_acquisition(baseline, "baseline")
    check_acquisition(followup, "follow-up")
    t = followup_to_baseline or AffineTransform.identity()
    if followup.voxel_volume_mm3 > baseline.voxel_volume_mm3 * (1 + 1e-6):
        # follow-up is coarser: pull the baseline onto it (follow-up world -> baseline world = inverse)
        return HarmonizedPair(resample(baseline, followup, t.inverse()), followup, "followup")
    if baseline.same_grid(followup) and t.kind == "identity":
        return HarmonizedPair(baseline, followup, "baseline")
    return HarmonizedPair(baseline, resample(followup, baseline, t), "baseline")
