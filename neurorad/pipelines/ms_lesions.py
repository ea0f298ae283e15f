"""Longitudinal MS new-lesion detection with gadolinium decision and draft report.

One workflow, readable as the methods section it implements (all parameters in :class:`MSConfig`).
Each step is a function ``step_<name>(ctx: MSContext) -> None`` listed in :data:`STEPS`, which
drives the run: a step reads what earlier steps left in the typed context and fills its own
fields, so every step can be run and tested alone.

1. ``load``        read both FLAIR (NIfTI or DICOM series), reorient to RAS, refuse different
                   patients and 2D FLAIR with slices >= 5 mm, resample the finer to the coarser grid.
2. ``brain``       brain extraction of both time points (deepbet by default).
3. ``register``    rigid registration of the follow-up onto the baseline (elastix, mutual
                   information; failure detected by similarity/plausibility), crop to the brain.
4. ``bias``        N4 bias-field correction of both time points (Tustison et al. 2010; in parallel).
5. ``normalise``   joint intensity normalisation: joint-histogram linear fit, then Nyul landmarks.
6. ``candidates``  difference map -> robust z -> score in [0, 1] (brain, tissue, hyperintensity gates);
                   with the default fusion engine (workflow 1.22.0) also the two-time-point network's
                   probability, whose own lesions are united with these at the end of step 9.
7. ``postprocess`` binarise at 0.01, 26-connected components, keep > 20 mm^3 with a voxel > 0.0787
                   (regional candidate-lesion workflow, whose 12 mm^3 bound 1.16.0 raised and whose 0.1 peak
                   1.34.0 lowered to the operating point the FROC rule picks on the tuning pairs).
8. ``fp_reduction`` FLAIR-subtraction CAD rule (centre of gravity brighter at baseline -> false
                   positive), misregistration at tissue/CSF edges, brain border.
9. ``classify``    new vs enlarging (touches a baseline lesion); fusion: the learned engine's lesions added.
10. ``atlas``      Colin27 (ch2bet) registered affinely to the baseline (stored per image content and
                   reused by the patient's later comparisons); AAL and JHU labels pulled with
                   nearest neighbour; lesion table.
11. ``decide``     active (>= 1 new or enlarging lesion) -> gadolinium recommended, else not.
12. ``outputs``    NIfTI maps, lesions.csv, result.json, HTML/PDF draft report, DICOM SEG,
                   Encapsulated PDF and secondary captures referencing the follow-up series.

Everything is written into a temporary folder beside ``out_dir`` and renamed at the end: a
failed run leaves no partial result.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from neurorad import __version__, resources
from neurorad.atomic import atomic_dir
from neurorad.clinical.ms import MSDecision, counts_for_activity, ms_decision, split_by_confidence
from neurorad.errors import InputError, NeuroradError, ProcessingError
from neurorad.image.geometry import crop_to_mask, reorient, resample_to_spacing
from neurorad.image.nifti import load_nifti, save_nifti
from neurorad.image.volume import Volume
from neurorad.pipelines import _engines
from neurorad.preprocess.bias import n4_shrink_factors
from neurorad.preprocess.brain_extraction import signal_support
from neurorad.preprocess.harmonize import check_acquisition
from neurorad.preprocess.normalize import NEGATIVE_FRACTION_LIMIT, restore_magnitude_origin
from neurorad.preprocess.registration import RegistrationLimits, register
from neurorad.preprocess.transforms import AffineTransform, resample
from neurorad.provenance import Provenance, sha256_file, sha256_files
from neurorad.quantify.atlas import component_regions, load_atlas
from neurorad.quantify.lesions import LesionRow, equivalent_diameter_mm, lesion_table, write_lesion_csv
from neurorad.segment.ms_difference import (
    KEPT_AS_GROWN,
    REASON_DIFFUSE,
    TUMEFACTIVE_SIZE,
    CandidateParams,
    Candidates,
    ClassifyParams,
    FPParams,
    PostParams,
    add_separate_lesions,
    baseline_lesion_mask,
    binarise_components,
    candidate_score,
    classify_new_enlarging,
    delineate_on_finer_grid,
    delineation_rule_text,
    drop_unchanged_enlarging,
    dropped_beside_baseline,
    enlarging_peak_labels,
    false_positive_reduction,
    finer_followup,
    gaussian_filters,
    grow_enlarging,
    half_maximum_cores,
    judge_and_add_parts,
    judge_enlarging_parts,
    new_beside_unchanged,
    partial_volume_levels,
    rescue_grown_enlarging,
    thick_followup,
    volume_measurable,
    volume_rule_text,
)
from neurorad.segment.ms_learned import LESION_ENGINES, LearnedParams

log = logging.getLogger(__name__)

#: a time point's brain mask losing at least this much to voxels without signal (workflow 1.22.1, step 2) is named
#: in a warning: the series was brain-extracted before it was sent, more tightly than the mask found on it
NO_SIGNAL_WARNING_ML = 1.0



@dataclass(frozen=True)
class MSConfig:
    """Every parameter of the workflow, in one place (also written to result.json and the report)."""

    # refuse 2D FLAIR with slices this thick or thicker (5 mm slices are compared, with lower
    # sensitivity for lesions smaller than the slice: see docs/ms-lesions-log.md)
    max_slice_thickness_mm: float = 5.5
    # refuse 2D FLAIR whose slices lie this far apart or further (centre to centre, gap included). A NIfTI input
    # carries only that spacing, not the thickness: 5 mm slices with a 1-1.5 mm gap (a common clinical 2D FLAIR,
    # 6-6.5 mm apart) are compared with a warning instead of being refused as 6 mm slices (docs/ms-lesions-log.md)
    max_slice_spacing_mm: float = 7.0
    # an input axis whose voxels are finer than this (a 2D FLAIR reconstructed on a 512 matrix: 0.43-0.49 mm pixels,
    # or a 3D series interpolated to 0.5 mm) is averaged to about fine_grid_target_mm there (a whole number of its
    # voxels, box anti-aliasing then linear resampling over the same field of view; the slices stay where they are).
    # Every engine was developed and chosen on 0.9-1.6 mm grids; a 0.485 mm follow-up made the common grid 4x larger:
    # the independent simulator's 40 pairs on twice the in-plane pixels took 43.7 s median per pair (up to 103 s)
    # instead of 14.4 s, for about the same detections (workflow 1.23.0, docs/ms-lesions-log.md "Workflow 1.23.0").
    # The outputs stay on the follow-up's own grid. None: never
    fine_grid_below_mm: float | None = 0.8
    fine_grid_target_mm: float = 1.0
    brain_engine: str = "deepbet"  # deepbet | hdbet
    registration_backend: str = "elastix"  # elastix | sitk | ants
    # elastix only: iterations per pyramid level of the follow-up's rigid registration (adaptive stochastic gradient
    # descent runs them all). 250 was tried (docs/ms-lesions-log.md, "Speed"): the same error against the phantoms'
    # true motion (RMS over the brain 0.14-0.62 mm on 12 widened tuning pairs; more samples, more iterations, 64
    # histogram bins or B-spline interpolation did not lower it either) and widened/original detections as good,
    # but only 0.46 s faster per pair and one independent-simulator lesion lost to a candidate merge: kept at 400
    elastix_iterations: int = 400
    min_registration_correlation: float = 0.8  # Pearson r of the smoothed, normalised pair inside the brain
    # normalised MI floor of the rigid registration (preprocess.registration's check). 1.0 = no absolute floor
    # (workflow 1.5.1; 1.01 before): inside skull-stripped FLAIR brains the NMI hardly depends on the pose. A
    # correctly registered 3 mm pair (original-style tuning pair 115, median error 0.68 mm) scored 1.009 and was
    # refused, while pairs moved 3-12 mm or rotated 5-20 degrees off their registration score up to 1.026 (29
    # tuning pairs, bench/ms_registration_check.py). The smoothed correlation above, measured after bias
    # correction and normalisation, separates them: 0.95-0.99 registered, 0.71-0.82 at 3 mm or 5 degrees off,
    # <= 0.64 from 6 mm or 10 degrees. The check that the registration did not make the NMI worse stays
    min_registration_nmi: float = 1.0
    min_brain_volume_ml: float = 300.0
    crop_margin_mm: float = 8.0
    n4_shrink: int = 4
    # when set, N4 fits on an image shrunk per axis towards this spacing (mm) and ``n4_shrink`` is not used
    # (preprocess.bias.shrink_factors_for_spacing): the same physical sampling on 1, 3 and 5 mm grids. Off: 6 mm
    # (2.4-3.3x less N4 CPU on a 1 mm grid, the known field as well removed, bench/ms_n4_levels.py --shrink) gave 3
    # stable held-out widened pairs a false positive at peak 0.10-0.13 (specificity 13/15 -> 10/15); 5 mm (-5 s of
    # 39 s per pair on a slow machine) swapped lesions on 48 tuning pairs (84 -> 83/93, patient sensitivity 31 ->
    # 30/32). docs/ms-lesions-log.md, "N4's sampling"
    n4_shrink_mm: float | None = None
    # on a grid fine on every axis (every spacing < this / n4_shrink: 1-1.4 mm voxels) N4 fits on samples of about
    # this size instead of n4_shrink voxels (preprocess.bias.n4_shrink_factors; ignored when n4_shrink_mm is set):
    # 6 x 6 x 6 on a 1 mm grid, 0.3x the samples, -3.25 s per 1 mm pair (median of 3, alternated; bench/ms_speed.py
    # --compare-config n4_shrink_mm=6.0). Grids with a 3-5 mm axis keep n4_shrink (their samples are already 12-20 mm
    # slabs, and 6 mm in-plane there moved lesions on the tuning pairs: 2 lost, 1 gained on 5 mm pairs, for no time
    # gain). Workflow 1.21.0, chosen on the 96 widened tuning pairs (docs/ms-lesions-log.md "Workflow 1.21.0").
    # None: n4_shrink voxels on every grid (1.20.0)
    n4_fine_grid_sample_mm: float | None = 6.0
    # N4 fitting levels (max iterations each): 3 short levels instead of preprocess' (50,50,50,50):
    # inside the brain mask the 4th level and long runs over-fit (WM CoV 0.0329 with 4 levels,
    # 0.0223 with (50,50,30), 0.0193 with (25,25,15) at half its CPU; bench/ms_n4_levels.py)
    n4_iterations: tuple[int, ...] = (25, 25, 15)
    # how N4 treats the intensity scale (preprocess.bias.n4_bias_correct's ``nonpositive``): "relative" (workflow
    # 1.20.0) shifts each image by n4_shift_medians of its brain medians before the log, which damps the fitted
    # field to about a third. Until 1.19.0 "shift" added one intensity unit (1 - min): two brain medians on the
    # phantoms' 0-1 images, on which every operating point was chosen, but 0.02-0.07 of one on a 0-4095 series, whose
    # field was removed in full; the same scan gave other lesions in other units. Removing the whole field (N4 as
    # preprocess' "floor") turns faint stable lesions (1.26-1.3 x WM) into new ones at peak 1.0 on widened tuning
    # pairs: the fit takes part of their contrast differently at each time point (docs/ms-lesions-log.md
    # "Workflow 1.20.0")
    n4_nonpositive: str = "relative"
    # 2.0: swept on 96 widened tuning pairs (session 39): 2 medians 178/205 lesions at 0.073 FP per patient, 4
    # medians 173 at 0.031 (enlarging and thick-slice lesions lost), 1 median 177 at 0.146; on the first 48, 0.5
    # medians one lesion more (a single truth voxel) for four false positives and patient specificity 0.875
    # (docs/ms-lesions-log.md "The N4 shift swept on the tuning pairs")
    n4_shift_medians: float = 2.0
    # independent work two at a time in threads: the time points' brain extraction (reentrant engines such as
    # deepbet; others wait for each other), N4 and B-spline resamplings, the NIfTI outputs
    concurrent_timepoints: bool = True
    registration_margin_mm: float = 10.0  # registration runs on the brain's bounding box + this margin
    # thick slices (issue 17: whole-region false positives of 1-17 mL on 3/5 mm pairs): "native"
    # samples the finer image on the coarser image's own (moved) slices before both go to the
    # halfway space with the same weights; "halfway" resamples each directly (before). Cubic
    # B-spline instead of linear interpolation: linear interpolation between thick slices blurs
    # by up to a quarter slice^2 along them, differently at the two time points (their offsets
    # differ with the motion); chosen on tuning pairs (docs/ms-lesions-log.md)
    resampling: str = "native"  # native | native_thick | halfway
    resample_interpolation: str = "bspline"  # bspline | linear
    # slices of two orientations (crossed_slices): native resampling samples the finer image on the coarser one's
    # slices, and the cubic B-spline between the finer image's own thick slices (along its slice axis, which the
    # common grid samples finely) over- and undershoots at every edge across them, while the coarser image, smoothed
    # there but sampled finely, does not. With the round trip the coarser image is also sampled on the finer one's
    # moved slices and back onto its own grid (:func:`through_grid`), so both carry the same interpolation along
    # both slice axes. On for workflow 1.27.0 (session 48; docs/ms-lesions-log.md, "Workflow 1.27.0"): on the
    # analytic axial/coronal 6 mm pair the 99th-percentile mismatch 0.171 -> 0.071; on 96 crossed widened tuning pairs
    # (bench/ms_sweep.py --phantom widened-crossed --cases 0-95 --prep-set crossed_round_trip=True) 167 -> 168 of
    # 199 lesions, 36 -> 22 false positives, stable pairs with a detection 11 -> 7 of 32; held out (40 crossed pairs)
    # the same 55 of 71 lesions, 31 -> 28 false positives, patient specificity 0.667 -> 0.800; the independent
    # simulator's 8 crossed pairs the same detections. Pairs of one orientation are untouched
    crossed_round_trip: bool = True
    # the analysis mask keeps only voxels both images really imaged: a field of view that ends inside the other
    # image's brain (motion moves a thick slab out of it) leaves zeros there, and the cubic B-spline rings next to
    # that step (+30 % on the slice beside it: slab-shaped false positives of 0.2-0.8 mL on the first slice of
    # 5 mm pairs). A voxel is kept where a volume of ones, taken along the same resampling path, comes back
    # within ``fov_coverage_tolerance`` of 1 (:func:`coverage_mask`). On for workflow 1.13.0: on 192 widened tuning
    # pairs the same 347 of 395 lesions, 37 -> 33 false positives (5 slab ones gone, 1 moved); bench/ms_sweep.py
    # --prep-set fov_coverage=True; docs/ms-lesions-log.md "Workflow 1.13.0"
    fov_coverage: bool = True
    fov_coverage_tolerance: float = 0.02
    normalisation: str = "nyul"  # nyul | histogram
    candidate: CandidateParams = field(default_factory=CandidateParams)
    fp: FPParams = field(default_factory=FPParams)
    post: PostParams = field(default_factory=PostParams)
    classify: ClassifyParams = field(default_factory=ClassifyParams)
    # candidate engine (issue 17): "classical" difference-image score, "learned" two-time-point network, "fusion"
    # (each engine detects on its own, a lesion either finds is reported; strong disagreement -> quality warning;
    # neurorad.segment.ms_learned). Default "fusion" since workflow 1.22.0, the benchmark's choice: as many or more
    # lesions than the classical engine on every benchmark set (widened held-out, the independent simulator in two
    # brains) at the same patient-level calls, within the 20 s target since N4's 6 mm sampling (1.21.0) and the
    # network's bfloat16 (docs/ms-lesions-log.md "Workflow 1.22.0"); "classical" before
    lesion_engine: str = "fusion"
    learned: LearnedParams = field(default_factory=LearnedParams)
    # a lesion counts for activity and the gadolinium decision without the reader when its peak score reaches this
    # (since workflow 1.18.0); lesions under it (but over PostParams.min_peak_score) are reported as low-confidence,
    # and when only such lesions are found the reader decides activity and gadolinium (READER TO DECIDE); an
    # accepted review that keeps them makes them count (clinical.ms.split_by_confidence). 0.23: the geometric
    # middle of the 192 widened tuning pairs' plateau of best patient sensitivity and specificity (0.1-0.54);
    # docs/ms-lesions-log.md "Workflow 1.18.0". None: every reported lesion counts (workflow 1.17.0 and before)
    activity_min_peak_score: float | None = 0.23
    atlas: bool = True
    atlas_transform: str = "affine"
    atlas_reuse: bool = True  # reuse a time point's stored Colin27 registration (same image content)
    atlas_spacing_mm: float = 3.0  # Colin27 -> subject registration grid (atlas labels are coarser than this)
    write_report: bool = True
    write_dicom: bool = True
    # a NIfTI follow-up has no DICOM series for the SEG to reference: one is synthesised (about 1.4 s of
    # single-threaded pydicom on a 1 mm image). True (default since workflow 1.8.1): in a child process started
    # after the load step, on the core the image steps leave idle (neurorad.image.series_writer); alternated 1 mm
    # pairs, bench/ms_speed.py --pairs 3 --compare-config reference_series_process=True: -1.6, -1.6, -0.9 s per
    # pair (docs/ms-lesions-log.md). False: at the end, in this process
    reference_series_process: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MSResult:
    """What a run produced (paths are inside the final ``out_dir``)."""

    out_dir: Path
    decision: MSDecision
    lesions: list[LesionRow]
    warnings: list[str]
    timings_s: dict[str, float]
    files: dict[str, str]
    labels: Volume | None = None  # new_lesions on the follow-up's own grid
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds per step (all threads)

    @property
    def active(self) -> bool:
        return self.decision.active


# ------------------------------------------------------------------------------------------ step 1
def load_input(path: str | Path | Volume, role: str) -> Volume:
    """A FLAIR from a NIfTI file or a DICOM series folder (or a Volume passed through)."""
    if isinstance(path, Volume):
        vol = path
        vol.metadata.setdefault("source", f"<{role} volume>")
        return vol.check_finite()
    p = Path(path)
    if not p.exists():
        raise InputError(f"{role} input does not exist", p)
    if p.is_dir():
        from neurorad.image.dicom_series import read_dicom_series

        vol = read_dicom_series(p)
    elif p.name.endswith((".nii", ".nii.gz")):
        vol = load_nifti(p)
    else:
        raise InputError(f"{role} input is neither a NIfTI file (.nii/.nii.gz) nor a DICOM series folder", p)
    if vol.data.ndim != 3:
        raise InputError(f"{role} must be a 3D volume, got shape {vol.shape}", p)
    vol.metadata["role"] = role
    return vol.check_finite()


def input_hash(path: str | Path | Volume) -> str:
    if isinstance(path, Volume):
        from neurorad.provenance import sha256_array

        return sha256_array(path.data)
    p = Path(path)
    if p.is_dir():
        return sha256_files([f for f in p.rglob("*") if f.is_file()])
    return sha256_file(p)


def check_pair(baseline: Volume, followup: Volume, cfg: MSConfig) -> list[str]:
    """Refuse different patients and thick 2D slices; warn on inputs that do not look like FLAIR."""
    warnings: list[str] = []
    db, df = baseline.metadata.get("dicom") or {}, followup.metadata.get("dicom") or {}
    pb, pf = db.get("PatientID"), df.get("PatientID")
    if pb is not None and pf is not None and str(pb).strip() != str(pf).strip():
        raise InputError("baseline and follow-up belong to different patients (PatientID/pseudonym differ)",
                         followup.metadata.get("source"))
    for v, d, name in ((baseline, db, "baseline"), (followup, df, "followup")):
        gap_warning = check_acquisition(v, str(v.metadata.get("role", name)), cfg.max_slice_thickness_mm,
                                        cfg.max_slice_spacing_mm)
        if gap_warning:
            warnings.append(gap_warning)
        desc = " ".join(str(d.get(k, "")) for k in ("SeriesDescription", "ProtocolName", "SequenceName")).lower()
        ti = d.get("InversionTime")
        if d and not ("flair" in desc or "dark" in desc or (ti is not None and float(ti) > 1200)):
            warnings.append(f"{v.metadata.get('role')}: series description/inversion time do not indicate FLAIR")
    return warnings


def flair_contrast_warning(vol: Volume, mask: np.ndarray) -> str | None:
    """FLAIR suppresses CSF: a bright ventricle region (T2-like) or a bright white matter over grey
    (T1-like, WM >> median) is suspicious. Heuristic, warning only."""
    vals = np.asarray(vol.data, np.float64)[mask]
    if vals.size == 0:
        return None
    med = np.median(vals)
    bright = float(np.mean(vals > 1.8 * med))
    if bright > 0.08:
        return f"{vol.metadata.get('role')}: {bright:.0%} of the brain is very bright: does not look like FLAIR"
    return None


def smoothed_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray, spacing_mm: tuple[float, float, float],
                         fwhm_mm: float = 4.0) -> float:
    """Pearson correlation of two images inside ``mask`` after Gaussian smoothing (noise removed); the two
    filters run at once (``gaussian_filters``: the same arrays, half the wall time on 2 cores)."""
    sig = [fwhm_mm / 2.3548 / s for s in spacing_mm]
    xs, ys = gaussian_filters([np.asarray(a, np.float32), np.asarray(b, np.float32)], sig)
    return float(np.corrcoef(xs[mask], ys[mask])[0, 1])


def halfway(t: AffineTransform) -> AffineTransform:
    """The rigid transform H with H then H = t (principal matrix square root), for halfway-space
    resampling of a registered pair."""
    from scipy.linalg import sqrtm

    m = np.real(sqrtm(t.matrix))
    m[3] = [0.0, 0.0, 0.0, 1.0]
    return AffineTransform(m, "rigid")


def antialias(volume: Volume, target_spacing_mm: tuple[float, float, float], mode: str = "reflect") -> Volume:
    """Smooth a finer image before it is sampled on a coarser grid (axes matched after RAS
    reorientation): Gaussian with the SD of a box of the coarser voxel minus the finer one,
    sigma = sqrt(max(c^2 - f^2, 0)) / sqrt(12), so thick slices are compared with equally thick ones.
    ``mode``: SciPy's boundary mode (``"constant"``: zeros beyond the field of view, for :func:`coverage_mask`)."""
    from scipy import ndimage

    f = np.asarray(volume.spacing_mm)
    c = np.asarray(target_spacing_mm)
    sig_mm = np.sqrt(np.maximum(c**2 - f**2, 0.0)) / np.sqrt(12.0)
    if not np.any(sig_mm > 0.05):
        return volume
    return volume.with_data(ndimage.gaussian_filter(np.asarray(volume.data, np.float32), sig_mm / f, mode=mode))


