"""Registration of a skull-stripped head CT to the MNI152 template, linear then B-spline, with the
published Dice quality control.

The ICH morphology study (PAPERS.md D2.4-D2.5) registers every CT to the MNI152 ICBM 2009c
non-linear symmetric template with two linear and two non-linear (B-spline) ANTs steps and
rejects a pair when the Dice overlap of the registered brain with the template is < 0.93 after
any step. Here:

* **template**: nilearn's MNI152 ICBM **2009a** non-linear symmetric T1 (brain only, 1 mm) and
  its brain mask (T1 > 0) stand in for 2009c, which is not redistributable offline; the two
  differ in processing, not in space (both are MNI152 non-linear symmetric). Registration runs
  at ``spacing_mm`` (3 mm) for speed; masks are then warped onto the 1 mm template grid;
* **lesion filling**: the haematoma and 8 mm around it are filled with the median brain HU
  (the template has none; see :func:`register_to_template`);
* **linear step**: elastix rigid then affine (Mattes mutual information, adaptive stochastic
  gradient descent; Klein et al., IEEE TMI 2010);
* **non-linear step**: elastix B-spline (free-form deformation, Rueckert et al., IEEE TMI 1999)
  with a control-point grid refined over two resolutions down to ``grid_mm`` (16 mm), mutual
  information plus elastix's default bending-energy penalty, started from the linear result;
* **QC** after each step: Dice of the warped CT brain mask with the template brain mask on the
  registration grid; below ``min_dice`` (0.93) the registration is refused with a
  :class:`ProcessingError` that names the step and the Dice. The linear QC runs before the
  B-spline starts.

Settings (:data:`DEFAULTS`: resolutions, iterations, samples) were chosen for time: halving the
iterations and samples and dropping one B-spline resolution cut the registration's CPU time by
~60 % with unchanged diameters and location and a non-linear Dice lower by <= 0.004 on the
benchmark phantoms (docs/ich.md, "Time per pair").

Transforms stay elastix parameter objects (the deformation is warped with transformix);
nothing is written to disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from neurorad.errors import ProcessingError
from neurorad.image.geometry import resample_to_spacing
from neurorad.image.masks import dice
from neurorad.image.nifti import load_nifti
from neurorad.image.sitk_bridge import to_sitk
from neurorad.image.volume import Volume

__all__ = ["TEMPLATE_NAME", "template", "TemplateRegistration", "RegistrationQCError", "register_to_template",
           "MIN_DICE"]

TEMPLATE_NAME = "MNI152 ICBM 2009a non-linear symmetric (nilearn; stands in for 2009c)"
MIN_DICE = 0.93


class RegistrationQCError(ProcessingError):
    """The registered brain overlaps the template brain less than the QC threshold."""


@lru_cache(maxsize=4)
def template(spacing_mm: float = 1.0) -> tuple[Volume, Volume]:
    """The MNI152 T1 brain and its brain mask (uint8) on a ``spacing_mm`` grid (cached, read-only)."""
    from neurorad import resources

    t1 = load_nifti(resources.mni152("t1"), dtype=np.float32)
    if abs(spacing_mm - 1.0) > 1e-6:
        t1 = resample_to_spacing(t1, spacing_mm, "linear")
    mask = t1.with_data((t1.data > 0.05 * float(t1.data.max())).astype(np.uint8))
    for v in (t1, mask):
        v.data.setflags(write=False)
    return t1, mask


def _itk(vol: Volume):  # noqa: ANN202 - itk types are dynamic
    import itk
    import SimpleITK as sitk

    s = to_sitk(vol, dtype=np.float32)
    img = itk.GetImageFromArray(sitk.GetArrayViewFromImage(s).astype(np.float32))
    img.SetOrigin(s.GetOrigin())
    img.SetSpacing(s.GetSpacing())
    img.SetDirection(itk.matrix_from_array(np.asarray(s.GetDirection()).reshape(3, 3)))
    return img


def _grid_entries(ref: Volume) -> dict[str, list[str]]:
    s = to_sitk(Volume(np.zeros((1, 1, 1), np.uint8), ref.affine))
    return {"Size": [str(int(n)) for n in ref.spatial_shape], "Spacing": [repr(float(v)) for v in s.GetSpacing()],
            "Origin": [repr(float(v)) for v in s.GetOrigin()], "Direction": [repr(float(v)) for v in s.GetDirection()],
            "Index": ["0", "0", "0"]}


@dataclass
class TemplateRegistration:
    """The elastix transform chain (rigid, affine, B-spline) of one CT and its QC."""

    maps: list[dict[str, list[str]]]
    dice: dict[str, float]
    seconds: float
    parameters: dict[str, Any] = field(default_factory=dict)

    def warp(self, volume: Volume, reference: Volume, stage: str = "nonlinear", order: int = 1,
             default: float = 0.0) -> Volume:
        """``volume`` (on its CT grid) resampled onto ``reference``'s grid through the chain up to
        ``stage`` (``linear``: rigid + affine; ``nonlinear``: + B-spline); ``order`` 0 nearest, 1 linear."""
        import itk

        n = 2 if stage == "linear" else len(self.maps)
        po = itk.ParameterObject.New()
        for i, m in enumerate(self.maps[:n]):
            m = dict(m)
            if i == n - 1:
                m.update(_grid_entries(reference))
            m["FinalBSplineInterpolationOrder"] = [str(order)]
            m["ResampleInterpolator"] = ["FinalBSplineInterpolator"]
            m["DefaultPixelValue"] = [repr(float(default))]
            m["ResultImagePixelType"] = ["float"]
            po.AddParameterMap(m)
        # the same grid for every map of the chain: transformix takes the last map's grid
        for i in range(n - 1):
            m = po.GetParameterMap(i)
            for k, v in _grid_entries(reference).items():
                m[k] = v
            po.SetParameterMap(i, m)
        out = itk.transformix_filter(_itk(volume), po, log_to_console=False)
        arr = np.asarray(itk.GetArrayFromImage(out)).transpose(2, 1, 0)
        return Volume(np.ascontiguousarray(arr, dtype=np.float32), reference.affine.copy(),
                      {"space": TEMPLATE_NAME, "stage": stage})

    def warp_mask(self, mask: Volume, reference: Volume, stage: str = "nonlinear") -> Volume:
        """A binary mask warped (linear interpolation of its 0/1 values, then >= 0.5) onto ``reference``."""
        w = self.warp(mask.with_data(np.asarray(mask.data, np.float32)), reference, stage, order=1)
        return w.with_data((w.data >= 0.5).astype(np.uint8))


#: registration settings (elastix parameter-map values), chosen for <= 60 s per CT pair on 2 cores
#: with the QC Dice and the measured diameters unchanged on the benchmark phantoms (docs/ich.md)
DEFAULTS: dict[str, Any] = {"levels_linear": 3, "iterations_linear": 100, "levels_bspline": 2,
                            "iterations_bspline": 100, "grid_mm": 16.0, "samples": 2048, "seed": 1}


def _map(po, kind: str, params: dict[str, Any]) -> dict[str, list[str]]:  # noqa: ANN001
    p = {**DEFAULTS, **params}
    levels = int(p["levels_bspline" if kind == "bspline" else "levels_linear"])
    pm = po.GetDefaultParameterMap(kind, levels)
    pm["NumberOfHistogramBins"] = ["32"]
    pm["NumberOfSpatialSamples"] = [str(int(p["samples"]))]
    pm["RandomSeed"] = [str(int(p["seed"]))]
    pm["WriteResultImage"] = ["false"]
    pm["ResultImagePixelType"] = ["float"]
    pm["AutomaticScalesEstimation"] = ["true"]
    if kind == "rigid":
        pm["AutomaticTransformInitialization"] = ["true"]
        pm["AutomaticTransformInitializationMethod"] = ["CenterOfGravity"]
        pm["MaximumNumberOfIterations"] = [str(int(p["iterations_linear"]))]
    elif kind == "affine":
        pm["MaximumNumberOfIterations"] = [str(int(p["iterations_linear"]))]
    else:
        pm["FinalGridSpacingInPhysicalUnits"] = [repr(float(p["grid_mm"]))]
        pm["MaximumNumberOfIterations"] = [str(int(p["iterations_bspline"]))]
    return {k: list(v) for k, v in dict(pm).items()}


def _elastix(fixed: Volume, moving: Volume, maps: list[dict[str, list[str]]],
             initial: list[dict[str, list[str]]] | None, log: bool) -> list[dict[str, list[str]]]:
    """Run elastix with exactly ``maps`` (after the ``initial`` chain); the resulting maps."""
    import itk

    po = itk.ParameterObject.New()
    for m in maps:
        po.AddParameterMap(m)
    method = itk.ElastixRegistrationMethod.New(_itk(fixed), _itk(moving))
    method.SetParameterObject(po)  # without it elastix runs its own default translation/affine/B-spline maps
    if initial:
        ipo = itk.ParameterObject.New()
        for m in initial:
            ipo.AddParameterMap(m)
        method.SetInitialTransformParameterObject(ipo)
    method.SetLogToConsole(log)
    try:
        method.UpdateLargestPossibleRegion()
    except RuntimeError as err:  # elastix gives up (e.g. too few samples inside the images)
        raise ProcessingError(f"registration to the template failed in elastix ({str(err).splitlines()[-1][:200]})") \
            from err
    result = method.GetTransformParameterObject()
    return [{k: list(v) for k, v in dict(result.GetParameterMap(i)).items()}
            for i in range(result.GetNumberOfParameterMaps())]


def register_to_template(brain_ct: Volume, brain_mask: Volume, spacing_mm: float = 3.0, min_dice: float = MIN_DICE,
                         lesion_mask: Volume | None = None, lesion_margin_mm: float = 8.0, **params: Any
                         ) -> TemplateRegistration:
    """Register a skull-stripped CT (HU outside the brain ignored) to the template; QC after each step.

    ``brain_ct`` and ``brain_mask`` share the CT grid. ``lesion_mask`` (same grid; the haematoma)
    and ``lesion_margin_mm`` around it (perihaematomal oedema) are filled with the median brain HU
    ("lesion filling"), since the template has no haematoma. Neither variant keeps the lesion's
    shape through the B-spline (measured on one phantom: haematoma volume in template space +37 %
    unfilled, -34 % filled; +6 % after the affine), which is why the workflow measures shape after
    the linear step by default (:func:`neurorad.workflows.ich.pipeline.process_scan`).

    The linear step (rigid then affine) runs first and is QC-checked before the B-spline starts
    (which continues from it), so a refused scan costs only the linear step. ``params`` override
    :data:`DEFAULTS` (``levels_*``, ``iterations_*`` per resolution, ``grid_mm``, ``samples``,
    ``seed``, ``log``). Raises :class:`RegistrationQCError` when the Dice after the linear or the
    non-linear step is below ``min_dice``.
    """
    t0 = time.perf_counter()
    fixed, fixed_mask = template(spacing_mm)
    inside = np.asarray(brain_mask.data) > 0
    hu = np.clip(np.asarray(brain_ct.data, np.float32), -10, 90)
    if lesion_mask is not None and np.any(np.asarray(lesion_mask.data)):
        from neurorad.preprocess.ct_brain import distance_mm

        near = distance_mm(np.asarray(lesion_mask.data) > 0, tuple(brain_ct.spacing_mm)) <= lesion_margin_mm
        hu = np.where(near & inside, np.float32(np.median(hu[inside & ~near])), hu)
    moving = brain_ct.with_data(np.where(inside, hu + 20, 0.0).astype(np.float32))
    moving = resample_to_spacing(moving, spacing_mm, "linear")
    mask_lo = resample_to_spacing(brain_mask.with_data(inside.astype(np.float32)), spacing_mm, "linear")
    import itk

    po = itk.ParameterObject.New()
    log = bool(params.get("log", False))
    reg = TemplateRegistration([], {}, 0.0, {"spacing_mm": spacing_mm, "template": TEMPLATE_NAME,
                                             "min_dice": min_dice, **DEFAULTS, **params})
    fm = np.asarray(fixed_mask.data) > 0
    for stage, kinds in (("linear", ("rigid", "affine")), ("nonlinear", ("bspline",))):
        new = _elastix(fixed, moving, [_map(po, k, params) for k in kinds], reg.maps, log)
        # elastix returns the initial chain followed by the new maps
        reg.maps = new if len(new) == len(reg.maps) + len(kinds) else reg.maps + new
        warped = reg.warp(mask_lo, fixed, stage, order=1)
        reg.dice[stage] = round(dice(warped.data >= 0.5, fm), 4)
        if reg.dice[stage] < min_dice:
            raise RegistrationQCError(
                f"registration QC failed after the {stage} step: Dice of the registered brain with the template "
                f"{reg.dice[stage]:.3f} < {min_dice:.2f} (the published method excludes such scans)")
    reg.seconds = time.perf_counter() - t0
    return reg


def template_grid(spacing_mm: float = 1.0) -> Volume:
    """The template T1 (reference grid for measurements in template space)."""
    return template(spacing_mm)[0]
