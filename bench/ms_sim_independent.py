"""Independent simulator of longitudinal MS FLAIR pairs (baseline + follow-up head images) with ground truth.

Written from first principles (MRI physics and MS imaging knowledge) WITHOUT reading, importing or grepping the
project's own phantom, segmentation, pipeline, workflow or clinical code, its ``bench/ms_*.py`` scripts or its MS
documentation, so that the detector of new/enlarging lesions can be checked on data whose design it has never seen.
Only numpy, scipy and nibabel are used.

Design
------
1. **Template anatomy (cached once per process).**  Colin27 (``/usr/share/mricron/templates``): the T1 head
   ``ch2`` and its brain-only ``ch2bet`` on the same 1 mm grid.  Inside the brain mask (``ch2bet > 0``) a
   piecewise-linear partial-volume model on the T1 intensity ladder CSF 32 < GM 84 < WM 113 gives soft CSF/GM/WM
   fractions; outside it the ladder air 0 < dark (bone, extra-cerebral fluid) 20 < soft tissue (muscle, skin) 75 <
   fat 170 gives the head tissues.  The lateral (and third) ventricles are the CSF components inside a central box;
   their signed distance map drives periventricular placement and ventricle enlargement.  AAL (deep grey nuclei,
   cerebellum, cerebrum) and the JHU white-matter atlas (brainstem/cerebellar peduncle tracts) define the
   infratentorial region; the distance to cortical grey matter drives juxtacortical/deep placement.
   ``set_template("mni152")`` (added later by the project, outside this simulator's independent design; the
   benchmark's ``--phantom independent-mni152``) swaps the brain: MNI152 2009a's GM and WM probability maps
   (nilearn's copy; CSF = the rest of the brain, which is their union closed by 3 mm with its holes filled) on
   the MNI grid, inside Colin27's head tissues (``ch2`` outside its brain; where Colin27 has brain and MNI152
   none, extra-cerebral fluid). Everything after step 1 is unchanged; as the lesion sites differ between the
   brains, so do the random draws after them, and a seed gives other lesions and protocols in the other brain.
2. **Subject anatomy (per seed, shared by both time points).**  Head size: global scale U(0.92, 1.08) times a
   per-axis factor U(0.97, 1.03).  A smooth random non-linear deformation: cubic B-spline with control spacing
   U(22, 32) mm and coefficient SD U(0.8, 2.5) mm.  Ventricle enlargement (atrophy): the ventricles grow by
   e0 ~ U(0, 3.5) mm at baseline, replacing the adjacent tissue with CSF, and by a further U(0, 0.6) mm at
   follow-up.  A faint periventricular FLAIR rim (ependymal hyperintensity), strength U(0, 0.12) per time point.
3. **Lesions (template space, i.e. part of the object before any acquisition).**  Implicit star-shaped solids:
   1-3 ellipsoidal lobes with random low-order angular ripples; soft partial-volume edge (linear ramp of width
   U(0.8, 2.0) mm centred on the boundary, so occupancy >= 0.5 <=> inside).  Shapes: round, ovoid, irregular
   (multi-lobed), Dawson finger (ovoid, aspect U(2, 3.5), long axis along the ventricle-wall normal), periventricular
   band/cap (flattened along the normal).  Locations: "periventricular" (touching or within 3 mm of the enlarged
   lateral ventricles), "juxtacortical" (white matter touching the cortex, >= 6 mm from the ventricles), "deep"
   (>= 4 mm from ventricles and >= 2.5 mm from cortex, supratentorial), "infratentorial" (brainstem, cerebellar
   peduncles and cerebellar white matter).  Every lesion lies mainly in white matter (mean WM fraction >= 0.6,
   0.45 for juxtacortical), never in CSF (occupancy multiplied by 1 - CSF fraction) and keeps >= 2 mm from every
   other lesion.

   * Stable lesions: 0-15 per pair (classes 50/30/12/8 % peri/deep/juxta/infra), diameter 3-18 mm, baseline
     contrast U(1.2, 2.6) drifting by U(-15, +15) % at follow-up.
   * About one pair in three is STABLE (no new, no enlarging lesion).  Otherwise 1-5 NEW lesions (classes
     35/30/20/15 %), diameter 55 % U(3, 6), 30 % U(6, 10), 15 % U(10, 15) mm; follow-up contrast to normal WM
     55 % U(1.15, 1.5), 30 % U(1.5, 2.0), 15 % U(2.0, 2.5); and 0-2 ENLARGING lesions: a baseline lesion of
     4-10 mm (contrast U(1.2, 2.2)) whose follow-up extent is the union of itself and a copy scaled to volume x
     U(1.8, 4) (possibly off-centre), follow-up contrast = baseline x U(0.9, 1.25) clipped to [1.15, 2.5].
   Lesion contrasts are exact ratios of the final (post-response) follow-up intensity to normal WM, before bias,
   noise and partial volume.
4. **Per-time-point FLAIR signal.**  Final intensity ratios to WM: GM U(1.1, 1.4), CSF U(0.03, 0.3)
   (suppression quality), fat U(0.9, 1.8), soft tissue U(0.35, 0.75), bone U(0.02, 0.08), air 0; all drawn
   independently at each time point (protocol/scanner change).  A mildly non-linear global response
   ``I = scale * s ** g + offset`` with g U(0.85, 1.15), WM level U(300, 2500), offset U(0, 2) % of the WM level,
   applied after acquisition (so partial-volume mixtures are mapped non-linearly); tissue signals are chosen so that
   the pure-tissue ratios above hold exactly.
5. **Pose and motion.**  Baseline head pose: pitch U(-12, 12) deg, roll U(-4, 4), yaw U(-5, 5), head centre
   U(+-6, +-10, +-12) mm from the isocentre.  Follow-up: a rigid motion about the baseline head centre, random axis,
   angle U(0, 15) deg, translation of random direction and length U(0, 15) mm.  Each image is written in its own
   scanner space; ``params["motion"]["world_baseline_to_followup"]`` maps baseline world mm to follow-up world mm.
6. **Acquisition (each time point independently).**  40 %: 3D 1 mm isotropic (sagittal 65 % / axial 35 %,
   FOV 230-256 mm, 160-192 partitions).  60 %: 2D (axial 85 % / coronal 15 %), slice thickness 3 or 5 mm, slice gap
   0 (40 %) or U(5, 30) % of the thickness, in-plane voxel U(0.9, 1.2) mm, FOV U(220, 250) mm, coverage
   U(155, 185) mm (coronal U(175, 200) mm).  Slice profile: a rectangle of the nominal thickness convolved with a
   Gaussian of SD U(0.08, 0.2) x thickness (RF transition band), integrated along the slice normal on a fine grid
   (<= 0.75 mm steps); in-plane trilinear sampling.  Slice-stack obliquity: pitch U(-15, 15) deg, roll/yaw U(-3, 3)
   deg; FOV centre jittered by a few mm.  Voxel-axis sign conventions randomised.  qform = sform (code 1, scanner).
   Then a smooth multiplicative bias field fixed in scanner space (sum of random long-wavelength cosines, log-SD
   U(0.04, 0.15)), different at each time point, and Rician noise with WM SNR U(12, 30) (3D) or U(18, 45) (2D).
7. **Ground truth (follow-up grid).**  Each NEW and ENLARGING lesion's template-space occupancy (the WHOLE follow-up
   extent for enlarging lesions) is pushed through exactly the same deformation, pose, slice profile and in-plane
   interpolation as the image; a voxel belongs to the lesion when that fraction is >= 0.5 (ties to the lesion with
   the largest fraction).  Lesions ending with 0 such voxels (e.g. 3 mm lesions in 5 mm slices) are dropped from the
   metadata and truth maps but stay in the image (listed in ``params["dropped_truth_lesions"]``).  Ids are
   1..n_new for new lesions and continue for enlarging ones, unique across both maps.  ``diameter_mm`` is the
   equivalent-sphere diameter of the continuous subject-space extent; ``contrast_to_wm`` the follow-up ratio above.

Usage::

    python bench/ms_sim_independent.py --out DIR --cases N [--seed0 S]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.special import erf

TEMPLATE_DIR = Path("/usr/share/mricron/templates")
# the brain anatomy: "colin27" (the default) or "mni152" (set_template)
TEMPLATE = "colin27"

# Colin27 T1 intensity ladders (read off the ch2 / ch2bet histograms).
_BRAIN_LADDER = (32.0, 84.0, 113.0)  # CSF, GM, WM
_HEAD_LADDER = (0.0, 20.0, 75.0, 170.0)  # air, dark (bone / fluid), soft tissue, fat
_TISSUES = ("csf", "gm", "wm", "air", "dark", "soft", "fat")
LOCATIONS = ("periventricular", "juxtacortical", "deep", "infratentorial")
_JHU_INFRA = (1, 2, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)  # MCP, pontine, CST, ML, ICP, SCP, cerebral peduncles
_LESION_GAP_MM = 1.0  # exclusion margin around each lesion; two margins keep lesions >= 2 mm apart
_FINE_STEP_MM = 0.75


# ----------------------------------------------------------------------------------------------------------------
# Template anatomy
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Anatomy:
    """Colin27-derived tissue model on the 1 mm template grid (cached once per process)."""

    affine: np.ndarray
    inv_affine: np.ndarray
    shape: tuple[int, int, int]
    frac: dict[str, np.ndarray]
    brain: np.ndarray
    sd_vent: np.ndarray  # signed distance to the ventricles (mm, negative inside), 99 far away
    vent_box: tuple[slice, slice, slice]
    dist_ctx: np.ndarray  # distance to cortical grey matter (mm)
    infra: np.ndarray  # infratentorial region
    center_mm: np.ndarray  # brain centroid (template mm)
    cand: dict[str, np.ndarray] = field(default_factory=dict)  # candidate voxel indices per class


_ANAT: _Anatomy | None = None


def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(TEMPLATE_DIR / name))
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def _hats(x: np.ndarray, ladder: tuple[float, ...]) -> list[np.ndarray]:
    """Piecewise-linear partial-volume fractions of the classes of an intensity ladder (they sum to one)."""
    eye = np.eye(len(ladder))
    return [np.interp(x, ladder, eye[i]).astype(np.float32) for i in range(len(ladder))]


def set_template(name: str) -> None:
    """Choose the brain anatomy of later pairs: ``"colin27"`` (the default) or ``"mni152"``."""
    global TEMPLATE, _ANAT
    if name not in ("colin27", "mni152"):
        raise ValueError(f"unknown template {name!r}: colin27 or mni152")
    if name != TEMPLATE:
        TEMPLATE, _ANAT = name, None


def _on_grid(name: str, aff: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A 1 mm MNI-space template image placed on another 1 mm MNI grid (a pure integer shift; outside: 0)."""
    raw, raff = _load(name)
    shift = np.round(np.linalg.inv(raff) @ aff @ np.array([0, 0, 0, 1.0]))[:3].astype(int)
    out = np.zeros(shape, np.float32)
    src, dst = [], []
    for s_, n_dst, n_src in zip(shift, shape, raw.shape, strict=True):
        a = max(s_, 0)
        b = min(s_ + n_dst, n_src)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - s_, a - s_ + max(0, b - a)))
    out[tuple(dst)] = raw[tuple(src)]
    return out