def antialias_thick_axes(volume: Volume, other_spacing_mm: tuple[float, float, float],
                         min_ratio: float = 1.5, mode: str = "reflect") -> tuple[Volume, bool]:
    """The coarser image of a pair smoothed along the axes where the OTHER image is thicker by ``min_ratio`` or
    more (:func:`antialias` on those axes only), and whether any was. Slices of two orientations (axial 2D at
    one time point, coronal 2D at the other) make each image the finer one along the other's slice axis;
    anti-aliasing only the finer image to the coarser grid leaves the coarser one sharp along the other's
    thick axis, and every edge across it becomes a change. Same-orientation pairs (the coarser image at least
    as coarse along every axis) are returned unchanged."""
    own = np.asarray(volume.spacing_mm, float)
    other = np.asarray(other_spacing_mm, float)
    thicker = _thicker_axes(own, other, min_ratio)
    if not thicker.any():
        return volume, False
    return antialias(volume, tuple(np.where(thicker, other, own)), mode), True


def _thicker_axes(own_spacing_mm: np.ndarray, other_spacing_mm: np.ndarray, min_ratio: float = 1.5) -> np.ndarray:
    """The axes (RAS order) along which the other image's voxels are ``min_ratio`` or more times this one's."""
    return np.asarray(other_spacing_mm, float) >= min_ratio * np.asarray(own_spacing_mm, float)


def crossed_slices(b0: Volume, f0: Volume) -> bool:
    """Whether the two images are slices of different orientations (axial 2D at one time point, coronal 2D at the
    other): the coarser one is itself the finer along some axis (:func:`antialias_thick_axes` smooths it there). A 3D
    image against slices, or slices of one orientation and any thickness, are not crossed. Both images in RAS axes,
    as step 1 leaves them. The misregistration test reads it (``FPParams.shift_confirm_crossed``)."""
    coarser, finer = (f0, b0) if _followup_coarser(b0, f0) else (b0, f0)
    return bool(_thicker_axes(np.asarray(coarser.spacing_mm), np.asarray(finer.spacing_mm)).any())


def resample_pair(b0: Volume, f0: Volume, mb: Volume, mf: Volume, T: AffineTransform,
                  cfg: MSConfig) -> tuple[Volume, Volume, Volume, AffineTransform, AffineTransform, str]:
    """Both time points in the HALFWAY space (each moved by half the motion, so both carry the
    same interpolation blur; an asymmetric resampling makes one image smoother and creates false
    differences at every edge) on the coarser grid, cropped to its brain + margin. ``T`` maps
    baseline world -> follow-up world. The finer image is anti-aliased to the coarser voxel
    (:func:`antialias`); with ``cfg.resampling == "native"`` and different voxel sizes it is
    then sampled on the coarser image's own slices (:func:`to_native_grid`) so that both images
    reach the common grid with identical interpolation weights: resampling a thick-slice image
    between its slices blurs it along the slice axis by up to a quarter slice^2 in variance,
    which differs from place to place with the motion, and the other image, sampled on its fine
    grid, did not carry that blur (ventricle tops and cortex then changed over millilitres). Slices of
    two orientations: the coarser image is smoothed along the other's slice axis as well
    (:func:`antialias_thick_axes`).

    Returns ``(ref, b_c, f_c, Tb, Tf, description)``: the common grid, both images on it, and
    common world -> baseline / follow-up world."""
    half = halfway(T)
    Tb, Tf = half.inverse(), half
    if cfg.resampling not in ("native", "native_thick", "halfway"):
        raise ValueError(f"unknown resampling {cfg.resampling!r} (native, native_thick, halfway)")
    coarser_f = _followup_coarser(b0, f0)
    common, common_mask = (f0, mf) if coarser_f else (b0, mb)  # the grid's voxel layout comes from the coarser image
    how = "follow-up grid (coarser), halfway space" if coarser_f else "baseline grid, halfway space"
    b0s, f0s, crossed, native = _before_common(b0, f0, T, cfg)
    if crossed:  # slices of another orientation: each image carries the other's slice thickness
        how += "; coarser image smoothed along the other image's slice axis"
        if native and cfg.crossed_round_trip:
            how += " and taken through its slices and back (crossed_round_trip)"
    if native:
        how += "; finer image sampled on the coarser image's slices first"
    ref = crop_to_mask(common, common_mask, cfg.crop_margin_mm + 5.0)
    b_c, f_c = _to_common(b0s, f0s, ref, Tb, Tf, cfg)
    return ref, b_c, f_c, Tb, Tf, how


def finer_input_voxel_mm(b0: Volume, f0: Volume) -> float:
    """The largest voxel dimension of the finer of the two input images: 1 mm when either time point is a 1 mm 3D
    image, 3 mm for 3 mm slices against 5 mm ones (of the same or another orientation). The misregistration test
    reads it (``FPParams.shift_thick_axis_finer_input_mm``)."""
    return float(min(max(b0.spacing_mm), max(f0.spacing_mm)))


def _followup_coarser(b0: Volume, f0: Volume) -> bool:
    """Whether the follow-up's voxels are larger (then its grid is the common grid's layout)."""
    return f0.voxel_volume_mm3 > b0.voxel_volume_mm3 * (1 + 1e-6)


def _before_common(b0: Volume, f0: Volume, T: AffineTransform, cfg: MSConfig,
                   mode: str = "reflect") -> tuple[Volume, Volume, bool, bool]:
    """Both images made ready for the common grid (:func:`resample_pair`): the finer one anti-aliased to the
    coarser voxel, the coarser one along the other's slice axis where that is thicker, and with native resampling
    the finer one sampled on the coarser one's moved slices. ``mode``: the anti-aliasing's boundary mode. Returns
    ``(b0s, f0s, crossed, native)``."""
    if _followup_coarser(b0, f0):
        (f0s, crossed), b0s = antialias_thick_axes(f0, b0.spacing_mm, mode=mode), antialias(b0, f0.spacing_mm, mode)
    else:
        (b0s, crossed), f0s = antialias_thick_axes(b0, f0.spacing_mm, mode=mode), antialias(f0, b0.spacing_mm, mode)
    differ = not np.allclose(b0.spacing_mm, f0.spacing_mm, rtol=0.05)
    thick = max(b0.spacing_mm) > 1.5 * min(b0.spacing_mm) or max(f0.spacing_mm) > 1.5 * min(f0.spacing_mm)
    native = (cfg.resampling == "native" and differ) or (cfg.resampling == "native_thick" and (differ or thick))
    if native:
        if _followup_coarser(b0, f0):
            b0s = to_native_grid(b0s, f0, T.inverse())
            if crossed and cfg.crossed_round_trip:
                f0s = through_grid(f0s, b0, T)
        else:
            f0s = to_native_grid(f0s, b0, T)
            if crossed and cfg.crossed_round_trip:
                b0s = through_grid(b0s, f0, T.inverse())
    return b0s, f0s, crossed, native


def _to_common(b0s: Volume, f0s: Volume, ref: Volume, Tb: AffineTransform, Tf: AffineTransform,
               cfg: MSConfig) -> tuple[Volume, Volume]:
    """Both prepared images resampled onto ``ref`` (the cubic B-spline's coefficient filter runs on one thread:
    both at once)."""
    return _both(lambda vt: resample(vt[0], ref, vt[1], cfg.resample_interpolation), (b0s, Tb), (f0s, Tf),
                 cfg.concurrent_timepoints)


