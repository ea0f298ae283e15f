"""Phantom cases with known truth: MS pair, WMH, glioma pair, microbleeds, ICH pair.

Every case is deterministic given its seed (one :class:`numpy.random.Generator` drives all
choices). Lesion volumes reported in ``case["lesions"]`` are counted on the truth label maps
that are returned (and written), so they agree exactly.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from neurorad.image.geometry import rigid_matrix
from neurorad.image.volume import Volume
from neurorad.phantom.anatomy import Anatomy, load_anatomy
from neurorad.phantom.render import (
    Acquisition,
    Lesion,
    acquire,
    acquire_labels,
    acquisition_grid,
    build_scene,
    oriented_acquisition_grid,
    random_lesion,
    render,
)

KINDS = ("ms-pair", "wmh", "glioma", "cmb", "ich-pair")


@dataclass
class PhantomCase:
    """Images and truth of one synthetic case, plus its JSON description (``case``)."""

    kind: str
    seed: int
    images: dict[str, Volume]
    truth: dict[str, Volume]
    case: dict[str, Any]
    dicom_studies: dict[str, dict[str, str]] = field(default_factory=dict)  # timepoint -> study attributes

    def __getattr__(self, name: str) -> Volume:
        # convenience: case.followup_flair, case.truth_new ...
        images = self.__dict__.get("images", {})
        truth = self.__dict__.get("truth", {})
        if name in images:
            return images[name]
        if name in truth:
            return truth[name]
        raise AttributeError(name)


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _candidates(region: str) -> np.ndarray:
    anat = load_anatomy()
    if region == "infratentorial":
        # cerebellar hemispheres: brain below the tentorium (MNI z < -25 mm), behind y = -45 mm
        ijk = np.argwhere(anat.brain_mask)
        xyz = ijk @ anat.affine[:3, :3].T + anat.affine[:3, 3]
        sel = (xyz[:, 2] < -25) & (xyz[:, 1] < -45) & (np.abs(xyz[:, 0]) > 12) & (np.abs(xyz[:, 0]) < 40)
        return np.ravel_multi_index(tuple(ijk[sel].T), anat.shape)
    return np.flatnonzero(anat.regions[region])


def _place(rng: np.random.Generator, anatomy: Anatomy, region: str, radius_mm: float,
           taken: list[tuple[np.ndarray, float]], gap_mm: float = 3.0, hemisphere: int = 0,
           min_abs_x_mm: float = 0.0) -> np.ndarray:
    """A random voxel centre in ``region`` at least ``gap_mm`` clear of lesions already placed
    (optionally in one hemisphere, ``sign(x) == hemisphere``, and at least ``min_abs_x_mm`` off the midline)."""
    cand = _candidates(region)
    for _ in range(500):
        flat = int(cand[rng.integers(len(cand))])
        ijk = np.array(np.unravel_index(flat, anatomy.shape), float)
        c = anatomy.affine[:3, :3] @ ijk + anatomy.affine[:3, 3]
        if (hemisphere and np.sign(c[0]) != hemisphere) or abs(c[0]) < min_abs_x_mm:
            continue
        if all(np.linalg.norm(c - c2) >= radius_mm + r2 + gap_mm for c2, r2 in taken):
            taken.append((c, radius_mm))
            return c
    raise ValueError(f"could not place a lesion of radius {radius_mm:.1f} mm in {region} clear of the others "
                     "(too many or too large lesions)")


def _misalignment(rng: np.random.Generator, misalign_deg: float | tuple[float, float, float],
                  misalign_mm: float | tuple[float, float, float], center: np.ndarray) -> tuple[np.ndarray, dict]:
    """Rigid motion: exact Euler angles/translation when given as triples, otherwise a random
    direction with the given magnitude (rotation angle about a random axis; translation length)."""
    from scipy.spatial.transform import Rotation

    if np.ndim(misalign_deg) == 0:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        rot = Rotation.from_rotvec(np.deg2rad(float(misalign_deg)) * axis)
        euler = rot.as_euler("xyz", degrees=True)
    else:
        euler = np.asarray(misalign_deg, float)
    if np.ndim(misalign_mm) == 0:
        d = rng.normal(size=3)
        trans = d / np.linalg.norm(d) * float(misalign_mm)
    else:
        trans = np.asarray(misalign_mm, float)
    m = rigid_matrix(tuple(euler), tuple(trans), center)
    angle = float(np.rad2deg(Rotation.from_matrix(m[:3, :3]).magnitude()))
    rec = {
        "description": "rigid motion of the subject: a point x (RAS mm) of the baseline/subject space "
                       "appears at matrix @ x in this acquisition's world space",
        "matrix_ras": np.round(m, 10).tolist(),
        "rotation_xyz_deg": [float(v) for v in euler],
        "rotation_deg": angle,
        "rotation_center_ras_mm": [float(v) for v in center],
        "translation_mm": [float(v) for v in trans],
    }
    return m, rec


def _brain_center(anatomy: Anatomy) -> np.ndarray:
    ijk = np.argwhere(anatomy.brain_mask).mean(axis=0)
    return anatomy.affine[:3, :3] @ ijk + anatomy.affine[:3, 3]


def _voxel_mm(in_plane_mm: float, slice_thickness_mm: float) -> tuple[float, float, float]:
    if in_plane_mm <= 0 or slice_thickness_mm <= 0:
        raise ValueError("in_plane_mm and slice_thickness_mm must be positive")
    return (float(in_plane_mm), float(in_plane_mm), float(slice_thickness_mm))


def _counts(label: Volume, ids: list[int]) -> dict[int, float]:
    counts = np.bincount(label.data.ravel().astype(np.int64), minlength=max(ids, default=0) + 1)
    return {i: round(float(counts[i] * label.voxel_volume_mm3), 6) for i in ids}


def _study(seed: int, kind: str, timepoint: str, days: int) -> dict[str, str]:
    from pydicom.uid import generate_uid

    date = (_dt.date(2024, 1, 15) + _dt.timedelta(days=days)).strftime("%Y%m%d")
    return {
        "StudyInstanceUID": generate_uid(entropy_srcs=[f"neurorad-phantom/{kind}/{seed}/{timepoint}"]),
        "StudyDate": date,
        "StudyTime": "093000",
        "AccessionNumber": f"ACC{seed % 10**6:06d}{days % 1000:03d}",
        "StudyDescription": f"neurorad phantom {kind} {timepoint}",
    }


def _identity(seed: int, kind: str) -> dict[str, str]:
    return {
        "PatientName": f"PHANTOM^{kind.upper().replace('-', '')}{seed}",
        "PatientID": f"NRP{seed:07d}",
        "PatientBirthDate": "19750310",
        "PatientSex": "F" if seed % 2 else "M",
    }


def _lesion_record(les: Lesion, ltype: str, location: str, followup_matrix: np.ndarray | None = None) -> dict:
    rec = {
        "id": int(les.lesion_id),
        "kind": les.kind,
        "type": ltype,
        "location": location,
        "label": int(les.label),
        "center_ras_mm": [round(float(v), 4) for v in les.center_mm],
        "diameter_mm": round(les.nominal_diameter_mm, 4),
        "semi_axes_mm": [round(float(v), 4) for v in les.semi_axes_mm],
    }
    if followup_matrix is not None:
        c = followup_matrix[:3, :3] @ les.center_mm + followup_matrix[:3, 3]
        rec["center_followup_ras_mm"] = [round(float(v), 4) for v in c]
    return rec


def _base_case(kind: str, seed: int, **params: Any) -> dict[str, Any]:
    from neurorad import __version__

    return {
        "kind": kind,
        "seed": int(seed),
        "generator": f"neurorad {__version__} neurorad.phantom",
        "anatomy": "Colin27 head (mricron ch2) + MNI152 2009c sym GM/WM/brain (nilearn), 1 mm base grid",
        "parameters": params,
    }


# --------------------------------------------------------------------------------------------
# MS pair
# --------------------------------------------------------------------------------------------
#: Where MS lesions are placed (MAGNIMS 2016 topography). ``ventricle_wall`` lesions touch the
#: lateral ventricles (caps at the horn tips, bands along the wall) and count as periventricular.
MS_LOCATIONS = ("periventricular", "juxtacortical", "deep_wm", "infratentorial", "ventricle_wall")
#: The four location bins the benchmark reports.
MS_LOCATION_BINS = {"periventricular": "periventricular", "ventricle_wall": "periventricular",
                    "juxtacortical": "juxtacortical", "deep_wm": "deep", "infratentorial": "infratentorial"}
_FLAIR_WM = 0.48  # TISSUE_INTENSITY["flair"]["wm"]


@lru_cache(maxsize=1)
def _ms_extra_regions() -> dict[str, np.ndarray]:
    """Flat candidate voxel indices of the widened phantom's extra regions (computed once):
    ``infratentorial`` white matter (brainstem and cerebellum below the tentorium, MNI
    coordinates) and ``ventricle_wall`` (white matter 0.5-2 mm from the lateral ventricles)."""
    from scipy import ndimage

    anat = load_anatomy()
    ijk = np.indices(anat.shape, dtype=np.float32)
    xyz = [anat.affine[r, 0] * ijk[0] + anat.affine[r, 1] * ijk[1] + anat.affine[r, 2] * ijk[2] + anat.affine[r, 3]
           for r in range(3)]
    wm = anat.fractions["wm"]
    depth = ndimage.distance_transform_edt(anat.brain_mask)
    stem = (np.abs(xyz[0]) < 14) & (xyz[1] > -42) & (xyz[1] < -12) & (xyz[2] < -14)
    cereb = (xyz[1] < -42) & (xyz[2] < -22)
    infra = (wm > 0.6) & (stem | cereb) & (depth > 4)
    d_vent = ndimage.distance_transform_edt(~anat.regions["ventricles"])
    wall = (wm > 0.5) & (d_vent >= 0.5) & (d_vent <= 2.0)
    return {"infratentorial": np.flatnonzero(infra), "ventricle_wall": np.flatnonzero(wall)}


@lru_cache(maxsize=1)
def _ventricle_points() -> np.ndarray:
    anat = load_anatomy()
    v = np.argwhere(anat.regions["ventricles"]).astype(float)
    return v @ anat.affine[:3, :3].T + anat.affine[:3, 3]


def _outward(c: np.ndarray) -> np.ndarray:
    """Unit vector from the nearest ventricle voxel to ``c`` (RAS)."""
    pts = _ventricle_points()
    d = c - pts[np.argmin(((pts - c) ** 2).sum(1))]
    n = float(np.linalg.norm(d))
    return d / n if n > 1e-6 else np.array([0.0, 0.0, 1.0])


def _place_flat(rng: np.random.Generator, cand: np.ndarray, radius_mm: float,
                taken: list[tuple[np.ndarray, float]], gap_mm: float = 3.0) -> np.ndarray:
    anat = load_anatomy()
    for _ in range(500):
        flat = int(cand[rng.integers(len(cand))])
        ijk = np.array(np.unravel_index(flat, anat.shape), float)
        c = anat.affine[:3, :3] @ ijk + anat.affine[:3, 3]
        if all(np.linalg.norm(c - c2) >= radius_mm + r2 + gap_mm for c2, r2 in taken):
            taken.append((c, radius_mm))
            return c
    raise ValueError(f"could not place a lesion of radius {radius_mm:.1f} mm clear of the others")


def _oriented_lesion(rng: np.random.Generator, lesion_id: int, center: np.ndarray, semi_axes_mm: np.ndarray,
                     long_dir: np.ndarray, irregularity: float = 0.1, **kw: Any) -> Lesion:
    """A blob whose first semi-axis lies along ``long_dir`` (Dawson finger: radial to the
    ventricle; band: along its wall), random roll about it, low-frequency surface bumps."""
    u = np.asarray(long_dir, float) / np.linalg.norm(long_dir)
    t = rng.normal(size=3)
    t -= t.dot(u) * u
    t /= np.linalg.norm(t)
    rot = np.stack([u, t, np.cross(u, t)], axis=1)
    nb = 5
    dirs = rng.normal(size=(nb, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = rng.integers(1, 4, size=nb).astype(float)
    return Lesion(lesion_id, "ms", 1, np.asarray(center, float), np.asarray(semi_axes_mm, float), rot,
                  dirs * freqs[:, None], rng.uniform(0, irregularity, nb) / np.sqrt(nb) * 2,
                  rng.uniform(0, 2 * np.pi, nb), **kw)


def _pair(v: float | tuple[float, float] | list[float]) -> tuple[float, float]:
    if np.ndim(v) == 0:
        return float(v), float(v)  # type: ignore[arg-type]
    a, b = v  # type: ignore[misc]
    return float(a), float(b)


def ms_pair(
    seed: int = 0,
    n_stable: int = 6,
    n_new: int = 3,
    n_enlarging: int = 1,
    contrasts: tuple[str, ...] = ("flair",),
    slice_thickness_mm: float | tuple[float, float] = 1.0,
    in_plane_mm: float = 1.0,
    misalign_deg: float | tuple[float, float, float] = 3.0,
    misalign_mm: float | tuple[float, float, float] = 3.0,
    snr: float | tuple[float, float] | None = 30.0,
    bias_strength: float | tuple[float, float] = 0.15,
    scanner_scaling: bool = True,
    diameter_range_mm: tuple[float, float] = (3.0, 15.0),
    growth_range: tuple[float, float] = (1.35, 1.6),
    lesion_contrast_range: tuple[float, float] | None = None,
    location_weights: dict[str, float] | None = None,
    flair_gm_wm: float | tuple[float, float] | None = None,
    flair_csf_wm: float | tuple[float, float] | None = None,
    gamma: float | tuple[float, float] = 1.0,
    stable_drift: float = 0.0,
    dawson_fraction: float = 0.0,
    slice_axis: int | tuple[int, int] = 2,
) -> PhantomCase:
    """Baseline and follow-up MS scans with stable, new and enlarging lesions.

    Lesions are blobby ellipsoids inside white matter (periventricular, juxtacortical and deep
    white matter, as in the MAGNIMS 2016 MRI criteria's topography). Stable lesions are in both
    scans; new lesions only at follow-up; enlarging lesions are a baseline lesion grown by a
    linear factor in ``growth_range`` (volume x 2.5-4). The follow-up subject is moved by a rigid
    transform (``misalign_deg`` rotation, ``misalign_mm`` translation; triples are exact
    x-y-z Euler angles / translations, scalars random directions with that magnitude).

    The defaults are the original phantom (bright lesions, three locations, one protocol); the
    options below widen it (issue 17; :func:`widened_ms_options` draws them at random) and draw
    nothing from the random stream when left at their defaults, so old seeds give old cases:

    * ``lesion_contrast_range``: FLAIR lesion / white-matter intensity ratio per lesion (e.g.
      1.15-2.5; default: the fixed lesion intensity 1.05 / 0.48 = 2.2 x WM, jittered 8%);
    * ``location_weights``: weights over :data:`MS_LOCATIONS` (adds ``infratentorial`` and
      ``ventricle_wall``: caps at the horn tips and bands along the wall, touching the ventricle);
    * ``dawson_fraction``: share of periventricular lesions shaped as Dawson fingers (ovoid,
      2.5-3.5 x longer than wide, long axis radial to the ventricle, inner tip touching it);
    * ``flair_gm_wm``, ``flair_csf_wm``: grey/white and CSF/white FLAIR ratios per time point
      (default table 1.375 and 0.21; realistic 3D FLAIR grey/white is about 1.1-1.3);
      ``gamma``: intensity nonlinearity per time point (``I ** gamma``); with different values
      at the two time points these model a protocol or scanner change, as do per-time-point
      ``snr``, ``bias_strength`` and ``slice_thickness_mm`` (pairs are (baseline, follow-up));
    * ``stable_drift``: stable (and enlarging) lesions' contrast changes at follow-up by a factor
      uniform in 1 +- ``stable_drift``;
    * ``slice_axis``: the world axis of each time point's slice normal (2 axial, the default; 1 coronal; 0
      sagittal; :data:`neurorad.phantom.render.SLICE_AXES`), stored as a scanner stores those planes
      (:func:`neurorad.phantom.render.oriented_acquisition_grid`): axial at one time point and coronal at the other
      are slices of two orientations, as the independent simulator draws them.

    Images: ``baseline_<contrast>``, ``followup_<contrast>``; truth: ``truth_new`` (new lesions,
    instance ids, on the FOLLOW-UP grid after motion), ``truth_enlarging``,
    ``truth_followup_lesions``, ``truth_baseline_lesions`` (baseline grid), and the brain masks
    ``truth_baseline_brain``, ``truth_followup_brain``.
    """
    for c in contrasts:
        if c not in ("t1", "t2", "flair", "t1c"):
            raise ValueError(f"unsupported MS contrast {c!r}")
    if min(n_stable, n_new, n_enlarging) < 0:
        raise ValueError("lesion counts must be >= 0")
    if location_weights is not None and (set(location_weights) - set(MS_LOCATIONS)):
        raise ValueError(f"unknown MS location(s) {sorted(set(location_weights) - set(MS_LOCATIONS))}; "
                         f"choose from {', '.join(MS_LOCATIONS)}")
    params = dict(n_stable=n_stable, n_new=n_new, n_enlarging=n_enlarging, contrasts=list(contrasts),
                  slice_thickness_mm=slice_thickness_mm, in_plane_mm=in_plane_mm, misalign_deg=misalign_deg,
                  misalign_mm=misalign_mm, snr=snr, bias_strength=bias_strength, scanner_scaling=scanner_scaling,
                  diameter_range_mm=list(diameter_range_mm), growth_range=list(growth_range),
                  lesion_contrast_range=lesion_contrast_range, location_weights=location_weights,
                  flair_gm_wm=flair_gm_wm, flair_csf_wm=flair_csf_wm, gamma=gamma, stable_drift=stable_drift,
                  dawson_fraction=dawson_fraction)
    axes = tuple(int(a) for a in _pair(slice_axis))
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"slice_axis must be 0 (sagittal), 1 (coronal) or 2 (axial) per time point, "
                         f"not {slice_axis!r}")
    if axes != (2, 2):
        params["slice_axis"] = list(axes)  # recorded only when set: axial pairs keep their old records
    rng = np.random.default_rng(seed)
    anat = load_anatomy()
    if location_weights is None:
        regions: tuple[str, ...] = ("periventricular", "juxtacortical", "deep_wm")
        weights = np.array([0.45, 0.25, 0.30])
    else:
        regions = tuple(location_weights)
        weights = np.array([float(location_weights[k]) for k in regions])
        weights = weights / weights.sum()
    taken: list[tuple[np.ndarray, float]] = []
    base_lesions: list[tuple[Lesion, str, str]] = []  # lesion, type, location
    shapes: dict[int, str] = {}
    contrast_of: dict[int, float] = {}
    next_id = 1
    specs = ["enlarging"] * n_enlarging + ["stable"] * n_stable + ["new"] * n_new
    lo, hi = diameter_range_mm
    tips = _horn_tips(anat) if location_weights is not None else []
    for ltype in specs:
        loc = str(regions[rng.choice(len(regions), p=weights)])
        if ltype == "enlarging":
            d = rng.uniform(max(lo, 4.0), min(hi / growth_range[1], 9.0))
            reserve = d / 2 * growth_range[1]
        else:
            d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # small lesions are more frequent
            if loc in ("juxtacortical", "infratentorial"):
                d = min(d, 8.0)
            reserve = d / 2
        shape = "blob"
        if location_weights is None and lesion_contrast_range is None:
            # the original phantom, draw for draw (old seeds give old cases)
            c = _place(rng, anat, loc, reserve, taken)
            scale = float(rng.uniform(0.92, 1.08))
            contrast = scale * 1.05 / _FLAIR_WM
            les = random_lesion(rng, next_id, "ms", 1, c, d, intensity_scale=scale)
            shapes[next_id], contrast_of[next_id] = shape, contrast
            base_lesions.append((les, ltype, loc))
            next_id += 1
            continue
        if lesion_contrast_range is None:
            scale = float(rng.uniform(0.92, 1.08))
            contrast = scale * 1.05 / _FLAIR_WM
        else:
            contrast = float(rng.uniform(*lesion_contrast_range))
            scale = contrast * _FLAIR_WM / 1.05
        if loc in ("periventricular", "juxtacortical", "deep_wm") and location_weights is None:
            c = _place(rng, anat, loc, reserve, taken)
            les = random_lesion(rng, next_id, "ms", 1, c, d, intensity_scale=scale)
        elif loc == "periventricular" and ltype != "enlarging" and rng.random() < dawson_fraction:
            # Dawson finger: ovoid, long axis radial to the ventricle, inner tip at the wall
            length = float(np.clip(d * 2.0, 7.0, 16.0))
            width = max(length / float(rng.uniform(2.5, 3.5)), 2.5)
            c0 = _place_flat(rng, _ms_extra_regions()["ventricle_wall"], length / 2, taken)
            out = _outward(c0)
            c = c0 + out * (length / 2 - 1.0)
            taken[-1] = (c, length / 2)
            les = _oriented_lesion(rng, next_id, c, np.array([length / 2, width / 2, width / 2]), out,
                                   intensity_scale=scale)
            d, shape = (length * width * width) ** (1 / 3), "dawson"
        elif loc == "ventricle_wall" and ltype != "enlarging":
            if rng.random() < 0.4 and tips:
                # cap at a horn tip
                name, p, outward = tips[int(rng.integers(len(tips)))]
                d = float(np.clip(d, 5.0, 12.0))
                c = p + outward * (d / 2 - 1.0)
                if not all(np.linalg.norm(c - c2) >= d / 2 + r2 + 3.0 for c2, r2 in taken):
                    c = _place_flat(rng, _ms_extra_regions()["ventricle_wall"], d / 2, taken)
                else:
                    taken.append((c, d / 2))
                les = _oriented_lesion(rng, next_id, c, np.array([d / 2, d / 2.6, d / 2.6]), _outward(c),
                                       intensity_scale=scale)
                shape = "cap"
            else:
                # band along the wall: long and flat, thin axis along the ventricle normal
                length = float(np.clip(d * 1.8, 6.0, 18.0))
                thick = float(rng.uniform(2.0, 3.5))
                c = _place_flat(rng, _ms_extra_regions()["ventricle_wall"], length / 2, taken)
                normal = _outward(c)
                t = rng.normal(size=3)
                t -= t.dot(normal) * normal
                les = _oriented_lesion(rng, next_id, c, np.array([length / 2, length / 4, thick / 2]), t,
                                       intensity_scale=scale)
                # third axis of the rotation along the normal (thin direction)
                u = les.rotation[:, 0]
                les.rotation = np.stack([u, np.cross(normal, u), normal], axis=1)
                d, shape = (length * length / 2 * thick) ** (1 / 3), "band"
        elif loc in ("infratentorial", "ventricle_wall"):
            c = _place_flat(rng, _ms_extra_regions()[loc], reserve, taken)
            les = random_lesion(rng, next_id, "ms", 1, c, d, intensity_scale=scale)
        else:
            c = _place(rng, anat, loc, reserve, taken)
            les = random_lesion(rng, next_id, "ms", 1, c, d, intensity_scale=scale)
        shapes[next_id] = shape
        contrast_of[next_id] = contrast
        base_lesions.append((les, ltype, loc))
        next_id += 1

    growth = {les.lesion_id: float(rng.uniform(*growth_range)) for les, t, _ in base_lesions if t == "enlarging"}
    baseline_set = [les for les, t, _ in base_lesions if t != "new"]
    followup_set = [les.scaled(growth[les.lesion_id]) if t == "enlarging" else les for les, t, _ in base_lesions]
    drift: dict[int, float] = {}
    if stable_drift > 0:
        for les in followup_set:
            if les.lesion_id in {x.lesion_id for x in baseline_set}:
                drift[les.lesion_id] = float(rng.uniform(1 - stable_drift, 1 + stable_drift))
        followup_set = [_with_scale(les, les.intensity_scale * drift[les.lesion_id]) if les.lesion_id in drift
                        else les for les in followup_set]

    center = _brain_center(anat)
    m_follow, motion = _misalignment(rng, misalign_deg, misalign_mm, center)
    thick = _pair(slice_thickness_mm)
    voxels = {"baseline": _voxel_mm(in_plane_mm, thick[0]), "followup": _voxel_mm(in_plane_mm, thick[1])}
    # array order (row, column, slice): the slice thickness is the last axis' spacing in every orientation
    grids = {tp: oriented_acquisition_grid(anat, in_plane_mm, thick[k], axes[k])
             for k, tp in enumerate(("baseline", "followup"))}
    scales = {"baseline": 1.0, "followup": float(rng.uniform(0.8, 1.25)) if scanner_scaling else 1.0}
    snrs = dict(zip(("baseline", "followup"), _pair(snr) if snr is not None else (None, None), strict=True))
    biases = dict(zip(("baseline", "followup"), _pair(bias_strength), strict=True))
    gammas = dict(zip(("baseline", "followup"), _pair(gamma), strict=True))
    tissue: dict[str, dict[str, float] | None] = {"baseline": None, "followup": None}
    if flair_gm_wm is not None or flair_csf_wm is not None:
        from neurorad.phantom.render import TISSUE_INTENSITY

        gmr = _pair(flair_gm_wm) if flair_gm_wm is not None else (0.66 / _FLAIR_WM,) * 2
        csr = _pair(flair_csf_wm) if flair_csf_wm is not None else (0.10 / _FLAIR_WM,) * 2
        for k, tp in enumerate(("baseline", "followup")):
            tissue[tp] = dict(TISSUE_INTENSITY["flair"], gm=gmr[k] * _FLAIR_WM, csf=csr[k] * _FLAIR_WM)

    images: dict[str, Volume] = {}
    truth: dict[str, Volume] = {}
    acq_records: dict[str, list[dict]] = {}
    for tp, lesions, wt in (("baseline", baseline_set, None), ("followup", followup_set, m_follow)):
        grid = grids[tp]
        scene = build_scene(lesions, anat)
        acq = Acquisition(voxels[tp], wt, snrs[tp], bias_strength=biases[tp], scale=scales[tp])
        acq_records[tp] = []
        for contrast in contrasts:
            img = render(anat, scene, contrast, tissue[tp] if contrast == "flair" else None)
            if gammas[tp] != 1.0:
                img = np.power(np.maximum(img, 0) / _FLAIR_WM, gammas[tp]).astype(np.float32) * np.float32(_FLAIR_WM)
            vol, rec = acquire(anat, img, contrast, acq, rng, grid)
            vol.metadata.update(timepoint=tp, series_description=f"{contrast.upper()} {tp}")
            images[f"{tp}_{contrast}"] = vol
            rec["gamma"] = gammas[tp]
            if tissue[tp] is not None and contrast == "flair":
                rec["flair_tissue"] = dict(tissue[tp])
            acq_records[tp].append(rec)
        labels = acquire_labels(anat, scene.labels, grid[0], grid[1], wt)
        lab_vol = Volume(labels, grid[1], {"timepoint": tp, "truth": "lesion instance ids"})
        truth[f"truth_{tp}_lesions"] = lab_vol
        brain = acquire_labels(anat, anat.brain_mask.astype(np.uint8), grid[0], grid[1], wt)
        truth[f"truth_{tp}_brain"] = Volume(brain, grid[1], {"timepoint": tp, "truth": "brain mask"})

    fgrid = grids["followup"]
    fl = truth["truth_followup_lesions"].data
    new_ids = [les.lesion_id for les, t, _ in base_lesions if t == "new"]
    enl_ids = [les.lesion_id for les, t, _ in base_lesions if t == "enlarging"]
    truth["truth_new"] = Volume(np.where(np.isin(fl, new_ids), fl, 0).astype(np.uint16), fgrid[1],
                                {"timepoint": "followup", "truth": "new lesion instance ids"})
    truth["truth_enlarging"] = Volume(np.where(np.isin(fl, enl_ids), fl, 0).astype(np.uint16), fgrid[1],
                                      {"timepoint": "followup", "truth": "enlarging lesion instance ids"})

    ids = [les.lesion_id for les, _, _ in base_lesions]
    vol_b = _counts(truth["truth_baseline_lesions"], ids)
    vol_f = _counts(truth["truth_followup_lesions"], ids)
    records = []
    for les, t, loc in base_lesions:
        rec = _lesion_record(les if t != "enlarging" else les.scaled(growth[les.lesion_id]), t, loc, m_follow)
        if t == "enlarging":
            rec["diameter_mm_baseline"] = round(les.nominal_diameter_mm, 4)
            rec["growth_factor_linear"] = round(growth[les.lesion_id], 4)
        rec["volume_mm3_baseline"] = vol_b[les.lesion_id]
        rec["volume_mm3_followup"] = vol_f[les.lesion_id]
        rec["volume_mm3"] = vol_f[les.lesion_id]
        rec["location_bin"] = MS_LOCATION_BINS[loc]
        rec["shape"] = shapes[les.lesion_id]
        rec["contrast_to_wm"] = round(contrast_of[les.lesion_id], 4)
        if les.lesion_id in drift:
            rec["followup_contrast_factor"] = round(drift[les.lesion_id], 4)
        records.append(rec)

    case = _base_case("ms-pair", seed, **params)
    case.update(
        timepoints=["baseline", "followup"],
        lesions=records,
        counts={"stable": n_stable, "new": n_new, "enlarging": n_enlarging,
                "new_visible": int(sum(vol_f[i] > 0 for i in new_ids))},
        transform={"baseline": None, "followup": motion},
        acquisition=acq_records,
        intensity_scale=scales,
        grid={"shape": list(grids["baseline"][0]), "affine": np.round(grids["baseline"][1], 10).tolist(),
              "voxel_mm": list(voxels["baseline"])},
        grid_followup={"shape": list(fgrid[0]), "affine": np.round(fgrid[1], 10).tolist(),
                       "voxel_mm": list(voxels["followup"])},
        volume_definition="volume_mm3_* = voxels with that id in the truth map of that time point x voxel volume",
    )
    studies = {"baseline": _study(seed, "ms-pair", "baseline", 0), "followup": _study(seed, "ms-pair", "followup", 365)}
    case["dicom"] = {"patient": _identity(seed, "ms-pair"), "studies": studies}
    return PhantomCase("ms-pair", seed, images, truth, case, studies)


def _with_scale(les: Lesion, intensity_scale: float) -> Lesion:
    out = les.scaled(1.0)
    out.intensity_scale = float(intensity_scale)
    return out


#: the widened phantom's enlarging lesions grow by a linear factor in this range: volume x 1.8-4.1. Clinically an
#: enlarging lesion is one that grew by more than repeated measurement varies, i.e. by 45 % in area for a lesion
#: under 0.67 cm^2 (Molyneux et al., Arch Neurol 1992;49:261-263), about x1.75 in volume. Until workflow 1.11.0
#: the widened phantom kept ``ms_pair``'s default (1.35, 1.6), volume x 2.5-4: every enlarging lesion grew by at
#: least 2.5x, and the enlarging-lesion rules tuned on it (``ClassifyParams.enlarging_min_volume_ratio`` 1.8,
#: ``rescue_growth_ratio`` 2.5) never met a lesion that grew less; the independent simulator's enlarging lesions
#: (volume x 1.8-4) were lost to them (docs/ms-lesions-log.md, "Workflow 1.11.0"). The old range stays reachable:
#: ``{**widened_ms_options(seed), "growth_range": (1.35, 1.6)}``. The upper bound is unchanged, so the random
#: stream and every pair without an enlarging lesion are unchanged too
WIDENED_GROWTH_RANGE: tuple[float, float] = (round(1.8 ** (1 / 3), 4), 1.6)


#: slice orientations of :func:`widened_ms_options`: ``"axial"`` (every pair sliced along z, the benchmark's and the
#: tuning pairs' geometry), ``"random"`` (each time point's plane drawn: axial 0.6, coronal 0.3, sagittal 0.1; a 1 mm
#: time point is a 3D image stored in that plane), ``"crossed"`` (both time points 3 or 5 mm slices of two different
#: planes, drawn with those weights)
WIDENED_ORIENTATIONS = ("axial", "random", "crossed")
_PLANE_WEIGHTS = {2: 0.6, 1: 0.3, 0: 0.1}  # world axis of the slice normal -> weight


def _orientation_draw(seed: int, orientation: str, thick: list[float]) -> tuple[list[float], tuple[int, int]]:
    """Slice thicknesses and planes of a widened pair for ``orientation`` (:data:`WIDENED_ORIENTATIONS`), from a
    random stream of their own, so the pair's lesions, motion and protocol are those of its axial twin."""
    if orientation == "axial":
        return thick, (2, 2)
    if orientation not in WIDENED_ORIENTATIONS:
        raise ValueError(f"unknown orientation {orientation!r}; choose from {', '.join(WIDENED_ORIENTATIONS)}")
    rng = np.random.default_rng(7_500_000 + int(seed))
    planes, weights = list(_PLANE_WEIGHTS), np.array(list(_PLANE_WEIGHTS.values()))
    first = int(rng.choice(planes, p=weights / weights.sum()))
    if orientation == "random":
        return thick, (first, int(rng.choice(planes, p=weights / weights.sum())))
    rest = [a for a in planes if a != first]
    w = np.array([_PLANE_WEIGHTS[a] for a in rest])
    second = int(rng.choice(rest, p=w / w.sum()))
    return [float(rng.choice([3.0, 5.0])), float(rng.choice([3.0, 5.0]))], (first, second)


