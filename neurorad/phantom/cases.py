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
    return np.flatnonzero(load_anatomy().regions[region])


def _place(rng: np.random.Generator, anatomy: Anatomy, region: str, radius_mm: float,
           taken: list[tuple[np.ndarray, float]], gap_mm: float = 3.0, hemisphere: int = 0) -> np.ndarray:
    """A random voxel centre in ``region`` at least ``gap_mm`` clear of lesions already placed."""
    cand = _candidates(region)
    for _ in range(500):
        flat = int(cand[rng.integers(len(cand))])
        ijk = np.array(np.unravel_index(flat, anatomy.shape), float)
        c = anatomy.affine[:3, :3] @ ijk + anatomy.affine[:3, 3]
        if hemisphere and np.sign(c[0]) != hemisphere:
            continue
        if all(np.linalg.norm(c - c2) >= radius_mm + r2 + gap_mm for c2, r2 in taken):
            taken.append((c, radius_mm))
            return c
    raise RuntimeError(f"could not place a lesion of radius {radius_mm} mm in {region}")


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
    return {i: float(counts[i] * label.voxel_volume_mm3) for i in ids}


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
def ms_pair(
    seed: int = 0,
    n_stable: int = 6,
    n_new: int = 3,
    n_enlarging: int = 1,
    contrasts: tuple[str, ...] = ("flair",),
    slice_thickness_mm: float = 1.0,
    in_plane_mm: float = 1.0,
    misalign_deg: float | tuple[float, float, float] = 3.0,
    misalign_mm: float | tuple[float, float, float] = 3.0,
    snr: float | None = 30.0,
    bias_strength: float = 0.15,
    scanner_scaling: bool = True,
    diameter_range_mm: tuple[float, float] = (3.0, 15.0),
    growth_range: tuple[float, float] = (1.35, 1.6),
) -> PhantomCase:
    """Baseline and follow-up MS scans with stable, new and enlarging lesions.

    Lesions are blobby ellipsoids inside white matter (periventricular, juxtacortical and deep
    white matter, as in the MAGNIMS 2016 MRI criteria's topography). Stable lesions are in both
    scans; new lesions only at follow-up; enlarging lesions are a baseline lesion grown by a
    linear factor in ``growth_range`` (volume x 2.5-4). The follow-up subject is moved by a rigid
    transform (``misalign_deg`` rotation, ``misalign_mm`` translation; triples are exact
    x-y-z Euler angles / translations, scalars random directions with that magnitude).

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
    params = dict(n_stable=n_stable, n_new=n_new, n_enlarging=n_enlarging, contrasts=list(contrasts),
                  slice_thickness_mm=slice_thickness_mm, in_plane_mm=in_plane_mm, misalign_deg=misalign_deg,
                  misalign_mm=misalign_mm, snr=snr, bias_strength=bias_strength, scanner_scaling=scanner_scaling,
                  diameter_range_mm=list(diameter_range_mm), growth_range=list(growth_range))
    rng = np.random.default_rng(seed)
    anat = load_anatomy()
    regions = ("periventricular", "juxtacortical", "deep_wm")
    weights = np.array([0.45, 0.25, 0.30])
    taken: list[tuple[np.ndarray, float]] = []
    base_lesions: list[tuple[Lesion, str, str]] = []  # lesion, type, location
    next_id = 1
    specs = ["enlarging"] * n_enlarging + ["stable"] * n_stable + ["new"] * n_new
    lo, hi = diameter_range_mm
    for ltype in specs:
        loc = str(regions[rng.choice(3, p=weights)])
        if ltype == "enlarging":
            d = rng.uniform(max(lo, 4.0), min(hi / growth_range[1], 9.0))
            reserve = d / 2 * growth_range[1]
        else:
            d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # small lesions are more frequent
            if loc == "juxtacortical":
                d = min(d, 8.0)
            reserve = d / 2
        c = _place(rng, anat, loc, reserve, taken)
        les = random_lesion(rng, next_id, "ms", 1, c, d, intensity_scale=float(rng.uniform(0.92, 1.08)))
        base_lesions.append((les, ltype, loc))
        next_id += 1

    growth = {les.lesion_id: float(rng.uniform(*growth_range)) for les, t, _ in base_lesions if t == "enlarging"}
    baseline_set = [les for les, t, _ in base_lesions if t != "new"]
    followup_set = [les.scaled(growth[les.lesion_id]) if t == "enlarging" else les for les, t, _ in base_lesions]

    center = _brain_center(anat)
    m_follow, motion = _misalignment(rng, misalign_deg, misalign_mm, center)
    voxel = _voxel_mm(in_plane_mm, slice_thickness_mm)
    grid = acquisition_grid(anat, voxel)
    scales = {"baseline": 1.0, "followup": float(rng.uniform(0.8, 1.25)) if scanner_scaling else 1.0}

    images: dict[str, Volume] = {}
    truth: dict[str, Volume] = {}
    acq_records: dict[str, list[dict]] = {}
    for tp, lesions, wt in (("baseline", baseline_set, None), ("followup", followup_set, m_follow)):
        scene = build_scene(lesions, anat)
        acq = Acquisition(voxel, wt, snr, bias_strength=bias_strength, scale=scales[tp])
        acq_records[tp] = []
        for contrast in contrasts:
            vol, rec = acquire(anat, render(anat, scene, contrast), contrast, acq, rng, grid)
            vol.metadata.update(timepoint=tp, series_description=f"{contrast.upper()} {tp}")
            images[f"{tp}_{contrast}"] = vol
            acq_records[tp].append(rec)
        labels = acquire_labels(anat, scene.labels, grid[0], grid[1], wt)
        lab_vol = Volume(labels, grid[1], {"timepoint": tp, "truth": "lesion instance ids"})
        truth[f"truth_{tp}_lesions"] = lab_vol
        brain = acquire_labels(anat, anat.brain_mask.astype(np.uint8), grid[0], grid[1], wt)
        truth[f"truth_{tp}_brain"] = Volume(brain, grid[1], {"timepoint": tp, "truth": "brain mask"})

    fl = truth["truth_followup_lesions"].data
    new_ids = [les.lesion_id for les, t, _ in base_lesions if t == "new"]
    enl_ids = [les.lesion_id for les, t, _ in base_lesions if t == "enlarging"]
    truth["truth_new"] = Volume(np.where(np.isin(fl, new_ids), fl, 0).astype(np.uint16), grid[1],
                                {"timepoint": "followup", "truth": "new lesion instance ids"})
    truth["truth_enlarging"] = Volume(np.where(np.isin(fl, enl_ids), fl, 0).astype(np.uint16), grid[1],
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
        grid={"shape": list(grid[0]), "affine": np.round(grid[1], 10).tolist(), "voxel_mm": list(voxel)},
        volume_definition="volume_mm3_* = voxels with that id in the truth map of that time point x voxel volume",
    )
    studies = {"baseline": _study(seed, "ms-pair", "baseline", 0), "followup": _study(seed, "ms-pair", "followup", 365)}
    case["dicom"] = {"patient": _identity(seed, "ms-pair"), "studies": studies}
    return PhantomCase("ms-pair", seed, images, truth, case, studies)