def _mni152_tissues() -> tuple[np.ndarray, tuple[int, int, int], np.ndarray, dict[str, np.ndarray]]:
    """MNI152 2009a (nilearn's copy: T1 brain, GM and WM probability maps, 1 mm) as the brain, inside Colin27's
    head tissues (ch2 outside its brain, on the MNI grid: both templates are in MNI space). Returns the grid's
    affine, shape, the brain mask and the tissue fractions. Voxels of Colin27's brain that are not MNI152
    brain become extra-cerebral fluid ("dark"), so no Colin27 brain is left."""
    import nilearn

    d = Path(nilearn.__file__).parent / "datasets" / "data"
    img = nib.load(str(d / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"))
    aff = img.affine
    gm = np.asarray(img.dataobj, np.float32) / 255.0
    wm = np.asarray(nib.load(str(d / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")).dataobj,
                    np.float32) / 255.0
    shape = gm.shape
    tissue = (gm + wm) > 0.35
    lab, n = ndi.label(tissue)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    tissue = lab == int(sizes.argmax())
    # the brain with its sulcal CSF and ventricles: closed by 3 mm, holes filled
    brain = ndi.binary_fill_holes(ndi.binary_closing(tissue, np.ones((3, 3, 3)), iterations=3) | tissue)
    frac: dict[str, np.ndarray] = {}
    s_ = np.maximum(gm + wm, 1e-6)
    scale_ = np.minimum(1.0, 1.0 / s_)  # the maps may sum above 1 by rounding
    frac["gm"] = np.where(brain, gm * scale_, 0).astype(np.float32)
    frac["wm"] = np.where(brain, wm * scale_, 0).astype(np.float32)
    frac["csf"] = np.where(brain, 1.0 - frac["gm"] - frac["wm"], 0).astype(np.float32)
    head = _on_grid("ch2.nii.gz", aff, shape)
    colin_brain = _on_grid("ch2bet.nii.gz", aff, shape) > 0
    outside = ~brain
    for name, f in zip(("air", "dark", "soft", "fat"), _hats(head, _HEAD_LADDER), strict=True):
        frac[name] = np.where(outside, f, 0).astype(np.float32)
    # Colin27's brain where MNI152 has none: extra-cerebral fluid (its T1 ladder would make it soft tissue)
    gap = outside & ndi.binary_dilation(colin_brain, iterations=1)
    for name in ("air", "soft", "fat"):
        frac[name][gap] = 0
    frac["dark"][gap] = 1.0
    return aff, shape, brain, frac


def _anatomy() -> _Anatomy:
    """Build (once) and return the template tissue model (``TEMPLATE``: Colin27, or MNI152 2009a's brain)."""
    global _ANAT
    if _ANAT is not None:
        return _ANAT
    if TEMPLATE == "mni152":
        aff, shape, brain, frac = _mni152_tissues()
        aal = _on_grid("aal.nii.gz", aff, shape)
    else:
        head, aff = _load("ch2.nii.gz")
        bet, _ = _load("ch2bet.nii.gz")
        aal, _ = _load("aal.nii.gz")
        shape = head.shape
        brain = ndi.binary_fill_holes(bet > 0)
        frac = {}
        b = np.where(brain, np.maximum(bet, 1.0), 0.0).astype(np.float32)
        for name, f in zip(("csf", "gm", "wm"), _hats(b, _BRAIN_LADDER), strict=True):
            frac[name] = np.where(brain, f, 0).astype(np.float32)
        for name, f in zip(("air", "dark", "soft", "fat"), _hats(head, _HEAD_LADDER), strict=True):
            frac[name] = np.where(brain, 0, f).astype(np.float32)

    # JHU labels -> template grid (pure integer shift between the two 1 mm grids).
    jhu = _on_grid("JHU-WhiteMatter-labels-1mm.nii.gz", aff, shape).astype(np.int16)

    xmm = (np.arange(shape[0]) * aff[0, 0] + aff[0, 3])[:, None, None]
    ymm = (np.arange(shape[1]) * aff[1, 1] + aff[1, 3])[None, :, None]
    zmm = (np.arange(shape[2]) * aff[2, 2] + aff[2, 3])[None, None, :]

    # Ventricles: CSF components in a central box, excluding the midline cisterns and interhemispheric fissure.
    box = (np.abs(xmm) <= 32) & (ymm >= -50) & (ymm <= 32) & (zmm >= -4) & (zmm <= 38)
    box &= ~((np.abs(xmm) < 3.5) & (zmm > 22)) & ~((np.abs(xmm) < 5) & (ymm < -24))
    vc = (frac["csf"] > 0.5) & brain & box
    lab, n = ndi.label(vc, np.ones((3, 3, 3)))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    vent = (sizes >= 300)[lab]
    idx = np.argwhere(vent)
    lo = np.maximum(idx.min(0) - 30, 0)
    hi = np.minimum(idx.max(0) + 31, shape)
    vbox = tuple(slice(int(a), int(c)) for a, c in zip(lo, hi, strict=True))
    vsub = vent[vbox]
    sd_sub = ndi.distance_transform_edt(~vsub) - ndi.distance_transform_edt(vsub)
    sd = np.full(shape, 99.0, np.float32)
    sd[vbox] = sd_sub

    # Regions from atlases.
    deep_gm = ndi.binary_dilation((aal >= 71) & (aal <= 78), iterations=2)
    cereb = aal >= 91
    cerebrum = ndi.binary_dilation((aal >= 1) & (aal <= 90), iterations=1)
    infra = ndi.binary_dilation(cereb | np.isin(jhu, _JHU_INFRA), iterations=3)
    infra &= (zmm < -8) & brain & ~cerebrum & ~deep_gm
    ctx = (frac["gm"] > 0.5) & ~deep_gm & ~ndi.binary_dilation(infra, iterations=2) & (sd > 3)
    bidx = np.argwhere(brain)
    blo = np.maximum(bidx.min(0) - 2, 0)
    bhi = np.minimum(bidx.max(0) + 3, shape)
    bbox = tuple(slice(int(a), int(c)) for a, c in zip(blo, bhi, strict=True))
    dist_ctx = np.full(shape, 99.0, np.float32)
    dist_ctx[bbox] = ndi.distance_transform_edt(~ctx[bbox])

    wm = frac["wm"]
    supra = brain & ~ndi.binary_dilation(infra, iterations=3) & ~deep_gm & (zmm > -30)
    cand = {
        "supra": np.argwhere(supra & (wm > 0.55) & (dist_ctx > 0.5)).astype(np.int16),
        "infra": np.argwhere(infra & (wm > 0.75)).astype(np.int16),
    }
    cen_vox = np.argwhere(brain).mean(0)
    center_mm = (aff @ np.r_[cen_vox, 1.0])[:3]
    _ANAT = _Anatomy(aff, np.linalg.inv(aff), shape, frac, brain, sd, vbox, dist_ctx, infra, center_mm, cand)
    return _ANAT


# ----------------------------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------------------------


def _rot(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx from angles in degrees."""
    a, b, c = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _axis_angle(axis: np.ndarray, deg: float) -> np.ndarray:
    """Rotation matrix about a unit axis (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = math.radians(deg)
    return np.eye(3) + math.sin(t) * kx + (1 - math.cos(t)) * kx @ kx


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


@dataclass
class _Subject:
    """Per-seed anatomy transform: template mm = c + (x_s - c) / scale + u(x_s)."""

    center: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (3, n, n, n) cubic B-spline coefficients (mm)
    origin: np.ndarray
    spacing: float

    def to_template(self, xs: np.ndarray) -> np.ndarray:
        """Subject mm (N, 3) -> template mm (N, 3)."""
        idx = ((xs - self.origin) / self.spacing).T
        u = np.stack([ndi.map_coordinates(self.coef[c], idx, order=3, prefilter=False, mode="nearest")
                      for c in range(3)], axis=1)
        return self.center + (xs - self.center) / self.scale + u

    def to_subject(self, xt: np.ndarray) -> np.ndarray:
        """Template mm (N, 3) -> subject mm (N, 3) by fixed-point iteration (the warp is small and smooth)."""
        xs = self.center + self.scale * (xt - self.center)
        for _ in range(8):
            xs = xs + self.scale * (xt - self.to_template(xs))
        return xs

    @property
    def max_disp(self) -> float:
        return float(np.abs(self.coef).max())


@dataclass
class _Pose:
    """Head pose in the scanner: world = R (x_s - c) + p."""

    rot: np.ndarray
    pos: np.ndarray
    center: np.ndarray

    def to_world(self, xs: np.ndarray) -> np.ndarray:
        return (xs - self.center) @ self.rot.T + self.pos

    def to_subject(self, xw: np.ndarray) -> np.ndarray:
        return (xw - self.pos) @ self.rot + self.center


@dataclass
class _Grid:
    """An acquisition: output grid, slice profile on a fine grid along the third (slice) axis."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    m: int  # fine samples per slice spacing
    taps: np.ndarray  # profile weights on fine offsets -J..J
    info: dict[str, Any]

    @property
    def half(self) -> int:
        return (len(self.taps) - 1) // 2

    @property
    def n_fine(self) -> int:
        return (self.shape[2] - 1) * self.m + 2 * self.half + 1


# ----------------------------------------------------------------------------------------------------------------
# Lesion shapes
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Shape:
    """Union of star-shaped rippled ellipsoids; ``sdf`` is the signed radial distance to the boundary (mm)."""

    center: np.ndarray
    lobes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # offset, rotation (columns = axes), radii
    ripples: list[tuple[np.ndarray, float, float, float]]  # direction, frequency, amplitude, phase
    edge: float
    desc: str

    def extent(self) -> float:
        amp = sum(abs(r[2]) for r in self.ripples)
        return max(float(np.linalg.norm(o) + r.max() * (1 + amp)) for o, _, r in self.lobes)

    def sdf(self, pts: np.ndarray) -> np.ndarray:
        d = np.full(pts.shape[:-1], np.inf, np.float32)
        for off, rot, radii in self.lobes:
            v = pts - (self.center + off)
            r = np.linalg.norm(v, axis=-1)
            u = v / np.maximum(r, 1e-6)[..., None]
            q = (u @ rot) / radii
            local = 1.0 / np.maximum(np.linalg.norm(q, axis=-1), 1e-6)
            p = np.ones_like(r)
            for dvec, fr, amp, ph in self.ripples:
                p += amp * np.sin(fr * (u @ dvec) + ph)
            d = np.minimum(d, (r - local * p).astype(np.float32))
        return d

    def grown(self, factor: float, shift: np.ndarray) -> _Shape:
        lobes = [(o * factor + shift, rot, r * factor) for o, rot, r in self.lobes]
        return _Shape(self.center.copy(), lobes, self.ripples, self.edge, self.desc)


def _frame(axis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Orthonormal frame whose first column is ``axis``."""
    a = axis / np.linalg.norm(axis)
    t = np.cross(a, _unit(rng))
    t /= np.linalg.norm(t)
    return np.stack([a, t, np.cross(a, t)], axis=1)


def _make_shape(rng: np.random.Generator, center: np.ndarray, diam: float, location: str,
                normal: np.ndarray | None) -> _Shape:
    """Random lesion solid of equivalent diameter ``diam`` (template mm) for a location class."""
    r_eq = diam / 2.0
    edge = float(rng.uniform(0.8, 2.0))
    ripples: list[tuple[np.ndarray, float, float, float]] = []
    u = rng.random()
    if location == "periventricular" and normal is not None and u < 0.4:
        aspect = float(rng.uniform(2.0, 3.5))
        b = r_eq / aspect ** (1 / 3)
        radii = np.array([aspect * b, b * rng.uniform(0.85, 1.15), b])
        rot = _frame(normal, rng)
        ctr = center + normal * radii[0] * rng.uniform(0.4, 0.8)
        desc = f"Dawson finger (ovoid, aspect {aspect:.1f}, long axis perpendicular to the ventricle wall)"
        lobes = [(np.zeros(3), rot, radii)]
        ripples.append((_unit(rng), float(rng.uniform(2, 4)), float(rng.uniform(0, 0.05)), float(rng.uniform(0, 6))))
        return _Shape(ctr, lobes, ripples, edge, desc)
    if location == "periventricular" and normal is not None and u < 0.65:
        flat = float(rng.uniform(0.4, 0.65))
        a = r_eq / flat ** (1 / 3)
        radii = np.array([flat * a, a * rng.uniform(0.9, 1.4), a * rng.uniform(0.7, 1.0)])
        rot = _frame(normal, rng)
        ctr = center + normal * radii[0] * rng.uniform(0.2, 0.6)
        desc = f"periventricular band/cap (flattened along the ventricle normal, thickness ratio {flat:.2f})"
        ripples.append((_unit(rng), float(rng.uniform(2, 4)), float(rng.uniform(0, 0.1)), float(rng.uniform(0, 6))))
        return _Shape(ctr, [(np.zeros(3), rot, radii)], ripples, edge, desc)
    rot = _frame(_unit(rng), rng)
    if normal is not None:
        center = center + normal * r_eq * rng.uniform(0.3, 0.8)
    v = rng.random()
    if v < 0.3:
        radii = r_eq * rng.uniform(0.92, 1.08, 3)
        desc = "round"
        lobes = [(np.zeros(3), rot, radii)]
        namp = 0.04
    elif v < 0.7:
        aspect = float(rng.uniform(1.2, 2.0))
        b = r_eq / aspect ** (1 / 3)
        radii = np.array([aspect * b, b * rng.uniform(0.8, 1.2), b])
        desc = f"ovoid (aspect {aspect:.1f})"
        lobes = [(np.zeros(3), rot, radii)]
        namp = 0.07
    else:
        nl = int(rng.integers(2, 4))
        rl = r_eq / nl ** (1 / 3) * 1.15
        lobes = [(np.zeros(3), rot, rl * rng.uniform(0.8, 1.2, 3))]
        for _ in range(nl - 1):
            lobes.append((_unit(rng) * rl * rng.uniform(0.5, 0.9), _frame(_unit(rng), rng),
                          rl * rng.uniform(0.6, 1.0, 3)))
        desc = f"irregular ({nl} confluent lobes)"
        namp = 0.15
    for _ in range(int(rng.integers(1, 4))):
        ripples.append((_unit(rng), float(rng.uniform(2, 5)), float(rng.uniform(0, namp)),
                        float(rng.uniform(0, 6.3))))
    return _Shape(center.copy(), lobes, ripples, edge, desc)


@dataclass
class _Lesion:
    """A placed lesion: occupancy patches on the template grid (same origin/shape for both time points)."""

    kind: str  # stable | new | enlarging
    location: str
    desc: str
    origin: np.ndarray
    f_base: np.ndarray | None
    f_fu: np.ndarray
    q_base: float | None
    q_fu: float
    center_t: np.ndarray  # template mm
    target_diam: float
    taken: np.ndarray  # patch mask of the exclusion zone


def _patch(anat: _Anatomy, shape: _Shape, margin: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Signed distance of ``shape`` on a template-grid patch; None when the patch leaves the volume."""
    cv = (anat.inv_affine @ np.r_[shape.center, 1.0])[:3]
    ext = shape.extent() + margin
    lo = np.floor(cv - ext).astype(int)
    hi = np.ceil(cv + ext).astype(int) + 1
    if (lo < 0).any() or (hi > np.array(anat.shape)).any():
        return None
    g = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij"), -1)
    pts = g.astype(np.float32) @ anat.affine[:3, :3].T.astype(np.float32) + anat.affine[:3, 3].astype(np.float32)
    return lo, shape.sdf(pts)


def _occ(d: np.ndarray, edge: float) -> np.ndarray:
    return np.clip(0.5 - d / edge, 0.0, 1.0).astype(np.float32)


def _check(anat: _Anatomy, location: str, lo: np.ndarray, d: np.ndarray, e0: float, e1: float,
           taken: np.ndarray) -> bool:
    """Is a lesion with signed-distance patch ``d`` at ``lo`` valid for its location class?"""
    sl = tuple(slice(int(a), int(a) + n) for a, n in zip(lo, d.shape, strict=True))
    inside = d <= 0
    if inside.sum() < 3:
        return False
    if taken[sl][d < _LESION_GAP_MM].any():
        return False
    if not anat.brain[sl][inside].all():
        return False
    wm = anat.frac["wm"][sl][inside].mean()
    gm = anat.frac["gm"][sl][inside].mean()
    sdv = anat.sd_vent[sl][inside]
    csf = anat.frac["csf"][sl][inside].mean() + np.clip(e1 - sdv + 0.5, 0, 1).mean()
    dctx = anat.dist_ctx[sl][inside]
    infra = anat.infra[sl][inside]
    if location == "juxtacortical":
        return bool(wm >= 0.45 and gm <= 0.5 and csf <= 0.1 and dctx.min() <= 1.0 and (sdv - e1).min() >= 6
                    and not infra.any())
    if wm < 0.6 or gm > 0.35:
        return False
    if location == "periventricular":
        return bool(csf <= 0.25 and (sdv - e0).min() <= 3.0 and not infra.any())
    if location == "deep":
        return bool(csf <= 0.1 and (sdv - e1).min() >= 4.0 and dctx.min() >= 2.5 and not infra.any())
    return bool(csf <= 0.1 and infra.all())


def _pick_center(anat: _Anatomy, rng: np.random.Generator, location: str, diam: float,
                 e0: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Candidate lesion centre (template mm) and the ventricle-wall normal for periventricular ones."""
    if location == "infratentorial":
        c = anat.cand["infra"]
    else:
        c = anat.cand["supra"]
    for _ in range(50):
        v = c[rng.integers(len(c))].astype(int)
        sdv = float(anat.sd_vent[tuple(v)]) - e0
        dctx = float(anat.dist_ctx[tuple(v)])
        r = diam / 2
        ok = {
            "periventricular": 0.5 <= sdv <= 2.5,
            "juxtacortical": 0.5 <= dctx <= 2.0 and sdv >= 8,
            "deep": sdv >= r + 4 and dctx >= r + 2.5,
            "infratentorial": True,
        }[location]
        if not ok:
            continue
        normal = None
        if location == "periventricular":
            s = anat.sd_vent
            i, j, k = v
            gvec = np.array([s[i + 1, j, k] - s[i - 1, j, k], s[i, j + 1, k] - s[i, j - 1, k],
                             s[i, j, k + 1] - s[i, j, k - 1]], float)
            if np.linalg.norm(gvec) < 1e-3:
                continue
            normal = anat.affine[:3, :3] @ gvec
            normal /= np.linalg.norm(normal)
        return (anat.affine @ np.r_[v + rng.uniform(-0.5, 0.5, 3), 1.0])[:3], normal
    return (anat.affine @ np.r_[c[rng.integers(len(c))].astype(float), 1.0])[:3], None


def _place(anat: _Anatomy, rng: np.random.Generator, kind: str, location: str, diam: float, q_base: float | None,
           q_fu: float, e0: float, e1: float, taken: np.ndarray, grow: float | None = None,
           mean_scale: float = 1.0) -> _Lesion | None:
    """Try to place a lesion; on success it is marked in ``taken`` and returned."""
    diam_t = diam / mean_scale
    for _ in range(60):
        ctr, normal = _pick_center(anat, rng, location, diam_t, e0)
        shape = _make_shape(rng, ctr, diam_t, location, normal)
        margin = _LESION_GAP_MM + shape.edge + 2
        if grow is not None:
            fac = grow ** (1 / 3)
            shift = _unit(rng) * shape.extent() * rng.uniform(0, 0.35)
            big = shape.grown(fac, shift)
            pr = _patch(anat, _Shape(shape.center, shape.lobes + big.lobes, shape.ripples, shape.edge, ""),
                        margin)
            if pr is None:
                continue
            lo, _ = pr
            n = pr[1].shape
            g = np.stack(np.meshgrid(*[np.arange(a, a + k) for a, k in zip(lo, n, strict=True)], indexing="ij"), -1)
            pts = g.astype(np.float32) @ anat.affine[:3, :3].T.astype(np.float32) + anat.affine[:3, 3]
            d0 = shape.sdf(pts)
            d1 = pr[1]
            if not _check(anat, location, lo, d1, e0, e1, taken):
                continue
            f0, f1 = _occ(d0, shape.edge), _occ(d1, shape.edge)
            ratio = f1.sum() / max(f0.sum(), 1e-6)
            if not (1.7 <= ratio <= 4.6):
                continue
            desc = f"{shape.desc}; grows x{ratio:.1f} in volume at follow-up"
            lesion = _Lesion(kind, location, desc, lo, f0, f1, q_base, q_fu, shape.center, diam, d1 < _LESION_GAP_MM)
        else:
            pr = _patch(anat, shape, margin)
            if pr is None:
                continue
            lo, d = pr
            if not _check(anat, location, lo, d, e0, e1, taken):
                continue
            f = _occ(d, shape.edge)
            lesion = _Lesion(kind, location, shape.desc, lo, f if kind != "new" else None, f, q_base, q_fu,
                             shape.center, diam, d < _LESION_GAP_MM)
        sl = tuple(slice(int(a), int(a) + n) for a, n in zip(lesion.origin, lesion.f_fu.shape, strict=True))
        taken[sl] |= lesion.taken
        return lesion
    return None


# ----------------------------------------------------------------------------------------------------------------
# Signal model and acquisition
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Protocol:
    """Per-time-point contrast, response, noise and bias settings."""

    ratios: dict[str, float]
    g: float
    scale: float
    offset: float
    snr: float
    bias_sd: float
    rim: float
    vent_e: float

    def resp(self, s: np.ndarray | float) -> np.ndarray | float:
        return self.scale * np.power(np.maximum(s, 0.0), self.g) + self.offset

    def inv(self, ratio: float) -> float:
        """Intrinsic signal giving final ``ratio`` x WM (WM intrinsic signal = 1)."""
        target = ratio * float(self.resp(1.0))
        return float(max(target - self.offset, 0.0) / self.scale) ** (1.0 / self.g)

    @property
    def wm_level(self) -> float:
        return float(self.resp(1.0))


def _protocol(rng: np.random.Generator, mode: str, e: float) -> _Protocol:
    ratios = {
        "wm": 1.0,
        "gm": float(rng.uniform(1.1, 1.4)),
        "csf": float(rng.uniform(0.03, 0.3)),
        "fat": float(rng.uniform(0.9, 1.8)),
        "soft": float(rng.uniform(0.35, 0.75)),
        "dark": float(rng.uniform(0.02, 0.08)),
        "air": 0.0,
    }
    g = float(rng.uniform(0.85, 1.15))
    wm_level = float(rng.uniform(300, 2500))
    off = float(rng.uniform(0, 0.02)) * wm_level
    snr = float(rng.uniform(12, 30) if mode == "3d" else rng.uniform(18, 45))
    return _Protocol(ratios, g, wm_level - off, off, snr, float(rng.uniform(0.04, 0.15)), float(rng.uniform(0, 0.12)),
                     e)


def _template_flair(anat: _Anatomy, prot: _Protocol, lesions: list[_Lesion], followup: bool
                    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Intrinsic FLAIR signal on the template grid (WM = 1) and effective lesion occupancies (by list index)."""
    s = {k: prot.inv(v) if k != "air" else 0.0 for k, v in prot.ratios.items()}
    fr = anat.frac
    vol = np.zeros(anat.shape, np.float32)
    for k in _TISSUES:
        if s[k]:
            vol += np.float32(s[k]) * fr[k]
    vb = anat.vent_box
    sd = anat.sd_vent[vb] - prot.vent_e
    csf = fr["csf"][vb].copy()
    wm, gm = fr["wm"][vb], fr["gm"][vb]
    vent_e = np.clip(0.5 - sd, 0, 1) * anat.brain[vb]
    add = np.clip(vent_e - csf, 0, None)
    tis = wm + gm
    keep = np.where(tis > 1e-6, 1 - add / np.maximum(tis, 1e-6), 0)
    mix = np.where(tis > 1e-6, (s["wm"] * wm + s["gm"] * gm) / np.maximum(tis, 1e-6), 0)
    vol[vb] += add * (s["csf"] - mix)
    csf += add
    rim = prot.rim * np.exp(-np.maximum(sd, 0) / 1.2) * (sd > 0) * wm * keep
    vol[vb] += rim * s["wm"]
    csf_full = None
    eff: dict[int, np.ndarray] = {}
    for i, les in enumerate(lesions):
        f = les.f_fu if followup else les.f_base
        q = les.q_fu if followup else les.q_base
        if f is None or q is None:
            continue
        sl = tuple(slice(int(a), int(a) + n) for a, n in zip(les.origin, f.shape, strict=True))
        if csf_full is None:
            csf_full = fr["csf"].copy()
            csf_full[vb] = csf
        fe = f * (1 - np.clip(csf_full[sl], 0, 1))
        vol[sl] = (1 - fe) * vol[sl] + fe * np.float32(prot.inv(q))
        eff[i] = fe
    return vol, eff


def _make_grid(rng: np.random.Generator, head_world: np.ndarray) -> _Grid:
    """Random acquisition geometry (3D 1 mm or 2D 3/5 mm) around the head."""
    mode = "3d" if rng.random() < 0.4 else "2d"
    if mode == "3d":
        orient = "sagittal" if rng.random() < 0.65 else "axial"
        vox = np.array([1.0, 1.0, 1.0])
        fov_ip = rng.uniform(230, 256, 2)
        n = [int(round(fov_ip[0])), int(round(fov_ip[1])), int(rng.integers(160, 193))]
        thick, gap, sig = 1.0, 0.0, 0.0
    else:
        orient = "axial" if rng.random() < 0.85 else "coronal"
        thick = float(rng.choice([3.0, 5.0]))
        gap = 0.0 if rng.random() < 0.4 else float(rng.uniform(0.05, 0.3))
        ip = float(rng.uniform(0.9, 1.2))
        spacing = thick * (1 + gap)
        vox = np.array([ip, ip, spacing])
        fov = float(rng.uniform(220, 250))
        cover = float(rng.uniform(155, 185) if orient == "axial" else rng.uniform(175, 200))
        n = [int(round(fov / ip)), int(round(fov / ip)), int(math.ceil(cover / spacing))]
        sig = float(rng.uniform(0.08, 0.2)) * thick
    s = [1.0 if rng.random() < 0.5 else -1.0, 1.0, 1.0 if rng.random() < 0.7 else -1.0]
    if orient == "axial":
        base = np.array([[s[0], 0, 0], [0, s[1], 0], [0, 0, s[2]]])
    elif orient == "sagittal":
        base = np.array([[0, 0, s[2]], [-s[0], 0, 0], [0, 1, 0]])
    else:  # coronal: i = x, j = z, k = y
        base = np.array([[s[0], 0, 0], [0, 0, s[2]], [0, 1, 0]])
    tilt = [float(rng.uniform(-15, 15)), float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3))]
    dirs = _rot(*tilt) @ base
    ctr = head_world + rng.normal(0, [3, 5, 5])
    aff = np.eye(4)
    aff[:3, :3] = dirs * vox
    aff[:3, 3] = ctr - aff[:3, :3] @ ((np.array(n) - 1) / 2)
    if mode == "3d":
        m, taps = 1, np.array([1.0])
    else:
        m = int(math.ceil(vox[2] / _FINE_STEP_MM))
        h = vox[2] / m
        half = int(math.ceil((thick / 2 + 3 * sig) / h))
        z = np.arange(-half, half + 1) * h
        prof = 0.5 * (erf((z + thick / 2) / (sig * math.sqrt(2))) - erf((z - thick / 2) / (sig * math.sqrt(2))))
        taps = prof / prof.sum()
    info = {"mode": mode, "orientation": orient, "voxel_mm": [float(v) for v in vox], "shape": n,
            "slice_thickness_mm": thick, "slice_gap_fraction": gap, "slice_profile_edge_sd_mm": sig,
            "stack_tilt_deg": tilt, "axis_signs": s, "fine_samples_per_slice": m}
    return _Grid((n[0], n[1], n[2]), aff, m, taps, info)


def _zoom_exact(small: np.ndarray, full: tuple[int, ...], out: np.ndarray) -> None:
    """Linear upsampling that maps the lattice linspace(0, n-1, k) exactly onto the full grid."""
    ndi.zoom(small, [f / s for f, s in zip(full, small.shape, strict=True)], output=out, order=1, mode="nearest",
             grid_mode=False)


def _coords_exact(anat: _Anatomy, grid: _Grid, pose: _Pose, subj: _Subject) -> np.ndarray:
    """Template-voxel coordinates of every fine sample of ``grid`` (3, ni, nj, n_fine), float32."""
    ni, nj, _ = grid.shape
    full = (ni, nj, grid.n_fine)
    lat = [np.linspace(0, n - 1, max(int(math.ceil((n - 1) / 8)) + 1, 2)) for n in full]
    g = np.stack(np.meshgrid(*lat, indexing="ij"), -1).reshape(-1, 3)
    g[:, 2] = (g[:, 2] - grid.half) / grid.m
    world = g @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    xt = subj.to_template(pose.to_subject(world))
    tv = (xt @ anat.inv_affine[:3, :3].T + anat.inv_affine[:3, 3]).reshape(*[len(v) for v in lat], 3)
    out = np.empty((3, *full), np.float32)
    for c in range(3):
        _zoom_exact(np.ascontiguousarray(tv[..., c], dtype=np.float32), full, out[c])
    return out


def _profile(fine: np.ndarray, grid: _Grid, k0: int = 0, nk: int | None = None) -> np.ndarray:
    """Integrate fine samples along the slice axis with the slice profile."""
    nk = grid.shape[2] - k0 if nk is None else nk
    out = np.zeros((*fine.shape[:2], nk), np.float32)
    stop = (nk - 1) * grid.m + 1
    for t, w in enumerate(grid.taps):
        out += np.float32(w) * fine[:, :, t:t + stop:grid.m]
    return out


def _bias(rng: np.random.Generator, grid: _Grid, sd: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Smooth multiplicative field fixed in scanner space (long-wavelength cosines), mean ~1 over the FOV."""
    full = grid.shape
    lat = [np.linspace(0, n - 1, max(int(math.ceil((n - 1) / 12)) + 1, 2)) for n in full]
    g = np.stack(np.meshgrid(*lat, indexing="ij"), -1).reshape(-1, 3)
    world = g @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    ctr = grid.affine[:3, :3] @ ((np.array(full) - 1) / 2) + grid.affine[:3, 3]
    logb = np.zeros(len(g))
    terms = []
    for _ in range(6):
        k = _unit(rng)
        lam = float(rng.uniform(180, 400))
        ph = float(rng.uniform(0, 2 * math.pi))
        a = float(rng.normal())
        logb += a * np.cos(2 * math.pi * ((world - ctr) @ k) / lam + ph)
        terms.append({"direction": k.tolist(), "wavelength_mm": lam, "phase": ph, "weight": a})
    logb = (logb - logb.mean()) / max(logb.std(), 1e-6) * sd
    out = np.empty(full, np.float32)
    _zoom_exact(np.exp(logb).reshape([len(v) for v in lat]).astype(np.float32), full, out)
    return out, terms


def _acquire(rng: np.random.Generator, anat: _Anatomy, vol: np.ndarray, grid: _Grid, pose: _Pose, subj: _Subject,
             prot: _Protocol) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Sample the template-space signal into the scanner grid, apply response, bias and Rician noise."""
    coords = _coords_exact(anat, grid, pose, subj)
    fine = ndi.map_coordinates(vol, coords, order=1, mode="constant", cval=0.0, prefilter=False)
    img = _profile(fine, grid)
    del fine
    img = prot.resp(img).astype(np.float32)
    bias, terms = _bias(rng, grid, prot.bias_sd)
    img *= bias
    sigma = prot.wm_level / prot.snr
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    img += np.float32(sigma) * n1
    np.square(img, out=img)
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n1 *= np.float32(sigma)
    img += np.square(n1)
    np.sqrt(img, out=img)
    return img, coords, {"noise_sigma": sigma, "bias_terms": terms}


def _nifti(data: np.ndarray, affine: np.ndarray, descrip: str) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = descrip[:79].encode()
    return img


# ----------------------------------------------------------------------------------------------------------------
# Pair simulation
# ----------------------------------------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    keys = list(probs)
    p = np.array([probs[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _new_diam(rng: np.random.Generator) -> float:
    u = rng.random()
    return float(rng.uniform(3, 6) if u < 0.55 else rng.uniform(6, 10) if u < 0.85 else rng.uniform(10, 15))


def _new_contrast(rng: np.random.Generator) -> float:
    u = rng.random()
    return float(rng.uniform(1.15, 1.5) if u < 0.55 else rng.uniform(1.5, 2.0) if u < 0.85 else rng.uniform(2.0, 2.5))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float):
        return round(x, 6)
    return x


def _simulate(seed: int, debug: bool = False) -> dict[str, Any]:
    """Full simulation; ``debug`` adds template-brain fraction images for self-checks."""
    anat = _anatomy()
    rng = np.random.default_rng(seed)
    c = anat.center_mm

    # Subject anatomy.
    s_glob = float(rng.uniform(0.92, 1.08))
    scale = s_glob * rng.uniform(0.97, 1.03, 3)
    spacing = float(rng.uniform(22, 32))
    warp_sd = float(rng.uniform(0.8, 2.5))
    nctl = int(math.ceil(260 / spacing)) + 3
    coef = (rng.normal(0, warp_sd, (3, nctl, nctl, nctl))).astype(np.float64)
    subj = _Subject(c, scale, coef, c - spacing * (nctl - 1) / 2, spacing)
    e0 = float(rng.uniform(0, 3.5))
    e1 = e0 + float(rng.uniform(0, 0.6))

    # Pose and motion.
    pose_deg = [float(rng.uniform(-12, 12)), float(rng.uniform(-4, 4)), float(rng.uniform(-5, 5))]
    p0 = np.array([rng.uniform(-6, 6), rng.uniform(-10, 10), rng.uniform(-12, 12)])
    r0 = _rot(*pose_deg)
    axis = _unit(rng)
    angle = float(rng.uniform(0, 15))
    rm = _axis_angle(axis, angle)
    tm = _unit(rng) * float(rng.uniform(0, 15))
    pose0 = _Pose(r0, p0, c)
    pose1 = _Pose(rm @ r0, p0 + tm, c)
    m01 = np.eye(4)
    m01[:3, :3] = rm
    m01[:3, 3] = p0 + tm - rm @ p0

    # Lesions.
    stable_pair = bool(rng.random() < 1 / 3)
    n_stable = int(rng.integers(0, 16))
    n_new = 0 if stable_pair else int(rng.integers(1, 6))
    n_enl = 0 if stable_pair else int(rng.integers(0, 3))
    taken = np.zeros(anat.shape, bool)
    lesions: list[_Lesion] = []
    failed: list[str] = []
    ms = float(np.cbrt(np.prod(scale)))
    for _ in range(n_enl):
        loc = _choice(rng, {"periventricular": 0.5, "deep": 0.35, "juxtacortical": 0.1, "infratentorial": 0.05})
        qb = float(rng.uniform(1.2, 2.2))
        qf = float(np.clip(qb * rng.uniform(0.9, 1.25), 1.15, 2.5))
        les = _place(anat, rng, "enlarging", loc, float(rng.uniform(4, 10)), qb, qf, e0, e1, taken,
                     grow=float(rng.uniform(1.8, 4.0)), mean_scale=ms)
        (lesions.append(les) if les else failed.append(f"enlarging/{loc}"))
    for _ in range(n_stable):
        loc = _choice(rng, {"periventricular": 0.5, "deep": 0.3, "juxtacortical": 0.12, "infratentorial": 0.08})
        qb = float(rng.uniform(1.2, 2.6))
        qf = float(max(qb * rng.uniform(0.85, 1.15), 1.08))
        les = _place(anat, rng, "stable", loc, 3 + 15 * float(rng.beta(1.3, 2.5)), qb, qf, e0, e1, taken,
                     mean_scale=ms)
        (lesions.append(les) if les else failed.append(f"stable/{loc}"))
    for _ in range(n_new):
        loc = _choice(rng, {"periventricular": 0.35, "deep": 0.3, "juxtacortical": 0.2, "infratentorial": 0.15})
        les = _place(anat, rng, "new", loc, _new_diam(rng), None, _new_contrast(rng), e0, e1, taken, mean_scale=ms)
        (lesions.append(les) if les else failed.append(f"new/{loc}"))
    del taken

    # Acquisitions.
    grids = [_make_grid(rng, pose0.pos), _make_grid(rng, pose1.pos)]
    prots = [_protocol(rng, grids[0].info["mode"], e0), _protocol(rng, grids[1].info["mode"], e1)]
    images = []
    tp_info = []
    coords_fu = None
    for t, (grid, prot, pose) in enumerate(zip(grids, prots, (pose0, pose1), strict=True)):
        vol, eff = _template_flair(anat, prot, lesions, followup=t == 1)
        img, coords, extra = _acquire(rng, anat, vol, grid, pose, subj, prot)
        del vol
        images.append(img)
        if t == 1:
            coords_fu, eff_fu = coords, eff
        else:
            del coords
        tp_info.append({**grid.info, "affine": grid.affine, "tissue_ratio_to_wm": prot.ratios,
                        "response_exponent": prot.g, "wm_level": prot.wm_level, "offset": prot.offset,
                        "snr_wm": prot.snr, "bias_log_sd": prot.bias_sd, "periventricular_rim": prot.rim,
                        "ventricle_enlargement_mm": prot.vent_e, **extra})
    assert coords_fu is not None

    # Ground truth on the follow-up grid.
    gfu = grids[1]
    best = np.zeros(gfu.shape, np.float32)
    label = np.zeros(gfu.shape, np.int16)
    kind_of: dict[int, int] = {}
    margin_mm = subj.max_disp * float(scale.max()) + 6.0
    ainv = np.linalg.inv(gfu.affine)
    truth_order = [i for i, les in enumerate(lesions) if les.kind == "new"]
    truth_order += [i for i, les in enumerate(lesions) if les.kind == "enlarging"]
    frac_sum: dict[int, float] = {}
    for tmp_id, i in enumerate(truth_order, start=1):
        les = lesions[i]
        fe = eff_fu[i]
        n = np.array(fe.shape)
        corners = np.array([[a, b, cc] for a in (0, n[0] - 1) for b in (0, n[1] - 1) for cc in (0, n[2] - 1)])
        cw = (corners + les.origin) @ anat.affine[:3, :3].T + anat.affine[:3, 3]
        ow = pose1.to_world(c + scale * (cw - c))
        oi = ow @ ainv[:3, :3].T + ainv[:3, 3]
        mvox = margin_mm / np.abs(np.array(gfu.info["voxel_mm"]))
        lo = np.clip(np.floor(oi.min(0) - mvox), 0, np.array(gfu.shape) - 1).astype(int)
        hi = np.clip(np.ceil(oi.max(0) + mvox), 0, np.array(gfu.shape) - 1).astype(int) + 1
        sub = coords_fu[:, lo[0]:hi[0], lo[1]:hi[1], lo[2] * gfu.m:(hi[2] - 1) * gfu.m + 2 * gfu.half + 1]
        rel = sub - les.origin.astype(np.float32)[:, None, None, None]
        fine = ndi.map_coordinates(fe, rel, order=1, mode="constant", cval=0.0, prefilter=False)
        fr = _profile(fine, gfu, nk=hi[2] - lo[2])
        blk = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        win = (fr >= 0.5) & (fr > best[blk])
        best[blk][win] = fr[win]
        label[blk][win] = tmp_id
        kind_of[tmp_id] = i
        frac_sum[tmp_id] = float(fr.sum())

    # Metadata, dropping lesions with empty truth; renumber ids consecutively (new first).
    out_new = np.zeros(gfu.shape, np.int16)
    out_enl = np.zeros(gfu.shape, np.int16)
    meta: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    vox_vol = float(np.prod(np.abs(gfu.info["voxel_mm"])))
    nid = 0
    for tmp_id, i in kind_of.items():
        les = lesions[i]
        mask = label == tmp_id
        ctr_s = subj.to_subject(les.center_t[None])[0]
        jac = np.stack([(subj.to_template((ctr_s + h)[None]) - subj.to_template((ctr_s - h)[None]))[0] / 2.0
                        for h in np.eye(3)], axis=1)
        vol_s = float(eff_fu[i].sum() * abs(np.linalg.det(anat.affine[:3, :3])) / abs(np.linalg.det(jac)))
        diam = float(np.cbrt(6 * vol_s / math.pi))
        ctr_w = pose1.to_world(ctr_s[None])[0]
        rec = {"kind": les.kind, "location": les.location, "diameter_mm": round(diam, 2),
               "contrast_to_wm": round(les.q_fu, 3), "shape": les.desc}
        if not mask.any():
            dropped.append({**rec, "center_world_followup_mm": ctr_w, "reason": "no voxel with fraction >= 0.5"})
            continue
        nid += 1
        (out_new if les.kind == "new" else out_enl)[mask] = nid
        meta.append({"id": nid, **rec})
        det = {"id": nid, "center_world_followup_mm": ctr_w, "truth_voxels": int(mask.sum()),
               "truth_volume_mm3": int(mask.sum()) * vox_vol, "volume_mm3": vol_s,
               "target_diameter_mm": les.target_diam, "pv_volume_mm3_on_grid": frac_sum[tmp_id] * vox_vol}
        if les.kind == "enlarging" and les.f_base is not None:
            fb = les.f_base * (eff_fu[i] / np.maximum(les.f_fu, 1e-6))
            det["baseline_volume_mm3"] = float(fb.sum() / abs(np.linalg.det(jac)))
            det["baseline_contrast_to_wm"] = les.q_base
        details.append(det)
    # Keep new ids < enlarging ids even after dropping (kind_of is ordered new-first already).
    stable_info = [{"location": les.location, "target_diameter_mm": les.target_diam, "shape": les.desc,
                    "contrast_baseline": les.q_base, "contrast_followup": les.q_fu,
                    "center_world_followup_mm": pose1.to_world(subj.to_subject(les.center_t[None]))[0]}
                   for les in lesions if les.kind == "stable"]
    params = {
        "seed": seed,
        "stable_pair": stable_pair,
        "n_stable_requested": n_stable, "n_new_requested": n_new, "n_enlarging_requested": n_enl,
        "n_new": int(sum(1 for m_ in meta if m_["kind"] == "new")),
        "n_enlarging": int(sum(1 for m_ in meta if m_["kind"] == "enlarging")),
        "failed_placements": failed,
        "dropped_truth_lesions": dropped,
        "lesion_details": details,
        "stable_lesions": stable_info,
        "anatomy": {"template": ("MNI152 2009a brain in Colin27 ch2 head" if TEMPLATE == "mni152"
                                 else "Colin27 ch2 (MNI)"), "head_scale": scale, "warp_control_spacing_mm": spacing,
                    "warp_coef_sd_mm": warp_sd, "ventricle_enlargement_baseline_mm": e0,
                    "ventricle_enlargement_followup_mm": e1, "template_brain_center_mm": c},
        "pose_baseline": {"rotation_deg_xyz": pose_deg, "head_center_world_mm": p0, "rotation": r0},
        "motion": {"axis": axis, "angle_deg": angle, "translation_mm": tm,
                   "about_point_world_mm": p0, "world_baseline_to_followup": m01},
        "baseline": tp_info[0],
        "followup": tp_info[1],
    }
    res: dict[str, Any] = {
        "baseline": _nifti(images[0], grids[0].affine, "independent sim FLAIR baseline"),
        "followup": _nifti(images[1], grids[1].affine, "independent sim FLAIR follow-up"),
        "truth_new": _nifti(out_new, gfu.affine, "truth new lesions"),
        "truth_enlarging": _nifti(out_enl, gfu.affine, "truth enlarging lesions"),
        "lesions": meta,
        "params": _jsonable(params),
    }
    if debug:
        bvol = anat.brain.astype(np.float32)
        res["debug_brain"] = []
        for grid, pose in zip(grids, (pose0, pose1), strict=True):
            co = _coords_exact(anat, grid, pose, subj)
            res["debug_brain"].append(_profile(ndi.map_coordinates(bvol, co, order=1, prefilter=False), grid))
    return res


def simulate_pair(seed: int) -> dict:
    """Simulate one longitudinal FLAIR pair.

    Returns ``{"baseline": Nifti1Image (float32), "followup": Nifti1Image (float32), "truth_new": Nifti1Image
    (int16, follow-up grid), "truth_enlarging": Nifti1Image (int16, follow-up grid), "lesions": [dict(id, kind,
    diameter_mm, location, contrast_to_wm, shape), ...], "params": {...JSON-serialisable settings...}}``.
    The same seed always gives the same output.
    """
    return _simulate(seed)


def main(argv: list[str] | None = None) -> None:
    """CLI: write ``DIR/pair_{seed:04d}/{baseline,followup,truth_new,truth_enlarging}.nii.gz`` + lesions.json."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cases", required=True, type=int)
    ap.add_argument("--seed0", type=int, default=0)
    args = ap.parse_args(argv)
    for seed in range(args.seed0, args.seed0 + args.cases):
        t0 = time.perf_counter()
        res = simulate_pair(seed)
        d = args.out / f"pair_{seed:04d}"
        d.mkdir(parents=True, exist_ok=True)
        for key in ("baseline", "followup", "truth_new", "truth_enlarging"):
            nib.save(res[key], str(d / f"{key}.nii.gz"))
        (d / "lesions.json").write_text(json.dumps({"lesions": res["lesions"], "params": res["params"]}, indent=1))
        print(f"pair_{seed:04d}: {len(res['lesions'])} truth lesions, {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