def widened_ms_options(seed: int, negative: bool | None = None, orientation: str = "axial") -> dict[str, Any]:
    """Random settings of one widened MS pair (issue 17): what real follow-ups look like.

    Lesion/WM FLAIR contrast 1.15-2.5; periventricular (incl. touching the ventricles: caps and
    bands; Dawson fingers), juxtacortical, infratentorial and deep placement; realistic grey/white
    FLAIR contrast (1.08-1.30) that differs between the time points, as do CSF suppression,
    intensity nonlinearity, noise and bias (a protocol or scanner change); stable lesions' signal
    drifting by up to 10%; 1, 3 or 5 mm slices at either time point; motion up to 15 degrees and
    15 mm; enlarging lesions grown by volume x 1.8-4.1 (:data:`WIDENED_GROWTH_RANGE`).
    ``negative`` (default: every third seed) gives a pair with no new or enlarging lesion.
    ``orientation`` (:data:`WIDENED_ORIENTATIONS`): the slice planes; anything but ``"axial"`` adds ``slice_axis``
    and changes nothing else of the pair (``"crossed"`` also redraws both thicknesses as 3 or 5 mm).
    Returns keyword arguments of :func:`ms_pair` (seed included).
    """
    rng = np.random.default_rng(7_000_000 + int(seed))
    neg = (seed % 3 == 0) if negative is None else bool(negative)
    thick = [float(rng.choice([1.0, 1.0, 3.0, 5.0])) for _ in range(2)]
    thick, axes = _orientation_draw(seed, orientation, thick)
    planes = {} if axes == (2, 2) else {"slice_axis": axes}
    return dict(
        seed=int(seed),
        n_stable=int(rng.integers(3, 9)),
        n_new=0 if neg else int(rng.integers(1, 5)),
        n_enlarging=0 if neg else int(rng.integers(0, 2)),
        in_plane_mm=1.0,
        slice_thickness_mm=(thick[0], thick[1]),
        misalign_deg=float(rng.uniform(0, 15)),
        misalign_mm=float(rng.uniform(0, 15)),
        snr=(float(rng.uniform(20, 40)), float(rng.uniform(20, 40))),
        bias_strength=(float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.1, 0.3))),
        scanner_scaling=True,
        diameter_range_mm=(3.0, 15.0),
        lesion_contrast_range=(1.15, 2.5),
        location_weights={"periventricular": 0.25, "ventricle_wall": 0.2, "juxtacortical": 0.25,
                          "deep_wm": 0.15, "infratentorial": 0.15},
        flair_gm_wm=(float(rng.uniform(1.08, 1.3)), float(rng.uniform(1.08, 1.3))),
        flair_csf_wm=(float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.1, 0.3))),
        gamma=(1.0, float(rng.uniform(0.85, 1.15))),
        stable_drift=0.1,
        dawson_fraction=0.5,
        growth_range=WIDENED_GROWTH_RANGE,
        **planes,
    )


