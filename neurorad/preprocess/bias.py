"""N4 bias-field correction (Tustison et al., "N4ITK: Improved N3 Bias Correction",
IEEE TMI 2010), through SimpleITK.

The field is estimated on an image shrunk by ``shrink_factor`` (4 by default: ~10 s on a 1 mm
head; full resolution takes ~10 minutes) and then evaluated at full resolution, and the input
is divided by it. Without a mask, the field is fitted inside an Otsu head mask (ITK's default
would fit the background too).

N4's model is multiplicative (log intensities), so non-positive voxels (the zero border a
registered, resampled sequence gets outside its field of view, interpolation undershoot) are
raised to a floor of 1e-3 x the median positive intensity for the fit only, and the input itself is
divided by the field. An additive shift of the whole image (the former handling: +1 - min) breaks the
model on images whose intensities are of order 1 (phantoms, rescaled series): on the glioma
benchmark's registered 5 mm sequences it compressed the tumour's FLAIR contrast over white matter from
1.6 to 1.25 and drove T2 to a median 0.18x the input with 5 % of the brain negative.

The MS workflow wants a damped field in any units (``nonpositive="relative"``: a shift by two of the image's own
brain medians): removing the whole field made faint stable lesions read as new on its widened phantom pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import SimpleITK as sitk

from neurorad.errors import InputError
from neurorad.image.sitk_bridge import from_sitk, to_sitk
from neurorad.image.volume import Volume


def shrink_factors_for_spacing(spacing_mm: Sequence[float], target_mm: float) -> tuple[int, ...]:
    """Per-axis integer shrink factors that bring ``spacing_mm`` closest to ``target_mm`` (at least 1).

    N4's fit runs on a shrunk image (Tustison et al. 2010 fit on a down-sampled image; ANTs'
    ``N4BiasFieldCorrection -s``). One voxel count for every axis gives fit samples of very different
    physical size across protocols: shrink 4 is a 4 mm sample on a 1 mm grid but a 20 mm slab through
    5 mm slices. A physical target keeps the fit's sampling the same whatever the slice thickness.
    """
    if target_mm <= 0:
        raise InputError(f"N4 target spacing must be positive, got {target_mm} mm")
    return tuple(max(1, int(round(float(target_mm) / float(sp)))) for sp in spacing_mm)


def n4_shrink_factors(spacing_mm: Sequence[float], shrink: int, shrink_mm: float | None = None,
                      fine_grid_sample_mm: float | None = None) -> int | tuple[int, ...]:
    """The shrink factor(s) N4 fits with on a grid of ``spacing_mm``.

    * ``shrink_mm`` set: per axis towards that spacing on every grid (:func:`shrink_factors_for_spacing`);
    * else ``fine_grid_sample_mm`` set and the grid fine enough that ``shrink`` voxels sample finer than it on
      EVERY axis (``max(spacing_mm) * shrink < fine_grid_sample_mm``): per axis towards ``fine_grid_sample_mm``,
      which is then at least ``shrink`` on every axis. A 1 mm grid fits on 6 mm samples instead of 4 mm ones (N4's
      cost is proportional to its samples: 0.3x of them); a grid with a coarse axis (3-5 mm slices) keeps
      ``shrink`` voxels, whose samples are already 12-20 mm slabs along it;
    * else ``shrink`` voxels on every axis.

    Tustison et al. 2010 fit the field on a down-sampled image (ANTs' ``N4BiasFieldCorrection -s``); the field is
    smooth on the scale of the B-spline control grid (``spline_distance_mm``, 200 mm), far coarser than either
    sampling. MS workflow 1.21.0 (docs/ms-lesions-log.md "Workflow 1.21.0").
    """
    if shrink_mm is not None:
        return shrink_factors_for_spacing(spacing_mm, shrink_mm)
    if fine_grid_sample_mm is not None:
        if fine_grid_sample_mm <= 0:
            raise InputError(f"N4 fine-grid sample spacing must be positive, got {fine_grid_sample_mm} mm")
        if max(float(s) for s in spacing_mm) * shrink < fine_grid_sample_mm:
            return tuple(max(shrink, f) for f in shrink_factors_for_spacing(spacing_mm, fine_grid_sample_mm))
    return shrink


def n4_bias_correct(
    volume: Volume,
    mask: Volume | None = None,
    shrink_factor: int | Sequence[int] = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
    convergence_threshold: float = 1e-6,
    spline_distance_mm: float = 200.0,
    return_field: bool = False,
    progress: Callable[[int], None] | None = None,
    nonpositive: str = "floor",
    shift_medians: float = 2.0,
) -> Volume | tuple[Volume, Volume]:
    """Bias-corrected image (float32, same grid); optionally also the multiplicative field.

    ``iterations`` gives the maximum iterations per fitting level (its length is the number of
    levels); ``spline_distance_mm`` sets the B-spline control-point spacing of the field at the
    first level (200 mm, as ANTs' ``-b [200]`` recommendation; it halves at each level). A finer
    start (100 mm) left twice the residual white-matter variation in our Colin27 test.

    ``nonpositive``: ``"floor"`` (default; see the module docstring); ``"shift"``, the former handling
    (the whole image shifted by ``1 - min`` before the log and back after, when it holds a non-positive voxel);
    ``"relative"``: the whole image shifted by ``shift_medians`` times its median inside the mask (positive
    voxels; the whole image's without a mask), plus ``-min`` where the minimum is negative. "shift" adds one
    intensity unit, which is twice the brain median of an image in 0-1 units and 2 % of it on a 0-4095 one, so
    how much of the field N4 removes depended on the file's units; "relative" damps it the same way in any units
    (MS workflow 1.20.0: ``MSConfig.n4_nonpositive``, whose operating point was chosen on 0-1 phantom images with
    the one-unit shift, about two brain medians there).
    """
    src = volume.metadata.get("source")
    if volume.data.ndim != 3:
        raise InputError(f"N4 needs a 3D image, got shape {volume.shape}", src)
    volume.check_finite()
    given = np.atleast_1d(np.asarray(shrink_factor, dtype=float))
    if given.ndim != 1 or given.size not in (1, 3) or np.any(given < 1) or np.any(given != np.round(given)):
        raise InputError(f"shrink factor must be a whole number >= 1 (one, or one per axis), got {shrink_factor}",
                         src)
    shrink = [int(f) for f in np.broadcast_to(given, 3)]
    if not iterations or min(iterations) < 1:
        raise InputError("iterations must be a non-empty list of positive integers")
    data = np.asarray(volume.data, dtype=np.float32)
    if nonpositive not in ("floor", "shift", "relative"):
        raise InputError(f"nonpositive must be 'floor', 'shift' or 'relative', got {nonpositive!r}", src)
    if nonpositive == "relative" and not (np.isfinite(shift_medians) and shift_medians > 0):
        raise InputError(f"shift_medians must be a positive number, got {shift_medians}", src)
    positive = data[data > 0]
    if positive.size == 0:
        raise InputError("N4 needs a magnitude image with positive intensities", src)
    if mask is not None and not mask.same_grid(volume):
        raise InputError("mask is not on the image grid; resample it first", mask.metadata.get("source"))
    offset = 0.0
    if nonpositive == "shift" and data.min() <= 0:
        offset = float(1 - data.min())
    elif nonpositive == "relative":
        inside = data[(np.asarray(mask.data) > 0) & (data > 0)] if mask is not None else positive
        offset = float(shift_medians * np.median(inside if inside.size else positive) - min(float(data.min()), 0.0))
    # N4 works on log intensities: without a shift ("floor") raise non-positive voxels to a small floor for the fit
    # (an additive shift changes the multiplicative model, see the module docstring; "relative" wants that damping)
    floor = np.float32(1e-3 * float(np.median(positive)))
    img = to_sitk(volume.with_data(data + offset if offset else np.maximum(data, floor)))
    if mask is None:
        mask_img = sitk.OtsuThreshold(img, 0, 1, 200)
    else:
        if not np.any(mask.data):
            raise InputError("mask is empty", mask.metadata.get("source"))
        mask_img = to_sitk(mask.with_data(np.asarray(mask.data) > 0), np.uint8)
    # to_sitk keeps the array's axis order as ITK's (x, y, z) index order
    small = sitk.Shrink(img, shrink) if max(shrink) > 1 else img
    small_mask = sitk.Shrink(mask_img, shrink) if max(shrink) > 1 else mask_img
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([int(i) for i in iterations])
    n4.SetConvergenceThreshold(float(convergence_threshold))
    phys = np.asarray(small.GetSize()) * np.asarray(small.GetSpacing())
    n4.SetNumberOfControlPoints([max(4, int(round(p / spline_distance_mm)) + 3) for p in phys])
    if progress is not None:
        n4.AddCommand(sitk.sitkMultiResolutionIterationEvent, lambda: progress(1))
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(img)
    field = np.exp(from_sitk(log_field).data).astype(np.float32)
    corrected = (data + offset) / field - offset if offset else data / field
    out = volume.with_data(corrected.astype(np.float32), bias_correction={
        "method": "N4", "shrink_factor": shrink[0] if given.size == 1 else shrink,
        "iterations": list(iterations)})
    if return_field:
        return out, volume.with_data(field)
    return out
