"""The ICH pipeline on one CT or a pair: HU -> brain -> haematoma -> template -> morphology.

Follows the published paired-CT haemorrhage study (PAPERS.md D2): haematoma segmentation,
brain extraction, registration of each CT to the MNI152 template (linear then B-spline) with
Dice QC, then the morphometry (:mod:`neurorad.quantify.morphology`) in template space and the
clinical rules (:mod:`neurorad.clinical.ich`).

Volume and expansion use the haematoma on the CT's own grid (the clinical volume in mL; the
template warp rescales volumes by the Jacobian); SR index, diameters, axis type, centre and
centre movement use the haematoma warped onto the 1 mm template grid, as the paper measures
them "in template space". With ``space="native"`` (no registration: a fast preview and the
tests) they are measured on the CT grid reoriented to RAS, and location is not given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from neurorad.clinical import ich as rules
from neurorad.errors import InputError
from neurorad.image.ct import CTInfo, load_ct
from neurorad.image.geometry import reorient, resample_to_reference
from neurorad.image.volume import Volume
from neurorad.preprocess.ct_brain import ct_brain_mask
from neurorad.quantify.morphology import Shape, centre_movement, describe_shape
from neurorad.segment.haematoma import segment_haematoma

__all__ = ["ScanResult", "PairResult", "process_scan", "warp_haematoma", "compare", "location_class", "DEEP",
           "INFRATENTORIAL"]

#: AAL regions (Tzourio-Mazoyer et al. 2002) counted as deep (basal ganglia, thalamus) and
#: infratentorial (cerebellum, vermis); every other labelled region is lobar. The brainstem has
#: no AAL label: unlabelled voxels below z = -20 mm (MNI) count as infratentorial.
DEEP = ("Caudate", "Putamen", "Pallidum", "Thalamus")
INFRATENTORIAL = ("Cerebelum", "Vermis")
BRAINSTEM_Z_MM = -20.0


@dataclass
class ScanResult:
    """One CT: volumes on its grid, masks, shape and where it lies."""

    role: str
    ct: Volume
    info: CTInfo
    brain: Volume
    haematoma: Volume  # on the CT grid (RAS)
    volume_ml: float
    shape: Shape  # in template space (or native)
    space: str
    template_mask: Volume | None = None
    location: str = ""
    location_fractions: dict[str, float] = field(default_factory=dict)
    ivh_ml: float | None = None
    registration_dice: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class PairResult:
    prior: ScanResult
    current: ScanResult
    interval_h: float | None
    changes_mm: dict[str, float]
    direction: str
    expansion: rules.Expansion
    movement: Any
    obvious: bool
    axis_prior: str
    axis_current: str


@lru_cache(maxsize=1)
def _atlas_on_template() -> tuple[np.ndarray, dict[int, str], np.ndarray]:
    """AAL labels and a ventricle mask on the 1 mm template grid."""
    from neurorad import resources
    from neurorad.image.nifti import load_nifti
    from neurorad.preprocess.template_registration import template
    from neurorad.quantify.atlas import load_atlas

    t1, mask = template(1.0)
    aal = load_atlas("AAL", resources.mricron("aal.nii.gz"), resources.mricron("aal.nii.txt"))
    labels = resample_to_reference(aal.volume, t1, "nearest").data.astype(np.int32)
    gm = resample_to_reference(load_nifti(resources.mni152("gm")), t1, "linear").data
    wm = resample_to_reference(load_nifti(resources.mni152("wm")), t1, "linear").data
    from scipy import ndimage

    inside = np.asarray(mask.data) > 0
    depth = ndimage.distance_transform_edt(inside)
    vent = inside & (gm < 0.2) & (wm < 0.2) & (depth > 15)
    return labels, aal.names, vent


def location_class(mask_template: Volume) -> tuple[str, dict[str, float]]:
    """``deep``, ``lobar`` or ``infratentorial`` (the class holding most haematoma voxels) from AAL."""
    labels, names, _ = _atlas_on_template()
    m = np.asarray(mask_template.data) > 0
    if not m.any():
        return "", {}
    lab = labels[m]
    z = (np.argwhere(m) @ mask_template.affine[:3, :3].T + mask_template.affine[:3, 3])[:, 2]
    counts = {"deep": 0, "lobar": 0, "infratentorial": 0}
    for value, n in zip(*np.unique(lab, return_counts=True), strict=True):
        if value == 0:
            continue
        name = names.get(int(value), "")
        cls = ("deep" if name.startswith(DEEP) else "infratentorial" if name.startswith(INFRATENTORIAL) else "lobar")
        counts[cls] += int(n)
    counts["infratentorial"] += int(np.sum((lab == 0) & (z < BRAINSTEM_Z_MM)))
    total = sum(counts.values())
    if total == 0:
        return "", {}
    fractions = {k: round(v / total, 3) for k, v in counts.items()}
    return max(counts, key=lambda k: counts[k]), fractions


def _ivh_ml(mask_template: Volume) -> float:
    _, _, vent = _atlas_on_template()
    return float(np.sum((np.asarray(mask_template.data) > 0) & vent) * mask_template.voxel_volume_mm3 / 1000.0)


def process_scan(path: str | Path, role: str, engine: str = "classical", space: str = "template",
                 min_dice: float = 0.93, measure_stage: str = "linear") -> ScanResult:
    """Load, segment, register and measure one CT.

    ``measure_stage``: the haematoma is measured after the ``linear`` (default) or the ``nonlinear``
    registration step. Both steps are run and QC-checked, and location uses the non-linear one;
    the B-spline, however, reshapes the haematoma itself (the template has no lesion there): on
    an ich-pair phantom it changed the haematoma volume by +37 % unmasked and by -34 to -47 % with
    the lesion filled, while the affine only rescales globally (+6 %). The paper measured after its
    non-linear steps; ``nonlinear`` reproduces that."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    ct, info = load_ct(path)
    seconds["load"] = time.perf_counter() - t
    t = time.perf_counter()
    brain = ct_brain_mask(ct)
    seconds["brain"] = time.perf_counter() - t
    t = time.perf_counter()
    haem = segment_haematoma(ct, brain, engine)
    seconds["segment"] = time.perf_counter() - t
    volume_ml = float(np.count_nonzero(haem.data) * ct.voxel_volume_mm3 / 1000.0)
    if space == "native":
        from neurorad.image.geometry import resample_to_spacing

        # shape on a 1 mm isotropic grid, as in template space (thick slices would otherwise be staircases)
        iso = resample_to_spacing(reorient(haem, "RAS").with_data(np.asarray(haem.data, np.float32)), 1.0)
        shape = describe_shape(iso.with_data((iso.data >= 0.5).astype(np.uint8)))
        return ScanResult(role, ct, info, brain, haem, volume_ml, shape, "native", seconds=seconds)
    if space != "template":
        raise InputError(f"unknown measurement space {space!r} (template, native)")
    from neurorad.preprocess.template_registration import register_to_template

    t = time.perf_counter()
    reg = register_to_template(ct, brain, min_dice=min_dice, lesion_mask=haem)
    seconds["register"] = time.perf_counter() - t
    t = time.perf_counter()
    linear, warped = warp_haematoma(reg, haem)
    measured = warped if measure_stage == "nonlinear" else linear
    shape = describe_shape(measured)
    loc, fr = location_class(warped)
    seconds["measure"] = time.perf_counter() - t
    return ScanResult(role, ct, info, brain, haem, volume_ml, shape, "template", measured, loc, fr, _ivh_ml(warped),
                      dict(reg.dice), seconds)