# --------------------------------------------------------------------------------------------
# generic acquisition of one or two time points
# --------------------------------------------------------------------------------------------
def _acquire_timepoints(
    rng: np.random.Generator,
    anat: Anatomy,
    lesions_by_tp: dict[str, list[Lesion]],
    transforms: dict[str, np.ndarray | None],
    contrasts: tuple[str, ...],
    voxel: tuple[float, float, float],
    snr: float | None,
    bias_strength: float,
    scales: dict[str, float],
    truth_name: str,
    noise_hu: float = 3.0,
) -> tuple[dict[str, Volume], dict[str, Volume], dict[str, list[dict]], tuple]:
    """Images ``<tp>_<contrast>`` (or ``<contrast>`` for a single time point ``""``), truth maps
    ``truth_<tp>_<truth_name>`` (instance ids), ``truth_<tp>_<truth_name>_class`` (class labels),
    ``truth_<tp>_brain``."""
    grid = acquisition_grid(anat, voxel)
    images: dict[str, Volume] = {}
    truth: dict[str, Volume] = {}
    records: dict[str, list[dict]] = {}
    for tp, lesions in lesions_by_tp.items():
        wt = transforms.get(tp)
        scene = build_scene(lesions, anat)
        acq = Acquisition(voxel, wt, snr, noise_hu=noise_hu, bias_strength=bias_strength, scale=scales.get(tp, 1.0))
        records[tp or "single"] = []
        prefix = f"{tp}_" if tp else ""
        for contrast in contrasts:
            vol, rec = acquire(anat, render(anat, scene, contrast), contrast, acq, rng, grid)
            vol.metadata.update(timepoint=tp or "baseline", series_description=f"{contrast.upper()} {tp}".strip())
            images[f"{prefix}{contrast}"] = vol
            records[tp or "single"].append(rec)
        meta = {"timepoint": tp or "baseline"}
        ids = acquire_labels(anat, scene.labels, grid[0], grid[1], wt)
        truth[f"truth_{prefix}{truth_name}"] = Volume(ids, grid[1], {**meta, "truth": "instance ids"})
        if len({les.label for les in lesions}) > 1:
            cls = acquire_labels(anat, scene.classes, grid[0], grid[1], wt)
            truth[f"truth_{prefix}{truth_name}_class"] = Volume(cls, grid[1], {**meta, "truth": "class labels"})
        brain = acquire_labels(anat, anat.brain_mask.astype(np.uint8), grid[0], grid[1], wt)
        truth[f"truth_{prefix}brain"] = Volume(brain, grid[1], {**meta, "truth": "brain mask"})
    return images, truth, records, grid