def _inside_both_fields_of_view(b0: Volume, f0: Volume, ref: Volume, T: AffineTransform, Tb: AffineTransform,
                                Tf: AffineTransform, region: np.ndarray | None, margin_mm: float | None = None) -> bool:
    """Whether every voxel of ``region`` (a mask on ``ref``; None: all of it) lies ``margin_mm`` (default
    :func:`_coverage_margin_mm`, the crop's: 5 mm for two 1 mm images, 18.7 mm for 5 mm slices against 1 mm) or more
    inside both
    images' fields of view, whatever path its value takes (through the baseline's grid: ``Tb``; the follow-up's:
    ``Tf``; the finer image sampled on the coarser one's moved slices: ``T`` of a baseline point). Then the coverage
    is 1 there, and :func:`coverage_mask` needs no resampling (the usual case: a brain imaged with room around it).
    The region's bounding box, grown by the margin, is convex, and so are its images and the grids' boxes: its
    8 corners decide. Before workflow 1.15.0 the margin was a fixed 12 mm, under the crop's for 5 mm slices against
    1 mm. Of the 80 held-out benchmark pairs (widened, independent) only independent pair 18 took the shortcut then,
    and none does now; its resampled coverage keeps every brain voxel, so no detection changed."""
    if margin_mm is None:
        margin_mm = _coverage_margin_mm(b0, f0)
    idx = np.argwhere(region) if region is not None else None
    if idx is not None and idx.size == 0:
        return True
    lo = idx.min(0) if idx is not None else np.zeros(3)
    hi = idx.max(0) if idx is not None else np.asarray(ref.spatial_shape) - 1
    corners = np.array([[(lo, hi)[k][a] for a, k in enumerate(bits)] for bits in np.ndindex(2, 2, 2)], float)
    spacing = np.asarray(ref.spacing_mm, float)
    grow = np.sign(corners - (lo + hi) / 2.0) * (margin_mm / spacing)  # margin along the grid's own axes
    world = (corners + grow) @ np.asarray(ref.affine)[:3, :3].T + np.asarray(ref.affine)[:3, 3]

    def inside(points_world: np.ndarray, vol: Volume) -> bool:
        ijk = (points_world - np.asarray(vol.affine)[:3, 3]) @ np.linalg.inv(np.asarray(vol.affine)[:3, :3]).T
        return bool(np.all(ijk >= -0.5) and np.all(ijk <= np.asarray(vol.spatial_shape) - 0.5))

    return all(inside(path.apply(world), vol) for path, vol in _value_paths(b0, f0, T, Tb, Tf))


def _value_paths(b0: Volume, f0: Volume, T: AffineTransform, Tb: AffineTransform,
                 Tf: AffineTransform) -> list[tuple[AffineTransform, Volume]]:
    """Each way a common-grid voxel's value reaches back into an image (common world -> that image's world, the
    image): through the baseline's grid (``Tb``), the follow-up's (``Tf``), and the finer image sampled on the coarser
    one's moved slices (``T`` of a baseline point, or its inverse of a follow-up point)."""
    return [(Tb, b0), (Tf, f0), (Tb.then(T), f0), (Tf.then(T.inverse()), b0)]


def _coverage_margin_mm(b0: Volume, f0: Volume) -> float:
    """How far inside both fields of view every path's resampled ones are exactly 1 (:func:`coverage_mask`): the
    anti-aliasing Gaussian's truncation (SciPy's 4 sigma, sigma of :func:`antialias` between the two voxel sizes on
    any axis) plus two voxels of cubic B-spline support on each image's grid (the native path resamples twice) plus a
    voxel of slack. 5 mm for two 1 mm images, 18.7 mm for 5 mm slices against 1 mm."""
    sb, sf = np.asarray(b0.spacing_mm, float), np.asarray(f0.spacing_mm, float)
    sigma_mm = float(np.max(np.sqrt(np.abs(sb**2 - sf**2)))) / np.sqrt(12.0)
    return 4.0 * sigma_mm + 2.0 * (float(sb.max()) + float(sf.max())) + float(max(sb.max(), sf.max()))


def _near_field_of_view_edges(b0: Volume, f0: Volume, ref: Volume, T: AffineTransform, Tb: AffineTransform,
                              Tf: AffineTransform, margin_mm: float) -> np.ndarray:
    """Voxels of ``ref`` that lie less than ``margin_mm`` inside either image's field of view (or outside it) along
    any path their value takes (:func:`_value_paths`): the distance to each face of an
    image's voxel box, an affine function of the voxel index, evaluated on the grid by broadcasting (no resampling)."""
    near = np.zeros(ref.spatial_shape, bool)
    for path, vol in _value_paths(b0, f0, T, Tb, Tf):
        # float32: a grid of 6 million voxels, 12 times per pair
        for a, idx in _continuous_index(ref, path, vol, np.float32):
            inner = np.float32(margin_mm / float(vol.spacing_mm[a]) - 0.5)  # voxels from the first/last centre
            near |= (idx < inner) | (idx > np.float32(vol.spatial_shape[a] - 1) - inner)
    return near


def _continuous_index(grid: Volume, path: AffineTransform, vol: Volume,
                      dtype: type = np.float64) -> Iterator[tuple[int, np.ndarray]]:
    """``(axis, index)`` for each of ``vol``'s axes: the continuous voxel index in ``vol`` of every voxel centre of
    ``grid`` taken by ``path`` (``grid``'s world -> ``vol``'s world). An affine function of the grid's index, so it
    is built per axis by broadcasting, without a point list."""
    m = (np.linalg.inv(np.asarray(vol.affine, float)) @ path.matrix @ np.asarray(grid.affine, float)).astype(dtype)
    i, j, k = (np.arange(n, dtype=dtype) for n in grid.spatial_shape)
    for a in range(3):
        yield a, (m[a, 0] * i + m[a, 3])[:, None, None] + (m[a, 1] * j)[None, :, None] + (m[a, 2] * k)[None, None, :]


def _inside_voxel_box(grid: Volume, path: AffineTransform, vol: Volume) -> np.ndarray:
    """Voxels of ``grid`` whose centre, taken by ``path`` (``grid``'s world -> ``vol``'s world), lands inside ``vol``'s
    voxel box: continuous index in [-0.5, n - 0.5) on every axis, ITK's ``ImageFunction::IsInsideBuffer``, the test
    by which ``sitk.Resample`` gives a point the interpolated value or the default 0 (float64, as ITK computes it)."""
    inside = np.ones(grid.spatial_shape, bool)
    for a, idx in _continuous_index(grid, path, vol):
        inside &= (idx >= -0.5) & (idx < vol.spatial_shape[a] - 0.5)
    return inside


_CONSTANT_PRESERVING = ("nearest", "linear", "bspline")  # interpolators whose weights sum to 1 (a constant stays)


def _box_of(ref: Volume, mask: np.ndarray) -> tuple[Volume, tuple[slice, ...]]:
    """The bounding box of ``mask`` (on ``ref``) as a grid of its own (``crop_to_mask``) and as the slices that put
    values on that grid back into ``ref``'s: where :func:`coverage_mask` and :func:`signal_coverage` resample."""
    sub = crop_to_mask(ref, mask)
    lo = np.rint(ref.world_to_voxel(sub.affine[None, :3, 3])[0]).astype(int)  # the box's first voxel in ref
    return sub, tuple(slice(int(a), int(a) + n) for a, n in zip(lo, sub.spatial_shape, strict=True))


def coverage_mask(b0: Volume, f0: Volume, ref: Volume, T: AffineTransform, Tb: AffineTransform,
                  Tf: AffineTransform, cfg: MSConfig, region: np.ndarray | None = None, crop: bool = True,
                  constant_shortcut: bool = True) -> np.ndarray:
    """Voxels of the common grid ``ref`` whose values at BOTH time points come from inside the images' fields of
    view: a volume of ones on each image's grid, taken along :func:`resample_pair`'s path (anti-aliased with zeros
    beyond its edge, the finer one sampled on the coarser one's moved slices first when ``cfg.resampling`` does
    that), with zeros outside the field of view as the images have, comes back within ``cfg.fov_coverage_tolerance`` of
    1. Where it does not, the value mixes in the zeros beyond the edge, and the cubic B-spline's ringing next to
    that step reaches about two voxels further (the ringing of the interpolating spline decays by
    2 - sqrt(3) = 0.27 per voxel; Unser 1999, IEEE Signal Process. Mag. 16(6):22-38). ``region`` (a mask on
    ``ref``): when all of it lies well inside both fields of view (:func:`_inside_both_fields_of_view`), every voxel
    is kept without resampling; voxels outside it count as covered (they are not evaluated).

    ``crop`` (default): the ones are resampled only onto the bounding box of the voxels (of ``region``) that lie
    within :func:`_coverage_margin_mm` of a field of view's edge along some path
    (:func:`_near_field_of_view_edges`); everywhere else they come back exactly 1. Usually that box is a slab at the
    top or bottom of the grid: 0.6 s on a 1 mm pair instead of 1.8 s for the whole grid (``crop=False``, which gives
    the same mask: tests/pipelines/test_ms_resample.py).

    ``constant_shortcut`` (default, since workflow 1.15.1): where neither image is smoothed or sampled on the other's
    slices first (equal voxel sizes, the usual 3D FLAIR pair), the ones stay exactly 1 up to each field of view's
    edge, and an interpolator whose weights sum to 1 (nearest, linear, cubic B-spline: its coefficients of a
    constant are that constant, with ITK's mirror boundary too) gives 1 at every point inside the image's voxel
    box and the default 0 beyond it. The mask is then that box test along each path (:func:`_inside_voxel_box`),
    with no resampling: 0.7 s less per 1 mm pair; the same mask as the resampled ones (the test compares them)."""
    out = np.ones(ref.spatial_shape, bool)
    if _inside_both_fields_of_view(b0, f0, ref, T, Tb, Tf, region):
        return out
    sub, sl = ref, tuple(slice(0, n) for n in ref.spatial_shape)
    if crop:
        near = _near_field_of_view_edges(b0, f0, ref, T, Tb, Tf, _coverage_margin_mm(b0, f0))
        if region is not None:
            near &= np.asarray(region, bool)
        if not near.any():
            return out
        sub, sl = _box_of(ref, near)
    # the anti-aliasing's boundary mode reflects the image at its edge: with zeros there instead, the ones show how
    # much of each smoothed voxel came from beyond the field of view
    ones_b, ones_f, _, _ = _before_common(b0.with_data(np.ones(b0.spatial_shape, np.float32)),
                                          f0.with_data(np.ones(f0.spatial_shape, np.float32)), T, cfg, "constant")
    if (constant_shortcut and cfg.resample_interpolation in _CONSTANT_PRESERVING
            and all(bool(np.all(np.asarray(v.data) == 1.0)) for v in (ones_b, ones_f))):
        out[sl] = _inside_voxel_box(sub, Tb, ones_b) & _inside_voxel_box(sub, Tf, ones_f)
        return out
    out[sl] = _comes_back_whole(ones_b, ones_f, sub, Tb, Tf, cfg)
    return out


def _comes_back_whole(vb: Volume, vf: Volume, ref: Volume, Tb: AffineTransform, Tf: AffineTransform,
                      cfg: MSConfig) -> np.ndarray:
    """Voxels of ``ref`` where both prepared indicator images (:func:`_before_common`'s output of a field of view's
    ones or a signal support) come back within ``cfg.fov_coverage_tolerance`` of 1 on the common grid."""
    cb, cf = _to_common(vb, vf, ref, Tb, Tf, cfg)
    tol = cfg.fov_coverage_tolerance
    return (np.abs(np.asarray(cb.data) - 1.0) <= tol) & (np.abs(np.asarray(cf.data) - 1.0) <= tol)


