"""Classical WMH and microbleed engines on synthetic arrays whose answer is known by construction."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from neurorad.segment.cmb_classical import CMBParams, detect_cmb
from neurorad.segment.wmh_classical import WMHParams, segment_wmh


def _grid(shape: tuple[int, int, int]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"), axis=-1)


def _ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    return np.linalg.norm(_grid(shape) - np.asarray(centre), axis=-1) <= radius


def test_wmh_engine_finds_the_bright_focus_not_the_grey_matter() -> None:
    rng = np.random.default_rng(0)
    shape = (70, 70, 50)
    brain = _ball(shape, (35, 35, 25), 30) & (np.abs(_grid(shape)[..., 2] - 25) < 22)
    wm = (_ball(shape, (35, 35, 25), 22) & brain).astype(np.float32)
    gm = (brain & (wm == 0)).astype(np.float32)
    lesion = _ball(shape, (30, 38, 25), 3.2)
    flair = np.where(brain, 0.5, 0.0) + 0.16 * gm  # GM 1.32 x WM, as bright as the phantoms'
    flair = np.where(lesion, 0.95, flair) + rng.normal(0, 0.01, shape) * brain
    seg = segment_wmh(flair.astype(np.float32), brain, wm, gm, (1.0, 1.0, 1.0), WMHParams())
    inter = (seg.mask & lesion).sum()
    dice = 2 * inter / (seg.mask.sum() + lesion.sum())
    assert dice > 0.85
    assert not (seg.mask & (gm > 0)).any()
    assert seg.probability[lesion].mean() > 0.9 and seg.probability[(wm > 0) & ~lesion].mean() < 0.05
    # a focus only as bright as grey matter is not a WMH
    dim = np.where(lesion, 0.66, flair)
    assert not segment_wmh(dim.astype(np.float32), brain, wm, gm, (1.0, 1.0, 1.0)).mask.any()


def test_cmb_engine_keeps_round_foci_of_2_to_10_mm_only() -> None:
    rng = np.random.default_rng(1)
    shape = (80, 80, 60)
    brain = _ball(shape, (40, 40, 30), 38) & (np.abs(_grid(shape)[..., 2] - 30) < 28)
    swi = np.where(brain, 0.8, 0.0).astype(np.float32)
    small = _ball(shape, (30, 30, 30), 2.5)  # 5 mm microbleed
    large = _ball(shape, (52, 50, 30), 7.0)  # 14 mm: larger than any microbleed
    g = _grid(shape)
    vessel = (np.hypot(g[..., 1] - 55, g[..., 2] - 20) <= 1.2) & (np.abs(g[..., 0] - 40) < 18)  # 36 mm tube
    for m, v in ((small, 0.08), (large, 0.08), (vessel, 0.15)):
        swi[m] = v
    swi = ndimage.gaussian_filter(swi, 0.6) * brain + rng.normal(0, 0.01, shape) * brain
    det = detect_cmb(swi.astype(np.float32), brain, (1.0, 1.0, 1.0), CMBParams())
    assert len(det.accepted) == 1
    c = det.accepted[0]
    assert np.linalg.norm(np.subtract(c.centre_ijk, (30, 30, 30))) <= 1.5
    assert 3.5 <= c.diameter_mm <= 7.0
    assert det.labels[30, 30, 30] == 1 and not det.mask[large].any() and not det.mask[vessel].any()
    reasons = " ".join(r.reason for r in det.rejected)
    assert "size" in reasons and "vessel-like" in reasons
    assert det.probability[small].max() > 0.9


def test_cmb_engine_is_not_fooled_by_thick_slices() -> None:
    """A round focus on 0.9 x 0.9 x 2.1 mm voxels is still round (the Hessian is taken per mm, not per voxel)."""
    sp = (0.9, 0.9, 2.1)
    shape = (90, 90, 40)
    g = np.stack(np.meshgrid(*[np.arange(s) * d for s, d in zip(shape, sp, strict=True)], indexing="ij"), -1)
    centre = np.array([40.5, 40.5, 42.0])
    brain = np.linalg.norm(g - centre, axis=-1) <= 38
    focus = np.linalg.norm(g - np.array([30.0, 35.0, 42.0]), axis=-1) <= 3.0  # 6 mm
    swi = np.where(brain, 0.8, 0.0)
    swi[focus] = 0.08
    swi = ndimage.gaussian_filter(swi, 0.5).astype(np.float32)
    det = detect_cmb(swi, brain, sp)
    assert len(det.accepted) == 1, [r.reason for r in det.rejected]
    assert 4.5 <= det.accepted[0].diameter_mm <= 8.0