def _grid_record(grid: tuple, voxel: tuple[float, float, float]) -> dict:
    return {"shape": list(grid[0]), "affine": np.round(grid[1], 10).tolist(), "voxel_mm": list(voxel)}


# --------------------------------------------------------------------------------------------
# white-matter hyperintensities
# --------------------------------------------------------------------------------------------
def _horn_tips(anat: Anatomy) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Anterior and posterior tips of each lateral ventricle (RAS mm) with the outward direction."""
    vent = np.argwhere(anat.regions["ventricles"])
    xyz = vent @ anat.affine[:3, :3].T + anat.affine[:3, 3]
    tips = []
    for side, sign in (("left", -1), ("right", 1)):
        pts = xyz[np.sign(xyz[:, 0]) == sign]
        for horn, fn, d in (("frontal", np.argmax, 1.0), ("occipital", np.argmin, -1.0)):
            p = pts[fn(pts[:, 1])]
            tips.append((f"{side} {horn} horn", p, np.array([0.0, d, 0.0])))
    return tips


def wmh(
    seed: int = 0,
    n_punctate: int = 8,
    n_caps: int = 2,
    n_confluent: int = 1,
    contrasts: tuple[str, ...] = ("flair", "t1"),
    slice_thickness_mm: float = 1.0,
    in_plane_mm: float = 1.0,
    snr: float | None = 30.0,
    bias_strength: float = 0.15,
) -> PhantomCase:
    """White-matter hyperintensities of presumed vascular origin (STRIVE, Wardlaw et al., Lancet
    Neurol 2013): periventricular caps at the horn tips, confluent periventricular lesions (a
    union of overlapping blobs, one instance) and punctate deep lesions (2-5 mm). Fazekas-style
    grading is left to the workflow; the truth holds every lesion.

    Images ``flair``, ``t1`` (and any of t2/t1c); truth ``truth_wmh`` (instance ids), ``truth_wmh_class``
    (1 cap, 2 confluent, 3 punctate) and ``truth_brain``.
    """
    if n_caps > 4:
        raise ValueError("at most 4 periventricular caps (two horns per lateral ventricle)")
    params = dict(n_punctate=n_punctate, n_caps=n_caps, n_confluent=n_confluent, contrasts=list(contrasts),
                  slice_thickness_mm=slice_thickness_mm, in_plane_mm=in_plane_mm, snr=snr,
                  bias_strength=bias_strength)
    rng = np.random.default_rng(seed)
    anat = load_anatomy()
    taken: list[tuple[np.ndarray, float]] = []
    lesions: list[Lesion] = []
    meta: list[tuple[int, str, str, float]] = []  # id, type, location, nominal diameter
    nid = 1
    tips = _horn_tips(anat)
    for t in rng.permutation(len(tips))[:n_caps]:
        name, p, outward = tips[int(t)]
        d = float(rng.uniform(8.0, 13.0))
        c = p + outward * (d / 2 - 1.0)
        taken.append((c, d / 2))
        les = random_lesion(rng, nid, "wmh", 1, c, d, elongation=1.3, irregularity=0.1)
        lesions.append(les)
        meta.append((nid, "periventricular_cap", name, d))
        nid += 1
    for _ in range(n_confluent):
        d0 = float(rng.uniform(7.0, 10.0))
        c0 = _place(rng, anat, "periventricular", 12.0, taken, gap_mm=4.0)
        for _k in range(int(rng.integers(3, 6))):
            c = c0 + rng.normal(0, 4.0, 3)
            lesions.append(random_lesion(rng, nid, "wmh", 2, c, d0 * rng.uniform(0.7, 1.1), irregularity=0.2))
        meta.append((nid, "confluent", "periventricular", 24.0))
        nid += 1
    for _ in range(n_punctate):
        d = float(rng.uniform(2.5, 5.0))
        c = _place(rng, anat, "deep_wm", d / 2, taken)
        lesions.append(random_lesion(rng, nid, "wmh", 3, c, d, irregularity=0.05))
        meta.append((nid, "punctate", "deep_wm", d))
        nid += 1
    voxel = _voxel_mm(in_plane_mm, slice_thickness_mm)
    images, truth, records, grid = _acquire_timepoints(rng, anat, {"": lesions}, {}, contrasts, voxel, snr,
                                                        bias_strength, {}, "wmh")
    ids = [m[0] for m in meta]
    vols = _counts(truth["truth_wmh"], ids)
    by_id = {}
    for les in lesions:
        by_id.setdefault(les.lesion_id, les)
    recs = []
    for i, t, loc, d in meta:
        r = _lesion_record(by_id[i], t, loc)
        r["diameter_mm"] = round(d, 4)
        r["volume_mm3"] = vols[i]
        recs.append(r)
    case = _base_case("wmh", seed, **params)
    case.update(timepoints=["baseline"], lesions=recs, total_volume_mm3=float(sum(vols.values())),
                classes={"1": "periventricular_cap", "2": "confluent", "3": "punctate"},
                transform={"baseline": None}, acquisition=records, grid=_grid_record(grid, voxel))
    studies = {"baseline": _study(seed, "wmh", "baseline", 0)}
    case["dicom"] = {"patient": _identity(seed, "wmh"), "studies": studies}
    return PhantomCase("wmh", seed, images, truth, case, studies)


# --------------------------------------------------------------------------------------------
# glioma
# --------------------------------------------------------------------------------------------
GLIOMA_LABELS = {1: "necrosis", 2: "oedema", 3: "enhancing", 4: "non_enhancing"}


def _glioma_parts(rng: np.random.Generator, centre: np.ndarray, d_tumour: float) -> list[Lesion]:
    """Oedema, non-enhancing tumour, enhancing rim, necrosis: painted in that order."""
    core = random_lesion(rng, 3, "enhancing", 3, centre, d_tumour, elongation=1.3, irregularity=0.15,
                         restrict="brain")
    oed = core.scaled(float(rng.uniform(1.7, 2.2)), lesion_id=2)
    oed.kind, oed.label, oed.restrict = "oedema", 2, "wm"
    oed.bump_amps = oed.bump_amps * 2.0
    net = core.scaled(float(rng.uniform(0.8, 1.0)), lesion_id=4)
    net.kind, net.label = "non_enhancing", 4
    shift = rng.normal(size=3)
    net.center_mm = centre + shift / np.linalg.norm(shift) * d_tumour * 0.35
    nec = core.scaled(float(rng.uniform(0.45, 0.6)), lesion_id=1)
    nec.kind, nec.label = "necrosis", 1
    return [oed, net, core, nec]


def glioma(
    seed: int = 0,
    diameter_mm: float | None = None,
    growth: float | None = None,
    pair: bool = True,
    contrasts: tuple[str, ...] = ("t1", "t1c", "t2", "flair"),
    slice_thickness_mm: float = 1.0,
    in_plane_mm: float = 1.0,
    misalign_deg: float | tuple[float, float, float] = 0.0,
    misalign_mm: float | tuple[float, float, float] = 0.0,
    snr: float | None = 30.0,
    bias_strength: float = 0.15,
) -> PhantomCase:
    """A high-grade glioma with the BraTS sub-regions (Menze et al., IEEE TMI 2015): necrosis (1),
    peritumoural oedema (2, confined to white matter), enhancing rim (3, bright on T1c) and
    non-enhancing tumour (4). With ``pair`` a follow-up shows the tumour grown by the linear
    factor ``growth`` (default random 1.15-1.4). No mass effect is modelled.

    Truth ``truth_<tp>_tumour_class`` holds the sub-region labels (also ``truth_<tp>_tumour``,
    identical ids) on each time point's grid.
    """
    params = dict(diameter_mm=diameter_mm, growth=growth, pair=pair, contrasts=list(contrasts),
                  slice_thickness_mm=slice_thickness_mm, in_plane_mm=in_plane_mm, misalign_deg=misalign_deg,
                  misalign_mm=misalign_mm, snr=snr, bias_strength=bias_strength)
    rng = np.random.default_rng(seed)
    anat = load_anatomy()
    d = float(diameter_mm if diameter_mm is not None else rng.uniform(20.0, 35.0))
    g = float(growth if growth is not None else rng.uniform(1.15, 1.4))
    centre = _place(rng, anat, "deep_wm", 0.0, [])
    base = _glioma_parts(rng, centre, d)
    tps: dict[str, list[Lesion]] = {"baseline": base}
    transforms: dict[str, np.ndarray | None] = {"baseline": None}
    motion = None
    if pair:
        tps["followup"] = [les.scaled(g) for les in base]
        for les_b, les_f in zip(base, tps["followup"], strict=True):
            les_f.center_mm = centre + (les_b.center_mm - centre) * g
        m, motion = _misalignment(rng, misalign_deg, misalign_mm, _brain_center(anat))
        transforms["followup"] = m
    voxel = _voxel_mm(in_plane_mm, slice_thickness_mm)
    images, truth, records, grid = _acquire_timepoints(rng, anat, tps, transforms, contrasts, voxel, snr,
                                                        bias_strength, {}, "tumour")
    recs = []
    volumes: dict[str, dict[str, float]] = {}
    for tp in tps:
        v = _counts(truth[f"truth_{tp}_tumour_class"], list(GLIOMA_LABELS))
        volumes[tp] = {GLIOMA_LABELS[k]: val for k, val in v.items()}
        volumes[tp]["whole_tumour"] = float(sum(v.values()))
        volumes[tp]["tumour_core"] = float(v[1] + v[3] + v[4])
    for les in base:
        r = _lesion_record(les, "baseline" if not pair else "growing", "deep_wm",
                           transforms.get("followup") if pair else None)
        r["name"] = GLIOMA_LABELS[les.label]
        for tp in tps:
            r[f"volume_mm3_{tp}"] = volumes[tp][GLIOMA_LABELS[les.label]]
        r["volume_mm3"] = r[f"volume_mm3_{list(tps)[-1]}"]
        recs.append(r)
    case = _base_case("glioma", seed, **params)
    case.update(timepoints=list(tps), lesions=recs, labels={str(k): v for k, v in GLIOMA_LABELS.items()},
                volumes_mm3=volumes, growth_factor_linear=g if pair else None, tumour_diameter_mm=d,
                transform={"baseline": None, **({"followup": motion} if pair else {})},
                acquisition=records, grid=_grid_record(grid, voxel))
    studies = {tp: _study(seed, "glioma", tp, 90 * i) for i, tp in enumerate(tps)}
    case["dicom"] = {"patient": _identity(seed, "glioma"), "studies": studies}
    return PhantomCase("glioma", seed, images, truth, case, studies)


# --------------------------------------------------------------------------------------------
# cerebral microbleeds
# --------------------------------------------------------------------------------------------
def cmb(
    seed: int = 0,
    n_microbleeds: int = 8,
    contrasts: tuple[str, ...] = ("swi", "t1"),
    bloom_factor: float = 1.4,
    slice_thickness_mm: float = 1.0,
    in_plane_mm: float = 1.0,
    snr: float | None = 30.0,
    bias_strength: float = 0.15,
) -> PhantomCase:
    """Cerebral microbleeds (Greenberg et al., Lancet Neurol 2009: 2-10 mm round dark foci on
    susceptibility-weighted MRI), lobar (cortico-subcortical) and deep (basal ganglia/thalamus).
    The truth label is the focus of nominal diameter 2-10 mm; on SWI (and T2) the darkening
    "blooms" to ``bloom_factor`` x that diameter; T1 and FLAIR do not show them.

    Truth ``truth_cmb`` (instance ids) and ``truth_brain``.
    """
    params = dict(n_microbleeds=n_microbleeds, contrasts=list(contrasts), bloom_factor=bloom_factor,
                  slice_thickness_mm=slice_thickness_mm, in_plane_mm=in_plane_mm, snr=snr,
                  bias_strength=bias_strength)
    rng = np.random.default_rng(seed)
    anat = load_anatomy()
    taken: list[tuple[np.ndarray, float]] = []
    lesions, meta = [], []
    for i in range(1, n_microbleeds + 1):
        loc = "lobar" if rng.random() < 0.65 else "deep_gm"
        d = float(np.exp(rng.uniform(np.log(2.0), np.log(10.0))))
        c = _place(rng, anat, loc, d / 2 * bloom_factor, taken)
        les = random_lesion(rng, i, "microbleed", 1, c, d, elongation=1.1, irregularity=0.03, restrict="brain",
                            bloom_factor=bloom_factor)
        lesions.append(les)
        meta.append(loc)
    voxel = _voxel_mm(in_plane_mm, slice_thickness_mm)
    images, truth, records, grid = _acquire_timepoints(rng, anat, {"": lesions}, {}, contrasts, voxel, snr,
                                                        bias_strength, {}, "cmb")
    vols = _counts(truth["truth_cmb"], [les.lesion_id for les in lesions])
    recs = []
    for les, loc in zip(lesions, meta, strict=True):
        r = _lesion_record(les, "microbleed", loc)
        r["volume_mm3"] = vols[les.lesion_id]
        r["bloom_factor"] = bloom_factor
        recs.append(r)
    case = _base_case("cmb", seed, **params)
    case.update(timepoints=["baseline"], lesions=recs, transform={"baseline": None}, acquisition=records,
                grid=_grid_record(grid, voxel))
    studies = {"baseline": _study(seed, "cmb", "baseline", 0)}
    case["dicom"] = {"patient": _identity(seed, "cmb"), "studies": studies}
    return PhantomCase("cmb", seed, images, truth, case, studies)


# --------------------------------------------------------------------------------------------
# intracerebral haemorrhage on CT
# --------------------------------------------------------------------------------------------
ICH_LABELS = {1: "haematoma", 2: "perihaematomal_oedema"}


def ich_pair(
    seed: int = 0,
    volume_ml: float | None = None,
    expansion_factor: float | None = None,
    slice_thickness_mm: float = 1.0,
    in_plane_mm: float = 1.0,
    misalign_deg: float | tuple[float, float, float] = 3.0,
    misalign_mm: float | tuple[float, float, float] = 3.0,
    noise_hu: float = 3.0,
    location: str | None = None,
) -> PhantomCase:
    """Spontaneous intracerebral haemorrhage on two non-contrast head CTs (Hounsfield units):
    a hyperdense haematoma (~70 HU) in the deep grey matter, lobar or (``location =
    "infratentorial"``) in a cerebellar hemisphere, with a hypodense rim of
    perihaematomal oedema (~20 HU), expanding between the baseline and follow-up scans by the
    VOLUME factor ``expansion_factor`` (default random 1.0-2.0). Haematoma expansion is often
    defined as > 6 mL or > 33 % growth (Dowlatshahi et al., Stroke 2011); both numbers are in
    the JSON, the rule itself lives in the clinical layer.

    Truth ``truth_<tp>_ich_class`` (1 haematoma, 2 oedema) on each time point's grid.
    """
    params = dict(volume_ml=volume_ml, expansion_factor=expansion_factor, slice_thickness_mm=slice_thickness_mm,
                  in_plane_mm=in_plane_mm, misalign_deg=misalign_deg, misalign_mm=misalign_mm, noise_hu=noise_hu,
                  location=location)
    if location not in (None, "deep_gm", "lobar", "infratentorial"):
        raise ValueError(f"location must be deep_gm, lobar or infratentorial, not {location!r}")
    rng = np.random.default_rng(seed)
    anat = load_anatomy()
    v0 = float(volume_ml if volume_ml is not None else rng.uniform(5.0, 30.0))
    f = float(expansion_factor if expansion_factor is not None else rng.uniform(1.0, 2.0))
    d = 2.0 * (3.0 * v0 * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    draw = "deep_gm" if rng.random() < 0.7 else "lobar"  # drawn always: seeds keep their cases
    loc = location or draw
    # deep: putamen/thalamus of one hemisphere (not the midline); lobar: GM/WM junction
    centre = _place(rng, anat, loc, 0.0, [], min_abs_x_mm=18.0 if loc == "deep_gm" else 10.0)
    hem = random_lesion(rng, 1, "haematoma", 1, centre, d, elongation=1.4, irregularity=0.12, restrict="parenchyma")
    oed = hem.scaled(float(rng.uniform(1.25, 1.4)), lesion_id=2)
    oed.kind, oed.label, oed.restrict = "perihaematomal_oedema", 2, "parenchyma"
    lin = f ** (1.0 / 3.0)
    follow = [oed.scaled(lin * 1.05), hem.scaled(lin)]
    m, motion = _misalignment(rng, misalign_deg, misalign_mm, _brain_center(anat))
    voxel = _voxel_mm(in_plane_mm, slice_thickness_mm)
    images, truth, records, grid = _acquire_timepoints(
        rng, anat, {"baseline": [oed, hem], "followup": follow}, {"baseline": None, "followup": m}, ("ct",),
        voxel, None, 0.0, {}, "ich", noise_hu=noise_hu)
    volumes = {tp: {ICH_LABELS[k]: v for k, v in _counts(truth[f"truth_{tp}_ich_class"], [1, 2]).items()}
               for tp in ("baseline", "followup")}
    hb, hf = volumes["baseline"]["haematoma"], volumes["followup"]["haematoma"]
    recs = []
    for les in (hem, oed):
        r = _lesion_record(les, "expanding" if f > 1 else "stable", loc, m)
        r["name"] = ICH_LABELS[les.label]
        r["volume_mm3_baseline"] = volumes["baseline"][ICH_LABELS[les.label]]
        r["volume_mm3_followup"] = volumes["followup"][ICH_LABELS[les.label]]
        r["volume_mm3"] = r["volume_mm3_followup"]
        recs.append(r)
    case = _base_case("ich-pair", seed, **params)
    case.update(
        timepoints=["baseline", "followup"], lesions=recs, labels={str(k): v for k, v in ICH_LABELS.items()},
        volumes_mm3=volumes, nominal_volume_ml=v0, expansion_factor_nominal=f,
        haematoma_volume_ml={"baseline": hb / 1000.0, "followup": hf / 1000.0},
        expansion_ml=(hf - hb) / 1000.0, expansion_percent=100.0 * (hf - hb) / hb if hb else None,
        transform={"baseline": None, "followup": motion}, acquisition=records, grid=_grid_record(grid, voxel),
    )
    studies = {"baseline": _study(seed, "ich-pair", "baseline", 0), "followup": _study(seed, "ich-pair", "followup", 1)}
    case["dicom"] = {"patient": _identity(seed, "ich-pair"), "studies": studies}
    return PhantomCase("ich-pair", seed, images, truth, case, studies)


def make_case(kind: str, seed: int = 0, **options: Any) -> PhantomCase:
    """Dispatch by kind name (``ms-pair``, ``wmh``, ``glioma``, ``cmb``, ``ich-pair``)."""
    fns = {"ms-pair": ms_pair, "wmh": wmh, "glioma": glioma, "cmb": cmb, "ich-pair": ich_pair}
    if kind not in fns:
        raise ValueError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    return fns[kind](seed=seed, **options)