def _block_any(mask: np.ndarray, block: tuple[int, int, int]) -> np.ndarray:
    """Whether each block of ``block`` voxels (per axis) of ``mask`` holds a True voxel (the grid padded with False up
    to whole blocks). One axis at a time over contiguous memory: 0.04 s for a 256 x 256 x 176 grid, against 0.1 s
    for one reduction over the three block axes of a six-axis view."""
    shape = np.asarray(mask.shape)
    bl = np.asarray(block)
    nb = -(-shape // bl)
    m = np.asarray(mask, bool)
    if np.any(shape % bl):
        m = np.pad(m, [(0, int(n * b - s)) for n, b, s in zip(nb, bl, shape, strict=True)])
    u = np.ascontiguousarray(m).view(np.uint8)
    u = u.reshape(nb[0], bl[0], -1).max(axis=1)
    u = u.reshape(nb[0], nb[1], bl[1], -1).max(axis=2)
    return u.reshape(nb[0], nb[1], nb[2], bl[2]).max(axis=3).astype(bool)


def _near_no_signal(support: np.ndarray, vol: Volume, ref: Volume, path: AffineTransform, region: np.ndarray,
                    margin_mm: float, block_mm: float = 4.0, ref_block: int = 4) -> np.ndarray:
    """Voxels of ``region`` (a mask on ``ref``) whose centre, taken by ``path`` (``ref``'s world -> ``vol``'s world),
    may lie less than ``margin_mm`` from a voxel of ``vol`` without signal (``~support``; beyond the grid is not
    such a voxel). Conservative and cheap (about 0.1 s on a 1 mm pair; no distance map of the whole grid).

    The voxels without signal are marked on blocks of about ``block_mm`` of ``vol`` (a whole number of voxels per
    axis, ``b``), and the distance from each block's centre to the nearest marked block's centre is taken
    (Euclidean, in mm). The region is taken in blocks of ``ref_block``^3 voxels of ``ref``, each block's centre to
    ``vol``. A voxel x of a region block with centre c, and a voxel z without signal: the centre's block holds c's
    nearest voxel, so |x - z| >= D - h - |b/2 * spacing| - |(b - 1)/2 * spacing|, with D that block's distance and h
    the region block's half diagonal. A block is flagged when that bound is under the margin. A centre beyond the
    grid is taken to the nearest block, which is no farther from any voxel of the grid (the projection onto a box is
    1-Lipschitz)."""
    from scipy import ndimage

    zero = ~np.asarray(support, bool)
    region = np.asarray(region, bool)
    out = np.zeros(ref.spatial_shape, bool)
    if not zero.any() or not region.any():
        return out
    spacing = np.asarray(vol.spacing_mm, float)
    bl = np.maximum(1, np.rint(block_mm / spacing)).astype(int)
    marks = _block_any(zero, tuple(int(b) for b in bl))
    dist_mm = ndimage.distance_transform_edt(~marks, sampling=tuple(bl * spacing))
    half_mm = float(np.linalg.norm((ref_block - 1) / 2.0 * np.asarray(ref.spacing_mm, float)))
    # c to its block's centre: half a voxel to its nearest voxel and (b - 1) / 2 on to the centre, per axis; z to its
    # block's centre: (b - 1) / 2 per axis. The two norms are added (with blocks of unequal voxels per axis the norm
    # of their sum could be smaller).
    slack_mm = float(np.linalg.norm(bl / 2.0 * spacing) + np.linalg.norm((bl - 1) / 2.0 * spacing))
    rblocks = _block_any(region, (ref_block,) * 3)
    kb = np.nonzero(rblocks)
    centres = np.stack(kb).astype(float) * ref_block + (ref_block - 1) / 2.0  # continuous index in ref
    m = np.linalg.inv(np.asarray(vol.affine, float)) @ path.matrix @ np.asarray(ref.affine, float)
    k = np.floor((m[:3, :3] @ centres + m[:3, 3:] + 0.5) / bl[:, None]).astype(np.int64)
    k = np.clip(k, 0, np.asarray(marks.shape)[:, None] - 1)
    flagged = np.zeros(rblocks.shape, bool)
    flagged[kb] = dist_mm[k[0], k[1], k[2]] < margin_mm + half_mm + slack_mm
    full = np.repeat(np.repeat(np.repeat(flagged, ref_block, 0), ref_block, 1), ref_block, 2)
    out[...] = full[tuple(slice(0, n) for n in ref.spatial_shape)] & region
    return out


def signal_coverage(b0: Volume, f0: Volume, support_b: np.ndarray, support_f: np.ndarray, ref: Volume,
                    T: AffineTransform, Tb: AffineTransform, Tf: AffineTransform, cfg: MSConfig,
                    region: np.ndarray | None = None, crop: bool = True, region_covered: bool = False) -> np.ndarray:
    """Voxels of the common grid ``ref`` whose values at both time points hold no voxel without signal (workflow
    1.22.1): :func:`coverage_mask`'s test with each image's signal support in place of its field of view
    (``preprocess.brain_extraction.signal_support``: 1 where the image holds signal, 0 outside a skull-stripped
    series). The support is taken along :func:`resample_pair`'s path and must come back within
    ``cfg.fov_coverage_tolerance`` of 1: a voxel next to a stripped edge mixes in its zeros through the
    anti-aliasing of a thick-slice pair and the cubic B-spline's reach, and reads as tissue lost or gained. An image
    with signal everywhere (not stripped) adds nothing and costs nothing.

    ``region`` (a mask on ``ref``; None: all of it): voxels outside it count as covered (they are not evaluated).
    ``crop`` (default; with a region): the supports are resampled only onto the bounding box of the region's voxels
    that lie within :func:`_coverage_margin_mm` of a voxel without signal (:func:`_near_no_signal`) or of a field of
    view's edge (:func:`_near_field_of_view_edges`), as :func:`coverage_mask` crops; everywhere else they come back 1.
    ``region_covered``: every voxel of the region is kept by :func:`coverage_mask` (the workflow's brain once step 3
    has applied it), so a support there, 1 up to the field of view's edge, comes back as the ones did, and only the
    voxels near a voxel without signal are resampled. An image whose air is exactly zero (a phantom's, or a
    scanner's that zero-fills outside the head) has none within reach of the brain, and then nothing is resampled:
    about 1.7 s less per 1 mm pair than the whole grid (``crop=False``, which gives the same mask on the region:
    tests/pipelines/test_ms_resample.py)."""
    out = np.ones(ref.spatial_shape, bool)
    if bool(np.all(support_b)) and bool(np.all(support_f)):
        return out
    region = None if region is None else np.asarray(region, bool)
    sub, sl = ref, tuple(slice(0, n) for n in ref.spatial_shape)
    if crop and region is not None:
        if not region.any():
            return out
        margin = _coverage_margin_mm(b0, f0)
        near = (_near_no_signal(support_b, b0, ref, Tb, region, margin)
                | _near_no_signal(support_f, f0, ref, Tf, region, margin))
        if not region_covered and not _inside_both_fields_of_view(b0, f0, ref, T, Tb, Tf, region):
            near |= _near_field_of_view_edges(b0, f0, ref, T, Tb, Tf, margin) & region
        if not near.any():
            return out
        sub, sl = _box_of(ref, near)
    sb, sf, _, _ = _before_common(b0.with_data(np.asarray(support_b, np.float32)),
                                  f0.with_data(np.asarray(support_f, np.float32)), T, cfg, "constant")
    out[sl] = _comes_back_whole(sb, sf, sub, Tb, Tf, cfg)
    if region is not None:
        out |= ~region  # outside the region: not evaluated, counted as covered
    return out


def to_native_grid(fine: Volume, coarse: Volume, coarse_to_fine: AffineTransform) -> Volume:
    """``fine`` (already anti-aliased) sampled at the voxel centres of ``coarse`` moved into
    ``fine``'s world by ``coarse_to_fine`` (cubic B-spline: interpolating, next to no blur). The
    result's grid is that moved copy of ``coarse``'s grid, so resampling it and ``coarse`` into a
    common space through transforms that differ by ``coarse_to_fine`` uses identical
    interpolation weights for both (a thick slice sampled between two slices is blurred the same
    way at both time points instead of only at one)."""
    affine = coarse_to_fine.matrix @ np.asarray(coarse.affine, np.float64)
    grid = Volume(np.zeros(coarse.spatial_shape, np.uint8), affine, {})
    out = resample(fine, grid, None, "bspline")
    return Volume(np.asarray(out.data, np.float32), affine, dict(fine.metadata))


def through_grid(image: Volume, other: Volume, other_to_image: AffineTransform) -> Volume:
    """``image`` sampled on ``other``'s voxel centres moved into its world (:func:`to_native_grid`) and back onto its
    own grid (cubic B-spline both ways): the interpolation ``other``'s samples take to reach ``image``'s grid, given
    to ``image`` itself. On slices of two orientations the coarser image takes this round trip
    (``MSConfig.crossed_round_trip``), so that across the finer image's slices both images are interpolated from
    samples at the same positions. Voxels whose round trip leaves ``other``'s field of view read 0, as the finer
    image does there (the coverage mask takes the same path)."""
    there = to_native_grid(image, other, other_to_image)
    back = resample(there, Volume(np.zeros(image.spatial_shape, np.uint8), image.affine, {}), None, "bspline")
    return Volume(np.asarray(back.data, np.float32), image.affine, dict(image.metadata))


# ------------------------------------------------------------------------------------------ atlas
def _downsample(volume: Volume, spacing_mm: float) -> Volume:
    """Gaussian anti-aliasing (FWHM = sqrt(target^2 - source^2) per axis), then linear resampling
    to an isotropic ``spacing_mm`` grid over the same field of view."""
    from scipy import ndimage

    sp = np.asarray(volume.spacing_mm)
    sig_vox = np.sqrt(np.maximum(spacing_mm**2 - sp**2, 0.0)) / 2.3548 / sp
    sm = volume.with_data(ndimage.gaussian_filter(np.asarray(volume.data, np.float32), sig_vox))
    return resample_to_spacing(sm, spacing_mm)


@functools.lru_cache(maxsize=2)
def _colin27_brain(spacing_mm: float) -> Volume:
    """Colin27 ch2bet (float32), resampled to ``spacing_mm`` (cached: the same for every run)."""
    colin = load_nifti(resources.colin27_brain())
    colin = colin.with_data(np.asarray(colin.data, np.float32))
    return _downsample(colin, spacing_mm) if spacing_mm > 0 else colin


@functools.lru_cache(maxsize=4)
def _atlas(name: str, img: str, txt: str, mirror: bool) -> Any:
    return load_atlas(name, resources.mricron(img), resources.mricron(txt), mirror_lr=mirror)


def atlas_to_subject(reference: Volume, brain: np.ndarray, backend: str, transform_type: str,
                     spacing_mm: float = 3.0,
                     ) -> tuple[dict[str, tuple[np.ndarray, dict[int, str]]], float, AffineTransform]:
    """Register Colin27's brain (ch2bet) affinely to the subject; pull AAL and JHU labels across.

    The registration runs with both images at ``spacing_mm`` (3 mm: an affine fit of two brains
    needs no finer detail, and the AAL/JHU regions are centimetres across); the labels are then
    pulled onto the full-resolution ``reference`` grid with nearest neighbour.
    """
    colin = _colin27_brain(float(spacing_mm))
    fixed = reference.with_data(np.where(brain, reference.data, 0).astype(np.float32))
    com_f = fixed.voxel_to_world(np.argwhere(brain).mean(0))[0]
    if spacing_mm > 0:
        fixed = _downsample(fixed, spacing_mm)
    com_m = colin.voxel_to_world(np.argwhere(colin.data > 0).mean(0))[0]
    init = np.eye(4)
    init[:3, 3] = com_m - com_f
    res = register(fixed, colin, transform_type=transform_type, backend=backend, initial=AffineTransform(init),
                   limits=RegistrationLimits(max_translation_mm=150.0, min_nmi=1.0))
    return atlas_labels(reference, res.transform), float(res.nmi_after), res.transform


def atlas_labels(reference: Volume, subject_to_colin: AffineTransform) -> dict[str, tuple[np.ndarray, dict[int, str]]]:
    """AAL and JHU labels pulled onto ``reference``'s grid (nearest neighbour) through the
    subject world -> Colin27 world transform."""
    out = {}
    jhu = "JHU-WhiteMatter-labels-1mm.nii"
    for name, img, txt, mirror in (("aal", "aal.nii.gz", "aal.nii.txt", False),
                                   ("jhu", f"{jhu}.gz", f"{jhu}.txt", True)):
        atlas = _atlas(name, img, txt, mirror)
        lab = resample(atlas.volume, reference, subject_to_colin, "nearest")
        out[name] = (np.asarray(lab.data), atlas.names)
    return out


# ------------------------------------------------------------------------------------------ atlas reuse
_ATLAS_CACHE_VERSION = "ms-atlas-v1"
_atlas_memo: dict[str, np.ndarray] = {}


def _atlas_cache_path(image_hash: str) -> Path:
    import os

    root = Path(os.environ.get("NEURORAD_CACHE", Path.home() / ".cache" / "neurorad"))
    return root / "ms-atlas" / f"{_ATLAS_CACHE_VERSION}-{image_hash[:32]}.json"


def cached_atlas_transform(image_hash: str, key: str) -> AffineTransform | None:
    """The stored time-point world -> Colin27 world transform of one input image, or None.

    Keyed by the image's content hash and the atlas settings (``key``), so a patient's study is
    registered to the atlas once: the next pair that holds the same series (the follow-up that
    becomes the baseline of the next comparison, or the same baseline compared with a later study)
    reuses it. In memory per process, and on disk (``$NEURORAD_CACHE`` or ``~/.cache/neurorad``).
    """
    mkey = f"{image_hash}:{key}"
    if mkey in _atlas_memo:
        return AffineTransform(_atlas_memo[mkey].copy(), "affine")
    try:
        d = json.loads(_atlas_cache_path(image_hash).read_text(encoding="utf-8"))
        m = np.asarray(d[key], float)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        return None
    _atlas_memo[mkey] = m
    return AffineTransform(m.copy(), "affine")


def store_atlas_transform(image_hash: str, key: str, t: AffineTransform) -> None:
    """Remember ``t`` (time-point world -> Colin27 world); an unwritable cache is ignored."""
    import os
    import tempfile

    m = np.asarray(t.matrix, float)
    _atlas_memo[f"{image_hash}:{key}"] = m.copy()
    path = _atlas_cache_path(image_hash)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            d = {}
        d[key] = m.tolist()
        fd, tmpname = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(d, fh)
        os.replace(tmpname, path)
    except OSError:
        pass


# two at a time in threads when MSConfig.concurrent_timepoints (neurorad.pipelines._engines: step 5 uses them too)
_both, _parallel = _engines.both, _engines.parallel


class _BackgroundWrites:
    """``fn(item)`` for each item in up to two threads, started now and waited for by :meth:`wait` (for work that
    releases the GIL, such as the NIfTI maps' gzip compression, to overlap the report and DICOM objects, which are
    Python-bound: about 0.6 s less per 1 mm pair since workflow 1.15.1). :meth:`wait` raises the first exception;
    :meth:`cancel` (a failed run) drops what has not started and waits for the rest, so no thread writes into an
    output folder that is being removed."""

    def __init__(self, fn: Callable[[Any], Any], items: list[Any], workers: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ms-io")
        self._futures = [self._pool.submit(fn, x) for x in items]

    def wait(self) -> None:
        try:
            for f in self._futures:
                f.result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def cancel(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------ context
@dataclass
class MSContext:
    """What the steps share: inputs and configuration, then what each step produced.

    Every step is a function ``step(ctx) -> None`` that reads the fields of earlier steps and
    fills its own (listed below in step order), so a step can be run and tested alone on a
    context built by hand.
    """

    cfg: MSConfig
    tmp: Path
    baseline_in: Any
    followup_in: Any
    extra_in: dict[str, Any] = field(default_factory=dict)
    prov: Provenance = field(default_factory=Provenance)
    warnings: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    # 1 load
    b_raw: Volume | None = None
    f_raw: Volume | None = None
    b0: Volume | None = None  # RAS, float32
    f0: Volume | None = None
    # 2 brain
    mb: Volume | None = None
    mf: Volume | None = None
    # each image's voxels with signal (preprocess.brain_extraction.signal_support; all of it unless skull-stripped)
    support_b: np.ndarray | None = None
    support_f: np.ndarray | None = None
    # 3 register (common = halfway space on the coarser grid, cropped)
    ref: Volume | None = None
    Tb: AffineTransform | None = None  # common world -> baseline world
    Tf: AffineTransform | None = None  # common world -> follow-up world
    b_c: Volume | None = None
    f_c: Volume | None = None
    brain: np.ndarray | None = None
    # the finer input image's largest voxel dimension (:func:`finer_input_voxel_mm`; step 8 reads it)
    finer_input_voxel_mm: float | None = None
    # whether the inputs are slices of two orientations (:func:`crossed_slices`; step 8 reads it)
    crossed_slices: bool = False
    extra_vols: dict[str, Volume] = field(default_factory=dict)
    # 4 bias
    b_n: Volume | None = None
    f_n: Volume | None = None
    # 5 normalise (baseline brain median = 1, zero outside the brain)
    bn: np.ndarray | None = None
    fn: np.ndarray | None = None
    # 6-8 candidates, components, false-positive reduction
    cand: Candidates | None = None
    classical_score: np.ndarray | None = None  # learned / fusion engines: each engine's score, kept apart
    learned_score: np.ndarray | None = None
    learned_probability: np.ndarray | None = None  # the network's output when a caller already has it (a sweep)
    labels0: np.ndarray | None = None
    n0: int = 0
    labels: np.ndarray | None = None
    n: int = 0
    decisions: list[Any] = field(default_factory=list)
    baseline_lesions: np.ndarray | None = None  # hyperintense at baseline (step 8's enlarging path, step 9)
    # 9 classify
    kinds: list[str] = field(default_factory=list)
    extents: dict[int, Any] = field(default_factory=dict)
    # 10 atlas + table
    lab_vol: Volume | None = None
    rows: list[LesionRow] = field(default_factory=list)
    # 11 decide
    decision: MSDecision | None = None
    # 12 outputs
    labels_fu: Volume | None = None
    report: Any = None
    # the follow-up's DICOM reference series being synthesised in a child process (NIfTI input; see MSConfig)
    reference_writer: Any = None
    # the NIfTI maps being compressed in threads while the report and DICOM are made (:class:`_BackgroundWrites`)
    background_writes: Any = None

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        assert self.ref is not None
        return self.ref.spacing_mm


# ------------------------------------------------------------------------------------------ steps
def _with_magnitude_origin(volume: Volume) -> tuple[Volume, float]:
    """``preprocess.normalize.restore_magnitude_origin`` over the image's signal (its support is only looked for
    in an image with a negative voxel: nothing to shift otherwise)."""
    data = np.asarray(volume.data, np.float32)
    support = signal_support(volume) if bool((data < 0).any()) else None
    return restore_magnitude_origin(volume.with_data(data), support)


def coarsened_fine_axes(volume: Volume, below_mm: float | None, target_mm: float) -> Volume:
    """``volume`` averaged along each axis whose voxels are finer than ``below_mm`` to a whole number of them, about
    ``target_mm`` (k = round(target / spacing)): :func:`antialias` (a box of the new voxel) then linear resampling
    over the same field of view (``image.geometry.resample_to_spacing``); other axes, and an image with none that
    fine, are left as they are (the same object is returned)."""
    if below_mm is None:
        return volume
    spacing = np.asarray(volume.spacing_mm, float)
    factor = np.where(spacing < below_mm, np.maximum(1.0, np.round(target_mm / spacing)), 1.0)
    if np.all(factor == 1.0):
        return volume
    new = tuple(float(x) for x in spacing * factor)
    out = resample_to_spacing(antialias(volume, new), new, "linear")
    return out.with_data(np.asarray(out.data, np.float32))


def step_load(ctx: MSContext) -> None:
    """1. Read both FLAIR, refuse different patients and thick 2D slices, reorient to RAS."""
    cfg = ctx.cfg
    if cfg.lesion_engine not in LESION_ENGINES:
        raise InputError(f"unknown lesion engine {cfg.lesion_engine!r}; choose one of {', '.join(LESION_ENGINES)}")
    if cfg.lesion_engine != "classical":  # the model is loaded and its hashes checked before any work
        from neurorad.segment.ms_learned import learned_segmenter

        learned_segmenter(cfg.learned.model, cfg.learned.mirror_axes)
    with ctx.prov.step("load", max_slice_thickness_mm=cfg.max_slice_thickness_mm,
                       max_slice_spacing_mm=cfg.max_slice_spacing_mm) as st:
        # both time points at once: a DICOM folder's conversion waits on dcm2niix and its hash on hashlib, both
        # outside the GIL (0.98 -> 0.81 s for two 176-slice series, with the reorientation below)
        (ctx.b_raw, hb), (ctx.f_raw, hf) = _both(lambda a: (load_input(*a), input_hash(a[0])),
                                                 (ctx.baseline_in, "baseline"), (ctx.followup_in, "followup"),
                                                 cfg.concurrent_timepoints)
        ctx.prov.inputs["baseline"], ctx.prov.inputs["followup"] = hb, hf
        ctx.warnings += check_pair(ctx.b_raw, ctx.f_raw, cfg)
        b0, f0 = _both(lambda v: reorient(v, "RAS"), ctx.b_raw, ctx.f_raw, cfg.concurrent_timepoints)
        # a series written z-scored or with a negative offset gets its zero back (workflow 1.22.2): the engine's
        # ratios (contrast over white matter, drift, N4's multiplicative field) assume a magnitude image
        (b0, shift_b), (f0, shift_f) = _both(_with_magnitude_origin, b0, f0, cfg.concurrent_timepoints)
        for name, shift in (("baseline", shift_b), ("follow-up", shift_f)):
            st.parameters[f"intensity_shift_{name.replace('-', '')}"] = round(shift, 6)
            if shift:
                ctx.warnings.append(
                    f"{name}: more than {NEGATIVE_FRACTION_LIMIT:.0%} of its signal is negative, so it is not a "
                    f"magnitude image (z-scored or offset?); its signal was shifted by {shift:+.4g} so that its "
                    "darkest 1 % sits at 0. Send the scanner's series where you can")
        # sub-0.8 mm grids (512-matrix reconstructions) are averaged to about 1 mm on those axes (workflow 1.23.0)
        ctx.b0, ctx.f0 = _both(lambda v: coarsened_fine_axes(v, cfg.fine_grid_below_mm, cfg.fine_grid_target_mm),
                               b0, f0, cfg.concurrent_timepoints)
        for name, given, used in (("baseline", b0, ctx.b0), ("followup", f0, ctx.f0)):
            if used is not given:  # coarsened_fine_axes returns the image itself when no axis is that fine
                st.parameters[f"{name}_spacing_mm_averaged_from"] = [round(x, 4) for x in given.spacing_mm]
                st.parameters[f"{name}_spacing_mm_analysed"] = [round(x, 4) for x in used.spacing_mm]
        st.engine = "neurorad.image"


def step_brain(ctx: MSContext) -> None:
    """2. Brain extraction of both time points; refuse empty or tiny masks.

    Side by side in two threads (``concurrent_timepoints``; since 1.5.3): deepbet's inference leaves
    part of the two cores idle (its connected components, hole filling and resizing are single-threaded),
    and the other image fills them (3.6 s instead of 4.4-4.6 s). Engines that are not reentrant wait for
    each other (``_engines.brain_mask``).
    """
    cfg = ctx.cfg
    with ctx.prov.step("brain", engine=cfg.brain_engine) as st:
        try:
            (mb, eng, wh), (mf, _, _) = _both(lambda v: _engines.brain_mask(v, cfg.brain_engine), ctx.b0, ctx.f0,
                                              cfg.concurrent_timepoints)
        except ProcessingError as exc:
            raise ProcessingError(f"brain extraction failed: {exc}") from exc
        st.engine, st.weights_sha256 = eng, wh
        # a skull-stripped series is zero outside its brain and the mask found on it again can keep part of that
        # rim; voxels without signal in either image are not compared (workflow 1.22.1: a baseline stripped
        # tighter than its follow-up gave "new lesions" where the baseline had no data)
        supports = _both(signal_support, ctx.b0, ctx.f0, cfg.concurrent_timepoints)
        ctx.support_b, ctx.support_f = supports
        masks = []
        for name, m, support in zip(("baseline", "follow-up"), (mb, mf), supports, strict=True):
            inside = np.asarray(m.data, bool)
            no_signal_ml = float(np.count_nonzero(inside & ~support)) * m.voxel_volume_mm3 / 1000
            st.parameters[f"{name.replace('-', '')}_mask_without_signal_ml"] = round(no_signal_ml, 2)
            if no_signal_ml >= NO_SIGNAL_WARNING_ML:
                ctx.warnings.append(f"{name}: {no_signal_ml:.1f} mL of the brain mask hold no signal (zero, as outside "
                                    "a skull-stripped series): left out of the comparison")
            masks.append(m.with_data(inside & support))
        mb, mf = masks
        for name, m in (("baseline", mb), ("follow-up", mf)):
            vol_ml = float(np.count_nonzero(m.data)) * m.voxel_volume_mm3 / 1000
            if vol_ml < cfg.min_brain_volume_ml:
                raise ProcessingError(f"{name} brain mask is empty or too small ({vol_ml:.0f} ml < "
                                      f"{cfg.min_brain_volume_ml:g} ml): not a brain image or extraction failed")
        for v, m in ((ctx.b0, mb), (ctx.f0, mf)):
            w = flair_contrast_warning(v, np.asarray(m.data, bool))
            if w:
                ctx.warnings.append(w)
        ctx.mb, ctx.mf = mb, mf


def step_register(ctx: MSContext) -> None:
    """3. Rigid registration follow-up -> baseline on skull-stripped, cropped images; both time
    points resampled into the halfway space on the coarser grid, the finer one anti-aliased."""
    cfg = ctx.cfg
    b0, f0, mb, mf = ctx.b0, ctx.f0, ctx.mb, ctx.mf
    assert b0 is not None and f0 is not None and mb is not None and mf is not None
    with ctx.prov.step("register", backend=cfg.registration_backend, transform="rigid",
                       crop_margin_mm=cfg.crop_margin_mm, elastix_iterations=cfg.elastix_iterations) as st:
        # skull-stripped and cropped to the brain's bounding box (+ margin): the same world
        # coordinates, a third of the voxels of a 256 x 256 x 176 head for elastix' pyramid,
        # its final resampling and the similarity check
        fixed = crop_to_mask(b0.with_data(np.where(mb.data, b0.data, 0).astype(np.float32)), mb,
                             cfg.registration_margin_mm)
        moving = crop_to_mask(f0.with_data(np.where(mf.data, f0.data, 0).astype(np.float32)), mf,
                              cfg.registration_margin_mm)
        try:
            reg = register(fixed, moving, transform_type="rigid", backend=cfg.registration_backend,
                           limits=RegistrationLimits(min_nmi=cfg.min_registration_nmi),
                           **({"iterations": cfg.elastix_iterations} if cfg.registration_backend == "elastix" else {}))
        except ProcessingError as exc:
            raise ProcessingError(f"follow-up to baseline {exc}") from exc
        T = reg.transform  # baseline world -> follow-up world
        # Both images are sampled in the HALFWAY space (each moved by half the motion), so both
        # carry the same interpolation blur and noise reduction (an asymmetric resampling makes
        # the resampled image smoother and creates false differences at every edge).
        # common -> baseline world = H^-1, common -> follow-up world = H, with H o H = T.
        ref, ctx.b_c, ctx.f_c, Tb, Tf, how = resample_pair(b0, f0, mb, mf, T, cfg)
        st.parameters["common_grid"] = how
        mb_c, mf_c = _both(lambda mt: resample(mt[0], ref, mt[1], "nearest"), (mb, Tb), (mf, Tf),
                           cfg.concurrent_timepoints)
        brain = mb_c.data.astype(bool) & mf_c.data.astype(bool)
        if cfg.fov_coverage:
            covered = coverage_mask(b0, f0, ref, T, Tb, Tf, cfg, brain)
            st.parameters["brain_voxels_outside_both_fields_of_view"] = int(np.count_nonzero(brain & ~covered))
            brain &= covered
        if ctx.support_b is not None and ctx.support_f is not None:
            with_signal = signal_coverage(b0, f0, ctx.support_b, ctx.support_f, ref, T, Tb, Tf, cfg, brain,
                                          region_covered=cfg.fov_coverage)
            st.parameters["brain_voxels_reading_no_signal"] = int(np.count_nonzero(brain & ~with_signal))
            brain &= with_signal
        if not brain.any():
            raise ProcessingError("brain masks of the two time points do not overlap after registration")
        ctx.ref, ctx.Tb, ctx.Tf, ctx.brain = ref, Tb, Tf, brain
        ctx.finer_input_voxel_mm = finer_input_voxel_mm(b0, f0)
        st.parameters["finer_input_voxel_mm"] = round(ctx.finer_input_voxel_mm, 3)
        ctx.crossed_slices = crossed_slices(b0, f0)
        st.parameters["crossed_slices"] = ctx.crossed_slices
        st.engine = f"preprocess.registration:{reg.backend}"
        st.parameters.update(nmi_before=round(reg.nmi_before, 4), nmi_after=round(reg.nmi_after, 4),
                             rotation_deg=round(T.rotation_deg, 2),
                             transform_baseline_to_followup=np.round(T.matrix, 5).tolist(),
                             transform_common_to_followup=np.round(Tf.matrix, 5).tolist())
        for key, p in ctx.extra_in.items():
            if p is None:
                continue
            v = reorient(load_input(p, key), "RAS")
            v = v.with_data(np.asarray(v.data, np.float32))
            ctx.prov.inputs[key] = input_hash(p)
            target, t_to = (b0, Tb) if key.startswith("baseline") else (f0, Tf)
            try:
                rr = register(target, v, transform_type="rigid", backend=cfg.registration_backend,
                              limits=RegistrationLimits(min_nmi=1.0))
            except ProcessingError as exc:  # optional sequences never block the FLAIR result
                ctx.warnings.append(f"{key} not registered ({exc}); it is left out")
                continue
            ctx.extra_vols[key] = resample(v, ref, t_to.then(rr.transform), "linear")


def step_bias(ctx: MSContext) -> None:
    """4. N4 bias-field correction of both time points inside the common brain mask (concurrently)."""
    cfg = ctx.cfg
    assert ctx.ref is not None
    # the factors N4 fits with on the common grid (both time points are on it), computed once and recorded as used
    factors = n4_shrink_factors(ctx.ref.spacing_mm, cfg.n4_shrink, cfg.n4_shrink_mm, cfg.n4_fine_grid_sample_mm)
    sample_mm = cfg.n4_shrink_mm if cfg.n4_shrink_mm is not None else cfg.n4_fine_grid_sample_mm
    with ctx.prov.step("bias", shrink_factor=factors if isinstance(factors, int) else list(factors),
                       shrink_mm=cfg.n4_shrink_mm, fine_grid_sample_mm=cfg.n4_fine_grid_sample_mm,
                       iterations=list(cfg.n4_iterations),
                       nonpositive=cfg.n4_nonpositive, shift_medians=cfg.n4_shift_medians,
                       concurrent=cfg.concurrent_timepoints) as st:
        bm = ctx.ref.with_data(ctx.brain)
        (ctx.b_n, eng), (ctx.f_n, _) = _both(lambda v: _engines.n4(v, bm, factors, cfg.n4_iterations,
                                                                      cfg.n4_nonpositive, cfg.n4_shift_medians,
                                                                      sample_mm),
                                             ctx.b_c, ctx.f_c, cfg.concurrent_timepoints)
        st.engine = eng


def step_normalise(ctx: MSContext) -> None:
    """5. Joint intensity normalisation (baseline brain median = 1); registration check."""
    cfg = ctx.cfg
    brain = ctx.brain
    assert brain is not None and ctx.ref is not None
    with ctx.prov.step("normalise", method=cfg.normalisation) as st:
        bn, fn, eng, info = _engines.joint_normalise(ctx.b_n, ctx.f_n, brain, cfg.normalisation,
                                                     cfg.concurrent_timepoints)
        ctx.bn, ctx.fn = _both(lambda x: np.where(brain, x, 0).astype(np.float32), bn, fn, cfg.concurrent_timepoints)
        st.engine = eng
        st.parameters.update({k: round(v, 5) for k, v in info.items()})
        # registration check on the corrected pair: smoothed (4 mm FWHM) so noise does not count
        r = smoothed_correlation(ctx.bn, ctx.fn, brain, ctx.ref.spacing_mm)
        st.parameters["registration_check_correlation"] = round(r, 4)
        if not r >= cfg.min_registration_correlation:
            raise ProcessingError(f"registration failed: follow-up and baseline correlate only r={r:.2f} inside the "
                                  f"brain after registration (< {cfg.min_registration_correlation})")


def step_candidates(ctx: MSContext) -> None:
    """6. Difference map -> local z -> candidate score in [0, 1]."""
    with ctx.prov.step("candidates", **asdict(ctx.cfg.candidate)) as st:
        ctx.cand = candidate_score(ctx.bn, ctx.fn, ctx.brain, ctx.spacing_mm, ctx.cfg.candidate)
        st.engine = "segment.ms_difference"
        if ctx.cfg.lesion_engine != "classical":
            from neurorad.segment.ms_learned import apply_lesion_engine

            assert ctx.ref is not None
            ctx.cand, ctx.classical_score, ctx.learned_score, rec = apply_lesion_engine(
                ctx.cand, ctx.ref.with_data(ctx.bn), ctx.fn, ctx.brain, ctx.cfg.lesion_engine, ctx.cfg.learned,
                probability=ctx.learned_probability)
            # fusion: both engines made the score (the classical difference engine and the network)
            st.engine = (f"segment.ms_difference + {rec['engine']} (fusion)" if ctx.cfg.lesion_engine == "fusion"
                         else f"{rec['engine']} (learned)")
            st.weights_sha256 = rec["sha256"]
            st.parameters["learned_model"] = {k: rec[k] for k in ("name", "version", "sha256", "inference_engine",
                                                                  "mirror_axes")}
            st.parameters["learned_operating_point"] = rec["operating_point"]
        st.parameters["difference_sigma"] = round(ctx.cand.sigma, 5)


def step_postprocess(ctx: MSContext) -> None:
    """7. Binarise at 0.01, 26-connected components, keep > ``PostParams.min_volume_mm3`` (20 mm^3) with a voxel
    > ``min_peak_score`` (the lesion operating point, 0.0787)."""
    assert ctx.cand is not None and ctx.ref is not None
    with ctx.prov.step("postprocess", **asdict(ctx.cfg.post)) as st:
        # fusion: the classical engine's components here (its score); the learned engine's own detection runs
        # at the end of step 9 (_fuse_learned_lesions)
        ctx.labels0, ctx.n0 = binarise_components(ctx.cand.score, ctx.ref.voxel_volume_mm3, ctx.cfg.post)
        st.parameters["n_components"] = ctx.n0


def pair_classify_params(cfg: MSConfig, crossed: bool) -> ClassifyParams:
    """The ``ClassifyParams`` that steps 8-9 of ``cfg``'s engine use on a pair (``crossed``:
    :func:`crossed_slices`), in one place for both steps:

    * the learned engine's candidates (alone, or the fusion engine's learned branch) keep the candidate-wide peak
      percentile: the focal-peak delineation (``delineation_focal_ratio``, workflow 1.19.0) was chosen and validated
      on the classical engine's candidates, and a lesion the network finds where the subtraction shows only noise
      has a noise maximum;
    * on slices of two orientations each time point reads a lesion's half-maximum size through its own slice axis:
      the unchanged-enlarging check asks for ``crossed_min_volume_ratio`` (workflow 1.28.0) and the enlarging-lesion
      path, for the learned engine's candidates, for ``crossed_learned_rescue_ratio`` (at most that under the
      low-drift bound; workflow 1.29.0)."""
    p = cfg.classify
    learned = cfg.lesion_engine == "learned"
    if learned:
        p = replace(p, delineation_focal_ratio=None)
    if crossed and p.crossed_min_volume_ratio is not None:
        p = replace(p, enlarging_min_volume_ratio=p.crossed_min_volume_ratio)
    if crossed and learned and p.crossed_learned_rescue_ratio is not None:
        r, low = p.crossed_learned_rescue_ratio, p.rescue_growth_ratio_low_drift
        p = replace(p, rescue_growth_ratio=r, rescue_growth_ratio_low_drift=None if low is None else min(low, r))
    return p


def step_fp_reduction(ctx: MSContext, baseline_lesions: np.ndarray | None = None) -> None:
    """8. CAD centre-of-gravity rule, misregistration at tissue borders, brain border. ``baseline_lesions``: the
    mask this step makes, when the caller has it for the same pair and configuration (the fusion engine's learned
    branch, :func:`_fuse_learned_lesions`)."""
    cand = ctx.cand
    assert cand is not None
    with ctx.prov.step("fp_reduction", **asdict(ctx.cfg.fp)) as st:
        # the baseline lesions (step 9 classifies by them): a candidate touching none is held to the drift rule's
        # drift_ratio_new, and the enlarging-lesion path below reads them
        ctx.baseline_lesions = (baseline_lesions if baseline_lesions is not None else
                                baseline_lesion_mask(ctx.bn, ctx.brain, ctx.spacing_mm, cand.brain_median,
                                                     cand.brain_sigma, ctx.cfg.classify))
        # the fusion engine: each engine's candidates may be confirmed by the other's score
        # (FPParams.shift_confirm_score); the learned branch runs with lesion_engine "learned"
        other = None
        if ctx.cfg.fp.shift_confirm_score is not None and ctx.classical_score is not None \
                and ctx.learned_score is not None:
            other = ctx.classical_score if ctx.cfg.lesion_engine == "learned" else ctx.learned_score
        ctx.labels, ctx.n, ctx.decisions = false_positive_reduction(
            ctx.labels0, ctx.n0, ctx.bn, ctx.fn, ctx.brain, ctx.spacing_mm, cand.sigma, cand.brain_median,
            cand.brain_sigma, ctx.cfg.fp, difference=cand.difference, tissue_level=cand.tissue_level,
            border_distance_mm=cand.border_distance_mm, score=cand.score,
            peak_percentile=ctx.cfg.classify.peak_percentile, baseline_lesions=ctx.baseline_lesions,
            touch_radius_mm=ctx.cfg.classify.touch_radius_mm, finer_input_voxel_mm=ctx.finer_input_voxel_mm,
            confirm=other, crossed_slices=ctx.crossed_slices,
        )
        # the enlarging-lesion path: a rim dropped as misregistration or drift next to a baseline lesion whose
        # half-maximum size grew is kept (ms_difference.rescue_grown_enlarging)
        rescue = pair_classify_params(ctx.cfg, ctx.crossed_slices)
        ctx.labels, ctx.n, ctx.decisions = rescue_grown_enlarging(
            ctx.labels0, ctx.n0, ctx.decisions, ctx.bn, ctx.fn, ctx.baseline_lesions, cand.tissue_level,
            ctx.spacing_mm, rescue)
        st.parameters["n_dropped"] = ctx.n0 - ctx.n
        st.parameters["rescue_growth_ratio"] = rescue.rescue_growth_ratio
        st.parameters["rescue_growth_ratio_low_drift"] = rescue.rescue_growth_ratio_low_drift
        st.parameters["rescue_low_drift_below"] = ctx.cfg.classify.rescue_low_drift_below
        st.parameters["kept_as_grown"] = [d.label for d in ctx.decisions if d.reason.startswith(KEPT_AS_GROWN)]
        st.parameters["dropped"] = [asdict(d) for d in ctx.decisions if not d.kept]
        diffuse = [d for d in ctx.decisions if d.reason.startswith(REASON_DIFFUSE)]
        if diffuse:
            # dropped from the lesion count, but never silently: the reader is told where to look
            ctx.warnings.append(
                f"{len(diffuse)} region(s) of diffuse FLAIR change not reported as lesions ("
                + "; ".join(d.reason.split(":")[0].removeprefix(REASON_DIFFUSE).strip(" ()") for d in diffuse)
                + "): a region-wide change (thick-slice partial volume, an intensity artefact) rather than a "
                "focal lesion; review the difference map"
                + ("; a region of tumefactive size may also be a large demyelinating lesion or another lesion type"
                   if any(TUMEFACTIVE_SIZE in d.reason for d in diffuse) else ""))


def step_classify(ctx: MSContext) -> None:
    """9. New vs enlarging; an enlarging candidate touching several baseline lesions judged per lesion (a part
    the false-positive rules drop leaves it); an enlarging lesion grown to its whole follow-up extent; every lesion
    delineated by the partial-volume rule."""
    cand, cfg = ctx.cand, ctx.cfg
    assert cand is not None
    classify = pair_classify_params(cfg, ctx.crossed_slices)
    with ctx.prov.step("classify", **asdict(classify)) as st:
        sp = ctx.spacing_mm
        base_les = ctx.baseline_lesions  # made in step 8 (the enlarging-lesion path reads it too)
        assert base_les is not None
        kinds = classify_new_enlarging(ctx.labels, ctx.n, base_les, sp, classify)
        # an enlarging candidate over two or more baseline lesions is judged per lesion: a stable neighbour's
        # drift rim leaves it (ms_difference.judge_enlarging_parts)
        labels, enl_decisions, changed = judge_enlarging_parts(
            ctx.labels, ctx.n, kinds, cand, ctx.bn, ctx.fn, ctx.brain, base_les, sp, cfg.fp, cfg.post, classify,
            ctx.finer_input_voxel_mm)
        if enl_decisions:
            st.parameters["enlarging_parts"] = {"parts": len(enl_decisions), "candidates_changed": changed,
                                                "dropped": [asdict(d) for d in enl_decisions if not d.kept]}
        if changed:  # a candidate that lost a part may touch no baseline lesion any more: classified again
            ctx.labels = labels
            kinds = classify_new_enlarging(ctx.labels, ctx.n, base_les, sp, classify)
        undropped = ctx.labels
        labels, ctx.n, ctx.kinds, dropped = drop_unchanged_enlarging(ctx.labels, ctx.n, kinds, ctx.bn, ctx.fn,
                                                                     base_les, cand.tissue_level, sp, classify)
        st.parameters["dropped_not_grown"] = dropped
        grow_args = (labels, ctx.n, ctx.kinds, ctx.fn, base_les, ctx.brain, sp, cand.brain_median, cand.brain_sigma)
        # an enlarging lesion's peak is read where the brain-wide test grew it: the local test's faint voxels reach
        # its edge but do not lower its peak (ms_difference.half_maximum_cores)
        peak_labels = enlarging_peak_labels(*grow_args, classify)
        labels, ctx.extents = grow_enlarging(*grow_args, classify, cand.tissue_level)
        # half maximum first; the partial-volume level once every separate lesion is in the map (below), so that
        # no lesion's sum reaches into another's
        delineated, peaks = half_maximum_cores(labels, ctx.n, ctx.kinds, cand.difference, classify, ctx.fn,
                                               cand.tissue_level, peak_labels)
        # a new lesion sharing a candidate with a brighter one, judged by the same false-positive rules
        n_before = ctx.n
        ctx.labels, ctx.n, ctx.kinds, part_decisions = add_separate_lesions(
            labels, delineated, ctx.n, ctx.kinds, cand, ctx.bn, ctx.fn, ctx.brain, base_les, sp, cfg.fp, classify,
            ctx.finer_input_voxel_mm)
        if part_decisions:
            st.parameters["separate_lesions"] = {"found": len(part_decisions), "kept": ctx.n - n_before,
                                                 "dropped": [asdict(d) for d in part_decisions if not d.kept]}
        # a new lesion beside a baseline lesion that did not grow: its candidate was dropped whole above
        parts, m = new_beside_unchanged(undropped, dropped if classify.split_beside_unchanged else [],
                                        cand.difference, cand.score, base_les, sp, classify)
        if classify.split_beside_dropped and ctx.labels0 is not None:
            # ... or whose drift or displaced edge made step 8 drop the whole candidate (step 8's numbering)
            fp_dropped = dropped_beside_baseline(ctx.decisions, ctx.labels0, ctx.n0, base_les, sp, classify)
            parts8, m8 = new_beside_unchanged(ctx.labels0, fp_dropped, cand.difference, cand.score, base_les, sp,
                                              classify)
            if m8:  # step 8's dropped candidates and step 9's share no voxel
                parts = np.where(parts8 > 0, parts8 + m, parts).astype(np.int32)
                m += m8
            st.parameters["beside_dropped_candidates"] = len(fp_dropped)
        if m:
            n_before = ctx.n
            ctx.labels, ctx.n, ctx.kinds, beside = judge_and_add_parts(
                parts, m, ctx.labels, ctx.n, ctx.kinds, cand, ctx.bn, ctx.fn, ctx.brain, sp, cfg.fp, classify,
                base_les, ctx.finer_input_voxel_mm)
            st.parameters["new_beside_unchanged"] = {"found": len(beside), "kept": ctx.n - n_before,
                                                     "dropped": [asdict(d) for d in beside if not d.kept]}
        ctx.labels = partial_volume_levels(ctx.labels, ctx.n, ctx.kinds, cand.difference, sp, classify, ctx.fn,
                                           cand.tissue_level, peaks)
        if cfg.lesion_engine == "fusion" and ctx.classical_score is not None and ctx.learned_score is not None:
            from neurorad.segment.ms_learned import disagreement_warning, engine_disagreement

            st.parameters["fusion"] = _fuse_learned_lesions(ctx)
            agreement = engine_disagreement(ctx.labels, ctx.n, ctx.classical_score, ctx.learned_score, cfg.learned,
                                            cfg.post.binarise_threshold)
            st.parameters["engine_agreement"] = agreement
            w = disagreement_warning(agreement)
            if w:
                ctx.warnings.append(w)


def _fuse_learned_lesions(ctx: MSContext) -> dict[str, Any]:
    """The fusion engine, after the classical engine's steps 7-9 ran on ``ctx``: the same steps on the learned
    engine's score (a copy of the context, its own provenance), then the union of the two engines' lesions
    (:func:`neurorad.segment.ms_learned.merge_engine_lesions`) written back to ``ctx``, whose candidate score
    becomes the voxel-wise maximum of the two for the lesion table. Returns the record of the step."""
    from neurorad.segment.ms_learned import fuse_scores, merge_engine_lesions

    assert ctx.cand is not None and ctx.classical_score is not None and ctx.learned_score is not None
    assert ctx.labels is not None
    branch = replace(ctx, cfg=replace(ctx.cfg, lesion_engine="learned"),
                     cand=replace(ctx.cand, score=ctx.learned_score), prov=Provenance(), warnings=[], labels0=None,
                     n0=0, labels=None, n=0, decisions=[], kinds=[], extents={})
    # the baseline lesions depend on the pair and the classify parameters only, not on the engine: the classical
    # run's mask is reused (0.1 s)
    step_postprocess(branch)
    step_fp_reduction(branch, baseline_lesions=ctx.baseline_lesions)
    step_classify(branch)
    assert branch.labels is not None
    n_c = ctx.n
    ctx.labels, ctx.n, ctx.kinds, ctx.extents = merge_engine_lesions(
        ctx.labels, ctx.n, ctx.kinds, ctx.extents, branch.labels, branch.n, branch.kinds, branch.extents)
    ctx.cand = replace(ctx.cand, score=fuse_scores(ctx.classical_score, ctx.learned_score))
    return {"classical_lesions": n_c, "learned_lesions": branch.n, "added_by_learned": ctx.n - n_c,
            "learned_dropped": [asdict(d) for d in branch.decisions if not d.kept]}


def step_atlas(ctx: MSContext) -> None:
    """10. Colin27 affine to the subject (reused across a patient's studies); AAL + JHU labels;
    lesion table with centroids in the follow-up's RAS mm."""
    cfg, cand, ref = ctx.cfg, ctx.cand, ctx.ref
    assert cand is not None and ref is not None and ctx.labels is not None
    ctx.lab_vol = ref.with_data(ctx.labels.astype(np.int16))
    with ctx.prov.step("atlas", transform=cfg.atlas_transform, spacing_mm=cfg.atlas_spacing_mm,
                       atlases=["AAL (aal.nii.gz)", "JHU white matter"]) as st:
        aal = jhu = None
        if cfg.atlas and ctx.n:
            try:
                atl, info = _atlas_labels(ctx)
                aal = component_regions(ctx.labels, ctx.n, *atl["aal"])
                jhu = component_regions(ctx.labels, ctx.n, *atl["jhu"])
                st.parameters.update(info)
                st.engine = f"preprocess.registration:{cfg.registration_backend} (Colin27 ch2bet)"
            except ProcessingError as exc:
                ctx.warnings.append(f"atlas registration failed ({exc}); lesion locations are missing")
        rows = lesion_table(ctx.lab_vol, ctx.n, ctx.kinds, cand.score, aal, jhu)
        for r in rows:
            ext = ctx.extents.get(r.id)
            if ext is not None:
                r.baseline_volume_mm3 = ext.baseline_volume_mm3
                r.volume_change_mm3 = round(r.volume_mm3 - ext.baseline_volume_mm3, 2)
        ctx.labels_fu, fu_counts, st.parameters["followup_grid"] = followup_grid_labels(ctx)
        own_thickness: dict[int, float] = {}
        if fu_counts:
            assert ctx.f_raw is not None and ctx.f0 is not None
            for r in rows:
                if r.id in fu_counts:  # a lesion delineated again on the follow-up's finer grid
                    r.volume_mm3 = round(fu_counts[r.id] * ctx.f_raw.voxel_volume_mm3, 2)
                    r.volume_change_mm3 = round(r.volume_mm3 - r.baseline_volume_mm3, 2)
                    r.diameter_mm = round(equivalent_diameter_mm(r.volume_mm3), 2)
                    r.n_voxels = fu_counts[r.id]
                    own_thickness[r.id] = float(max(ctx.f0.spacing_mm))
        w = shrunken_enlarging_warning(rows)
        if w:
            ctx.warnings.append(w)
        mark_volume_measurable(rows, input_slice_thickness_mm(ctx), cfg.classify, own_thickness)
        st.parameters["volume_rule"] = volume_rule_text(cfg.classify)
        # centroids are reported in the follow-up scanner's RAS mm (the exam being read)
        assert ctx.Tf is not None
        for r in rows:
            x = ctx.Tf.apply(np.array([[r.centroid_x_mm, r.centroid_y_mm, r.centroid_z_mm]]))[0]
            r.centroid_x_mm, r.centroid_y_mm, r.centroid_z_mm = (round(float(v), 1) for v in x)
        ctx.rows = rows


# the words of shrunken_enlarging_warning that tell it apart (bench/ms_benchmark.py counts the cases holding them)
SHRUNKEN_ENLARGING = "smaller at follow-up than the baseline lesion(s) touched"


def shrunken_enlarging_warning(rows: list[LesionRow]) -> str | None:
    """A quality warning for 'enlarging' lesions delineated smaller than the baseline lesions they touch.

    An enlarging lesion's follow-up volume is its half-maximum core (``delineate``); its baseline volume is the
    baseline hyperintensity it touches. A follow-up volume below the baseline one contradicts "enlarging": either the
    lesion grew little and the two rules disagree, or its candidate joined a neighbouring stable lesion and the
    partial-volume rule kept that lesion's brighter core, so the grown part may not be outlined at all (an
    independent-simulator pair: "enlarging, 170 mm3, baseline 624 mm3" 14 mm from the true lesion; docs/ms-lesions.md
    Known limits). The reader is asked to check the outline; nothing is dropped.
    """
    bad = [r for r in rows
           if r.kind == "enlarging" and r.baseline_volume_mm3 > 0 and r.volume_mm3 < r.baseline_volume_mm3]
    if not bad:
        return None
    listed = ", ".join(f"{r.id} ({r.volume_mm3:.0f} vs {r.baseline_volume_mm3:.0f} mm3)" for r in bad)
    return (f"enlarging lesion{'s' if len(bad) > 1 else ''} {listed} measure{'' if len(bad) > 1 else 's'} "
            f"{SHRUNKEN_ENLARGING}: the outline may hold a neighbouring stable lesion instead of the part that grew; "
            "check it against the difference map")


def input_slice_thickness_mm(ctx: MSContext) -> float:
    """The largest voxel spacing of either input FLAIR: both are resampled into one space, so the
    coarser one limits what can be measured. A context without the inputs (steps run alone) falls
    back to the common grid, which is the coarser input's."""
    vols = [v for v in (ctx.b0, ctx.f0) if v is not None] or [ctx.ref]
    return float(max(max(v.spacing_mm) for v in vols if v is not None))


def volume_note(slice_thickness_mm: float) -> str:
    """What the report says next to the volume of a lesion flagged by :func:`volume_measurable`."""
    return f"approximate: not measurable at {slice_thickness_mm:.3g} mm slices"


def mark_volume_measurable(rows: list[LesionRow], slice_thickness_mm: float, params: ClassifyParams,
                           own_thickness_mm: dict[int, float] | None = None) -> None:
    """Set each row's ``volume_measurable`` (and its ``volume_note`` when not) by the rule of
    :func:`neurorad.segment.ms_difference.volume_measurable` on its measured (delineated) volume.
    ``own_thickness_mm``: the slice thickness of the grid a lesion was delineated on, where that is not the coarser
    input's (a new lesion delineated on the follow-up's finer grid, :func:`followup_grid_labels`)."""
    for r in rows:
        t = (own_thickness_mm or {}).get(r.id, slice_thickness_mm)
        r.volume_measurable = volume_measurable(r.volume_mm3, t, params)
        r.volume_note = "" if r.volume_measurable else volume_note(t)


def followup_grid_labels(ctx: MSContext) -> tuple[Volume | None, dict[int, int], dict[str, Any]]:
    """The lesion labels on the follow-up's own grid (``new_lesions.nii.gz``, the DICOM SEG the reader reviews):
    the common grid's labels taken there by nearest neighbour and, when the follow-up's grid is the finer
    (:func:`neurorad.segment.ms_difference.finer_followup`: a thick-slice baseline against a 3D or thinner-slice
    follow-up), each new lesion, and each enlarging lesion's whole follow-up extent
    (``ClassifyParams.finer_followup_enlarging``), delineated again at the follow-up's resolution
    (:func:`neurorad.segment.ms_difference.delineate_on_finer_grid`, in a box around it: the baseline sampled
    there through the registration, the common brain mask taken there, tissue = brain voxels whose baseline
    reaches 0.6 x the box's brain median). A lesion never takes another's voxels, nor counts the change nearer to
    another; one whose finer delineation is not trusted keeps its mapped mask. An enlarging lesion's baseline
    volume stays the common grid's (the baseline's own, coarser grid): each time point is measured on its own
    grid. With ``ClassifyParams.thick_followup_redelineate`` (on since workflow 1.36.0) the same is done on a THICK
    follow-up that is not the finer grid (:func:`neurorad.segment.ms_difference.thick_followup`; slices of one
    orientation, and since 1.37.0 slices in two planes too: ``thick_followup_crossed``), reaching one slice, the
    baseline smoothed to the follow-up's slice profile: nearest neighbour from the common grid, whose slices fall
    between the follow-up's, can put a lesion one slice thick on the slice beside it.

    Returns ``(labels, voxel counts of the lesions delineated again, record for the atlas step's provenance)``;
    labels None for a context without the follow-up or the registration (detection steps run alone)."""
    cfg, classify = ctx.cfg, ctx.cfg.classify
    if ctx.lab_vol is None or ctx.f_raw is None or ctx.Tf is None:
        return None, {}, {"finer_followup": False}
    mapped = resample(ctx.lab_vol, ctx.f_raw, ctx.Tf.inverse(), "nearest")
    lab = np.asarray(mapped.data, np.int16).copy()
    ready = (ctx.f0 is not None and ctx.b0 is not None and ctx.ref is not None and ctx.Tb is not None
             and ctx.brain is not None)
    applies = ready and finer_followup(ctx.f0.spacing_mm, ctx.ref.spacing_mm, classify)
    thick = (ready and not applies and (not ctx.crossed_slices or classify.thick_followup_crossed)
             and thick_followup(ctx.f0.spacing_mm, classify))
    record: dict[str, Any] = {"finer_followup": applies}
    if thick:
        record["thick_followup"] = True
    counts: dict[int, int] = {}
    if not (applies or thick) or ctx.n == 0:
        return mapped.with_data(lab), counts, record
    assert ctx.f0 is not None and ctx.b0 is not None and ctx.Tb is not None and ctx.ref is not None
    assert ctx.brain is not None
    fu_to_baseline = ctx.Tf.inverse().then(ctx.Tb)
    brain = ctx.ref.with_data(np.asarray(ctx.brain, bool))
    smoothing_mm = (cfg.candidate.smoothing_fwhm_mm if classify.finer_followup_smoothing_fwhm_mm is None
                    else classify.finer_followup_smoothing_fwhm_mm)
    margin_mm = classify.finer_followup_shell_mm[1] + 2.0 * smoothing_mm + 2.0
    thick_axis = None
    baseline = ctx.b0
    if thick:  # the shell starts one slice out and the lesion may lie one slice over; the baseline takes the
        # follow-up's slice profile (antialias smooths only where the follow-up's voxel is the larger)
        thick_axis = int(np.argmax(ctx.f_raw.spacing_mm))  # the box is the follow-up's grid as stored
        margin_mm += 2.0 * float(max(ctx.f0.spacing_mm))
        baseline = antialias(ctx.b0, ctx.f0.spacing_mm)
    kept_mapped: list[int] = []
    for i, kind in enumerate(ctx.kinds, start=1):
        own = lab == i
        if not own.any() or (kind != "new" and not classify.finer_followup_enlarging):
            continue
        box = crop_to_mask(ctx.f_raw, own, margin_mm)
        lo = np.rint(ctx.f_raw.world_to_voxel(box.affine[:3, 3][None])[0]).astype(int)
        sl = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, box.spatial_shape, strict=True))
        b_box = np.asarray(resample(baseline, box, fu_to_baseline, "linear").data, np.float32)
        brain_box = np.asarray(resample(brain, box, ctx.Tf.inverse(), "nearest").data, bool)
        tissue = brain_box & (b_box >= 0.6 * float(np.median(b_box[brain_box]))) if brain_box.any() else brain_box
        sub = lab[sl]
        core = delineate_on_finer_grid(box.data, b_box, sub == i, tissue, box.spacing_mm, classify, smoothing_mm,
                                       whole_extent=kind != "new", others=(sub > 0) & (sub != i),
                                       thick_axis=thick_axis)
        if core is None:
            kept_mapped.append(i)
            continue
        sub[(sub == i) & ~core] = 0
        sub[core & (sub == 0)] = i
        counts[i] = int(np.count_nonzero(sub == i))
    record.update(followup_voxel_mm=[round(float(v), 3) for v in ctx.f_raw.spacing_mm],
                  delineated_on_followup_grid=sorted(counts), kept_common_grid_mask=kept_mapped)
    return mapped.with_data(lab), counts, record


def _atlas_labels(ctx: MSContext) -> tuple[dict[str, tuple[np.ndarray, dict[int, str]]], dict[str, Any]]:
    """AAL/JHU labels on the common grid: the Colin27 registration of either time point is reused
    when stored (same image content and atlas settings), else computed on the normalised baseline
    and stored for both time points."""
    cfg, ref = ctx.cfg, ctx.ref
    assert ref is not None and ctx.Tb is not None and ctx.Tf is not None
    key = f"{cfg.atlas_transform}:{cfg.atlas_spacing_mm:g}:{cfg.registration_backend}"
    hb, hf = ctx.prov.inputs.get("baseline"), ctx.prov.inputs.get("followup")
    common_to_colin = None
    info: dict[str, Any] = {}
    if cfg.atlas_reuse:
        for h, t_to, name in ((hb, ctx.Tb, "baseline"), (hf, ctx.Tf, "followup")):
            hit = cached_atlas_transform(h, key) if h else None
            if hit is not None:
                common_to_colin = t_to.then(hit)
                info["reused_from"] = name
                break
    if common_to_colin is None:
        _, nmi, common_to_colin = atlas_to_subject(ref.with_data(ctx.bn), ctx.brain, cfg.registration_backend,
                                                   cfg.atlas_transform, cfg.atlas_spacing_mm)
        info["nmi_after"] = round(nmi, 4)
        if cfg.atlas_reuse:
            for h, t_to in ((hb, ctx.Tb), (hf, ctx.Tf)):
                if h:
                    store_atlas_transform(h, key, t_to.inverse().then(common_to_colin))
    info["transform_subject_to_colin27"] = np.round(common_to_colin.matrix, 4).tolist()
    return atlas_labels(ref, common_to_colin), info


def step_decide(ctx: MSContext) -> None:
    """11. Active (>= 1 new or enlarging lesion whose peak score reaches ``MSConfig.activity_min_peak_score``) ->
    gadolinium recommended, else not; lesions under that score (low confidence), and a changed region of
    tumefactive size that step 8 did not count (its size bound), are left to the reader in the sentences."""
    with ctx.prov.step("decide") as st:
        unresolved = sum(not d.kept and TUMEFACTIVE_SIZE in d.reason for d in ctx.decisions)
        st.parameters["unresolved_regions"] = unresolved
        threshold = ctx.cfg.activity_min_peak_score
        counted, low = split_by_confidence([r.kind for r in ctx.rows], [r.max_score for r in ctx.rows], threshold)
        st.parameters["activity_min_peak_score"] = threshold
        st.parameters["low_confidence_lesions"] = [r.id for r in ctx.rows
                                                   if not counts_for_activity(r.max_score, threshold)]
        ctx.decision = ms_decision(counted, unresolved, low_confidence=low)


def step_outputs(ctx: MSContext) -> None:
    """12. NIfTI maps, lesions.csv; the report object (HTML/PDF and DICOM are written at the end)."""
    cfg, tmp, ref, cand = ctx.cfg, ctx.tmp, ctx.ref, ctx.cand
    assert ref is not None and cand is not None and ctx.lab_vol is not None and ctx.Tf is not None
    with ctx.prov.step("outputs") as st:
        assert ctx.labels_fu is not None  # made by the atlas step (followup_grid_labels)
        writes = [(ctx.labels_fu, "new_lesions.nii.gz"), (ref.with_data(cand.score.astype(np.float32)), "score.nii.gz"),
                  (ref.with_data(cand.difference), "difference.nii.gz"), (ref.with_data(ctx.bn), "baseline.nii.gz"),
                  (ref.with_data(ctx.fn), "followup.nii.gz"),
                  (ref.with_data(ctx.brain.astype(np.uint8)), "brain_mask.nii.gz"),
                  (ctx.lab_vol, "new_lesions_common.nii.gz")]
        writes += [(v, f"{key}_registered.nii.gz") for key, v in ctx.extra_vols.items()]
        # gzip compression is most of a NIfTI write and ISA-L releases the GIL: two at a time, in the background
        # while the report and DICOM are made (waited for before result.json; each file is still written
        # atomically by save_nifti)
        if cfg.concurrent_timepoints:
            ctx.background_writes = _BackgroundWrites(lambda item: save_nifti(item[0], tmp / item[1]), writes)
        else:
            _parallel(lambda item: save_nifti(item[0], tmp / item[1]), writes, False)
        write_lesion_csv(ctx.rows, tmp / "lesions.csv")
        ctx.files.update({
            "new_lesions": "new_lesions.nii.gz (labels 1..n, follow-up's own grid)",
            "new_lesions_common": "new_lesions_common.nii.gz (same labels, common space)",
            "score": "score.nii.gz (common space)", "difference": "difference.nii.gz (common space)",
            "baseline": "baseline.nii.gz (registered, normalised; common space)",
            "followup": "followup.nii.gz (registered, normalised; common space)",
            "brain_mask": "brain_mask.nii.gz (common space)", "lesions": "lesions.csv",
        })
        if cfg.write_report or cfg.write_dicom:
            from neurorad.pipelines.ms_report import MSReport, lesion_panels

            d = ctx.decision
            assert d is not None
            cents = [tuple(np.argwhere(ctx.labels == i).mean(0)) for i in range(1, ctx.n + 1)]
            images = lesion_panels(ctx.bn, ctx.fn, ctx.labels, ctx.kinds, cents, ctx.brain)
            ctx.report = MSReport(d.activity_text, d.gadolinium, d.gadolinium_reason, ctx.rows,
                                  _report_parameters(cfg), {}, images, ctx.warnings,
                                  gadolinium_label=d.gadolinium_label)
        st.engine = "neurorad.report/dicom"


class Step(NamedTuple):
    """One step of the methods section: its name, one line of what it does, its function."""

    name: str
    description: str
    run: Callable[[MSContext], None]


STEPS: list[Step] = [
    Step("load", "read, reorient to RAS, same patient, slice thickness < 5 mm", step_load),
    Step("brain", "brain extraction of both time points", step_brain),
    Step("register", "rigid registration follow-up -> baseline (mutual information), halfway space on the "
         "coarser grid, crop to brain + margin", step_register),
    Step("bias", "N4 bias-field correction of both time points (concurrently)", step_bias),
    Step("normalise", "joint-histogram linear fit, then Nyul landmark (or histogram) matching", step_normalise),
    Step("candidates", "difference map normalised by local tissue statistics -> score in [0, 1], gated by "
         "brain/tissue/hyperintensity", step_candidates),
    Step("postprocess", f"score > {PostParams().binarise_threshold:g}, 26-connected components, keep > "
         f"{PostParams().min_volume_mm3:g} mm3 with a voxel > {PostParams().min_peak_score:g}", step_postprocess),
    Step("fp_reduction", "CAD centre-of-gravity rule, misregistration at tissue borders, brain border",
         step_fp_reduction),
    Step("classify", "new vs enlarging (touches a baseline lesion); an enlarging candidate over several baseline "
         "lesions judged per lesion; enlarging grown to its whole follow-up extent; partial-volume delineation",
         step_classify),
    Step("atlas", "Colin27 affine to the subject (reused across a patient's studies); AAL + JHU labels; lesion "
         "table", step_atlas),
    Step("decide", "active when >= 1 new or enlarging lesion with a peak score >= 0.23 (lower: low confidence, "
                   "the reader decides); gadolinium only when active", step_decide),
    Step("outputs", "NIfTI, CSV, JSON, HTML/PDF report, DICOM SEG + Encapsulated PDF + secondary capture",
         step_outputs),
]
_STEP_NAMES = frozenset(s.name for s in STEPS)
#: what a run's ``progress`` callback is told, in order: each step, then the report and DICOM writing
PROGRESS_STAGES: tuple[str, ...] = (*(s.name for s in STEPS), "report_dicom")


# ------------------------------------------------------------------------------------------ run
def run_ms_lesions(
    baseline: str | Path | Volume,
    followup: str | Path | Volume,
    out_dir: str | Path,
    config: MSConfig = MSConfig(),
    baseline_t1: str | Path | None = None,
    followup_t1: str | Path | None = None,
    baseline_t2: str | Path | None = None,
    followup_t2: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> MSResult:
    """Run the workflow on one FLAIR pair and write every output into ``out_dir`` (all or nothing).

    Optional T1/T2 images are registered to the baseline FLAIR and kept for viewing
    (``<name>_registered.nii.gz``); detection uses FLAIR only.
    Raises :class:`InputError` (bad input) or :class:`ProcessingError` (a step's result cannot be
    trusted, e.g. failed registration or empty brain mask).
    """
    cfg = config
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError("output folder exists and is not empty (use overwrite)", out)
    with atomic_dir(out, prefix=".tmp-ms-", follow_umask=True) as tmp:
        ctx = MSContext(cfg, tmp, baseline, followup,
                        {"baseline_t1": baseline_t1, "followup_t1": followup_t1,
                         "baseline_t2": baseline_t2, "followup_t2": followup_t2})
        result = _run(ctx, progress)
    result.out_dir = out
    return result


def _run(ctx: MSContext, progress: Callable[[str], None] | None, first_step: int = 0) -> MSResult:
    """Run :data:`STEPS` in order on ``ctx`` (from ``first_step``: the benchmark runs steps 1-5 once
    and the detection steps per engine), then write result.json, the report and DICOM."""
    # CPU seconds per step (all threads of this process): on a shared machine wall time is
    # inflated by other load, CPU time is not
    cpu_s: dict[str, float] = {}
    cpu_start = time.process_time()
    t_start = time.perf_counter()
    try:
        for step in STEPS[first_step:]:
            if ctx.f_raw is not None:
                _start_reference_writer(ctx)
            if progress is not None:
                progress(step.name)
            c0 = time.process_time()
            step.run(ctx)
            cpu_s[step.name] = round(time.process_time() - c0, 3)
        if progress is not None:
            progress(PROGRESS_STAGES[-1])
        return _finish(ctx, cpu_s, cpu_start, t_start)
    finally:
        if ctx.reference_writer is not None:  # a failed run: stop the child (a finished one was collected)
            ctx.reference_writer.cancel()
            ctx.reference_writer = None
        if ctx.background_writes is not None:  # a failed run: its NIfTI writes end before the folder goes
            ctx.background_writes.cancel()
            ctx.background_writes = None


def _finish(ctx: MSContext, cpu_s: dict[str, float], cpu_start: float, t_start: float) -> MSResult:
    """result.json, the report and DICOM, after the steps of :func:`_run`."""
    c0 = time.process_time()
    prov, cfg, decision, rows = ctx.prov, ctx.cfg, ctx.decision, ctx.rows
    assert decision is not None and ctx.ref is not None
    timings = {s.name: s.seconds for s in prov.steps}
    timings["total"] = round(time.perf_counter() - t_start, 3)
    result_json = {
        "workflow": "ms-lesions",
        "version": __version__,
        "decision": {
            "status": "active" if decision.active else (
                "low-confidence lesions only: reader to decide" if decision.low_confidence else "no new lesion"),
            "active": decision.active,
            "activity": decision.activity_text,
            "gadolinium_recommended": decision.gadolinium,
            "gadolinium_reason": decision.gadolinium_reason,
            "unresolved_regions": decision.unresolved_regions,
            "low_confidence_lesions": decision.low_confidence,
            "activity_min_peak_score": cfg.activity_min_peak_score,
            "gadolinium": decision.gadolinium_label,
        },
        "counts": {"new": decision.n_new, "enlarging": decision.n_enlarging, "total": ctx.n},
        "volumes_mm3": {
            "new": round(sum(r.volume_mm3 for r in rows if r.kind == "new"), 2),
            "enlarging": round(sum(r.volume_mm3 for r in rows if r.kind == "enlarging"), 2),
            # lesions whose volume is not measurable at this slice thickness (their measured,
            # approximate volume is included in the totals above)
            "n_not_measurable": sum(not r.volume_measurable for r in rows),
        },
        "volume_rule": {"rule": volume_rule_text(cfg.classify),
                        "delineation": delineation_rule_text(pair_classify_params(cfg, ctx.crossed_slices)),
                        "slice_thickness_mm": round(input_slice_thickness_mm(ctx), 3)},
        "lesions": [asdict(r) | {"location": r.location} for r in rows],
        "common_space": {
            "description": "the coarser FLAIR grid (RAS; baseline on ties) cropped to the brain + margin",
            "shape": list(ctx.ref.spatial_shape), "affine": np.round(ctx.ref.affine, 5).tolist(),
            "to_followup_world": "provenance register step: transform_common_to_followup (RAS mm)",
        },
        "files": ctx.files,
        "warnings": ctx.warnings,
        "parameters": cfg.to_dict(),
        "steps": [s.name for s in STEPS],
        "timings_s": timings,
        "provenance": prov.to_dict(),
    }
    report = ctx.report
    if report is not None:
        report.provenance = {"software": prov.software, "inputs": prov.inputs,
                             "engines": {s.name: s.engine for s in prov.steps if s.engine},
                             "weights_sha256": {s.name: s.weights_sha256 for s in prov.steps if s.weights_sha256}}
        t0 = time.perf_counter()
        writer, ctx.reference_writer = ctx.reference_writer, None
        _write_report_and_dicom(report, cfg, ctx.tmp, ctx.f_raw, ctx.labels_fu, rows, ctx.files, writer)
    if ctx.background_writes is not None:  # the NIfTI maps of step 12, written meanwhile
        writes, ctx.background_writes = ctx.background_writes, None
        writes.wait()
    if report is not None:
        timings["report_dicom"] = round(time.perf_counter() - t0, 3)
    timings["total"] = round(time.perf_counter() - t_start, 3)
    cpu_s["report_dicom"] = round(time.process_time() - c0, 3)
    cpu_s["total"] = round(time.process_time() - cpu_start, 3)
    result_json["cpu_s"] = cpu_s
    (ctx.tmp / "result.json").write_text(json.dumps(result_json, indent=2, default=_json_default), encoding="utf-8")
    return MSResult(ctx.tmp, decision, rows, ctx.warnings, timings, ctx.files, ctx.labels_fu, cpu_s)


def _report_parameters(cfg: MSConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    d.pop("write_report", None)
    d.pop("write_dicom", None)
    d.pop("reference_series_process", None)
    d["volume_rule"] = volume_rule_text(cfg.classify)
    return d


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _dicom_source_datasets(f_raw: Volume) -> list:
    """The follow-up's own DICOM datasets when it was read from a DICOM folder (its series only); else []."""
    import pydicom

    if not _has_dicom_source(f_raw):
        return []
    uid = f_raw.metadata["dicom"].get("SeriesInstanceUID")
    dss = []
    for p in sorted(Path(f_raw.metadata["source"]).rglob("*")):
        if p.is_file():
            try:
                ds = pydicom.dcmread(p)
            except Exception:  # noqa: BLE001 - non-DICOM files in the folder are skipped
                continue
            if getattr(ds, "SeriesInstanceUID", None) == uid and hasattr(ds, "PixelData"):
                dss.append(ds)
    return dss


def _has_dicom_source(f_raw: Volume) -> bool:
    """Whether the follow-up was read from a DICOM folder (its datasets are then the SEG's references)."""
    src = f_raw.metadata.get("source")
    return bool(f_raw.metadata.get("dicom") and src and Path(src).is_dir())


#: where and how the follow-up's DICOM reference series is synthesised from a NIfTI input
_REFERENCE_DIR = ("dicom", "followup_reference")
_REFERENCE_SERIES = {"series_description": "FLAIR follow-up (synthesised from NIfTI)",
                     "attributes": {"MRAcquisitionType": "3D"}}


def _start_reference_writer(ctx: MSContext) -> None:
    """Start synthesising the follow-up's DICOM reference series in a child process (once per run), when the
    run writes DICOM, the input has no DICOM series of its own and ``MSConfig.reference_series_process``."""
    cfg, f_raw = ctx.cfg, ctx.f_raw
    if (ctx.reference_writer is not None or f_raw is None or not cfg.write_dicom or not cfg.reference_series_process
            or _has_dicom_source(f_raw) or ctx.tmp.joinpath(*_REFERENCE_DIR).exists()):
        return
    from neurorad.image.series_writer import SeriesWriterProcess

    ctx.reference_writer = SeriesWriterProcess(f_raw.with_data(np.asarray(f_raw.data, np.float32)),
                                               ctx.tmp.joinpath(*_REFERENCE_DIR), **_REFERENCE_SERIES)


def _source_datasets(f_raw: Volume, tmp: Path, files: dict[str, str], writer: Any = None) -> list:
    """The follow-up's DICOM datasets: read from its folder, or synthesised from the NIfTI (collected from
    ``writer``, the child process of :func:`_start_reference_writer`, when one ran; in this process otherwise,
    also when the child failed)."""
    import pydicom

    dss = _dicom_source_datasets(f_raw)
    if dss:
        return dss
    ref_dir = None
    if writer is not None:
        try:
            ref_dir = writer.result()
        except ProcessingError as exc:
            log.warning("synthesising the DICOM reference series in this process instead: %s", exc)
    if ref_dir is None:
        from neurorad.image.dicom_series import write_dicom_series

        ref_dir = write_dicom_series(f_raw.with_data(np.asarray(f_raw.data, np.float32)), tmp.joinpath(*_REFERENCE_DIR),
                                     overwrite=True, **_REFERENCE_SERIES)
    files["dicom_followup_reference"] = "dicom/followup_reference/ (synthesised: input was NIfTI)"
    return [pydicom.dcmread(p) for p in sorted(Path(ref_dir).glob("*.dcm"))]


def _write_report_and_dicom(report: Any, cfg: MSConfig, tmp: Path, f_raw: Volume, labels_fu: Volume,
                            rows: list[LesionRow], files: dict[str, str], writer: Any = None) -> None:
    from neurorad.pipelines.ms_report import render_html, render_pdf

    (tmp / "report.html").write_text(render_html(report), encoding="utf-8")
    render_pdf(report, tmp / "report.pdf")
    files.update({"report_html": "report.html", "report_pdf": "report.pdf"})
    if not cfg.write_dicom:
        return
    from neurorad.dicom import results as dres

    try:
        source = _source_datasets(f_raw, tmp, files, writer)
    except NeuroradError:
        raise
    (tmp / "dicom").mkdir(exist_ok=True)
    if rows:
        names = {r.id: f"Lesion {r.id} ({r.kind})" for r in rows}
        dres.write_seg(labels_fu, names, source, tmp / "dicom" / "seg.dcm")
        files["dicom_seg"] = "dicom/seg.dcm"
    mid = source[len(source) // 2]
    dres.write_encapsulated_pdf(tmp / "report.pdf", mid, tmp / "dicom" / "report_pdf.dcm")
    files["dicom_pdf"] = "dicom/report_pdf.dcm"
    if report.images:
        dres.write_secondary_captures([k.pixels for k in report.images], mid, tmp / "dicom" / "sc")
        files["dicom_sc"] = "dicom/sc/ (baseline | follow-up | overlay per lesion slice)"


__all__ = ["PROGRESS_STAGES", "STEPS", "Step", "MSConfig", "MSContext", "MSResult", "run_ms_lesions", "load_input",
           "check_pair"]