def warp_haematoma(reg: Any, haem: Volume, margin_mm: float = 12.0) -> tuple[Volume, Volume]:
    """The haematoma warped onto the 1 mm template grid after the linear and after the non-linear step.

    Only the template sub-grid around the haematoma is resampled (found with a 3 mm warp of the
    cropped mask, grown by ``margin_mm``), then placed into the full grid: the same voxels as a
    whole-grid warp at a fraction of its cost. Falls back to the whole grid when the haematoma
    reaches the sub-grid's border."""
    from neurorad.image.geometry import crop_to_mask
    from neurorad.preprocess.template_registration import template

    t1 = template(1.0)[0]
    full = t1.spatial_shape
    m = np.asarray(haem.data) > 0
    if not m.any():
        empty = t1.with_data(np.zeros(full, np.uint8))
        return empty, empty
    src = crop_to_mask(haem.with_data(m.astype(np.float32)), m, margin_mm=4.0)
    coarse = template(3.0)[0]
    near = np.zeros(coarse.spatial_shape, bool)
    for stage in ("linear", "nonlinear"):
        near |= reg.warp(src, coarse, stage, order=1).data > 0.01
    if not near.any():
        empty = t1.with_data(np.zeros(full, np.uint8))
        return empty, empty
    idx = np.argwhere(near)
    corners = np.array([[a, b, c] for a in (idx[:, 0].min(), idx[:, 0].max()) for b in (idx[:, 1].min(),
                        idx[:, 1].max()) for c in (idx[:, 2].min(), idx[:, 2].max())], float)
    world = corners @ coarse.affine[:3, :3].T + coarse.affine[:3, 3]
    vox = (world - t1.affine[:3, 3]) @ np.linalg.inv(t1.affine[:3, :3]).T
    pad = np.ceil(margin_mm / np.asarray(t1.spacing_mm)).astype(int)
    lo = np.clip(np.floor(vox.min(0)).astype(int) - pad, 0, full)
    hi = np.clip(np.ceil(vox.max(0)).astype(int) + pad + 1, 0, full)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub_affine = t1.affine.copy()
    sub_affine[:3, 3] = t1.affine[:3, :3] @ lo + t1.affine[:3, 3]
    sub = Volume(np.zeros(tuple(int(b - a) for a, b in zip(lo, hi, strict=True)), np.uint8), sub_affine)
    out = []
    for stage in ("linear", "nonlinear"):
        w = np.asarray(reg.warp_mask(src, sub, stage).data)
        touches = any(w.take(i, axis=ax).any() for ax in range(3) for i in (0, -1)
                      if (lo[ax] > 0 if i == 0 else hi[ax] < full[ax]))
        if touches:  # the sub-grid was too small: warp onto the whole grid
            out.append(reg.warp_mask(src, t1, stage))
            continue
        grid = np.zeros(full, np.uint8)
        grid[box] = w
        out.append(t1.with_data(grid))
    return out[0], out[1]


def compare(prior: ScanResult, current: ScanResult, interval_h: float | None,
            direction_tolerance_mm: float = rules.DIRECTION_TOLERANCE_MM) -> PairResult:
    """Pair measurements (PAPERS.md D2.6-D2.7)."""
    d0, d1 = prior.shape.diameters, current.shape.diameters
    ch = rules.length_changes(d0, d1)
    a0, a1 = rules.axis_type(d0), rules.axis_type(d1)
    he = rules.expansion(prior.volume_ml, current.volume_ml)
    mv = (centre_movement(prior.shape.centre_mm, current.shape.centre_mm)
          if prior.shape.centre_mm is not None and current.shape.centre_mm is not None else None)
    obvious = rules.obvious_change(ch, mv.distance_mm if mv else 0.0, a0, a1)
    return PairResult(prior, current, interval_h, ch, rules.direction_change(ch, direction_tolerance_mm), he, mv,
                      obvious, a0, a1)
