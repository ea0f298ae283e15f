"""Enlarging lesions are reported as their whole follow-up extent (rim grown into the old lesion).

Oracle: analytic sphere volumes on a synthetic grid (baseline lesion radius 4 mm, follow-up
radius 7 mm; the detected component is the shell between them); a new lesion is left unchanged.
"""

from __future__ import annotations

import numpy as np

from neurorad.segment.ms_difference import ClassifyParams, grow_enlarging


def _ball(shape: tuple[int, int, int], centre: tuple[float, float, float], r: float) -> np.ndarray:
    g = np.indices(shape).astype(float)
    return sum((g[i] - centre[i]) ** 2 for i in range(3)) <= r * r


def test_enlarging_rim_grows_to_whole_followup_lesion_new_unchanged():
    shape = (48, 48, 48)
    brain = np.ones(shape, bool)
    old = _ball(shape, (16, 24, 24), 4)
    fu_les = _ball(shape, (16, 24, 24), 7)
    new_les = _ball(shape, (36, 24, 24), 3)
    stable_far = _ball(shape, (24, 24, 42), 3)  # unrelated hyperintensity: must not be taken
    followup = np.ones(shape, np.float32) + 1.0 * (fu_les | new_les | stable_far)
    baseline_lesions = old | stable_far
    labels = np.zeros(shape, np.int32)
    labels[fu_les & ~_ball(shape, (16, 24, 24), 5.0)] = 1  # detected rim (outer part of the growth)
    labels[new_les] = 2
    out, ext = grow_enlarging(labels, 2, ["enlarging", "new"], followup, baseline_lesions, brain,
                              (1.0, 1.0, 1.0), 1.0, 0.1, ClassifyParams())
    assert np.array_equal(out == 2, new_les)  # new lesion unchanged
    assert np.array_equal(out == 1, fu_les)  # whole follow-up lesion, nothing of the far one
    e = ext[1]
    assert e.followup_volume_mm3 == float(fu_les.sum())
    assert e.baseline_volume_mm3 == float(old.sum())
    assert e.rim_volume_mm3 == float((labels == 1).sum())
    assert 2 not in ext
    # analytic: 4/3 pi r^3 within 5% for r = 7
    assert abs(e.followup_volume_mm3 - 4 / 3 * np.pi * 7**3) / (4 / 3 * np.pi * 7**3) < 0.05


def test_growth_can_be_switched_off():
    shape = (20, 20, 20)
    labels = np.zeros(shape, np.int32)
    labels[5:8, 5:8, 5:8] = 1
    fu = np.full(shape, 3.0, np.float32)
    out, ext = grow_enlarging(labels, 1, ["enlarging"], fu, labels > 0, np.ones(shape, bool), (1.0, 1.0, 1.0),
                              1.0, 0.1, ClassifyParams(grow_enlarging=False))
    assert np.array_equal(out, labels) and ext == {}


def test_a_faint_enlarging_lesion_grows_only_with_the_local_excess_test():
    """A faint enlarging lesion (1.3 x WM) under the brain-wide median + 3 SD (1.45 here) keeps only its detected
    rim; with ``grow_local_excess`` (0.15 over the local tissue level) it grows to its whole follow-up extent, and
    a faint hyperintensity 1.5 mm beyond the growth bound is still not taken."""
    shape = (48, 48, 48)
    brain = np.ones(shape, bool)
    old = _ball(shape, (24, 24, 24), 4)
    fu_les = _ball(shape, (24, 24, 24), 7)
    far = _ball(shape, (24, 24, 40), 3)  # beyond grow_bound_mm of the lesion
    followup = np.ones(shape, np.float32) + 0.3 * (fu_les | far)
    labels = np.zeros(shape, np.int32)
    labels[fu_les & ~_ball(shape, (24, 24, 24), 5.0)] = 1
    level = np.ones(shape, np.float32)
    args = (labels, 1, ["enlarging"], followup, old, brain, (1.0, 1.0, 1.0), 1.0, 0.15)
    out, ext = grow_enlarging(*args, ClassifyParams(), level)
    assert np.array_equal(out == 1, labels == 1)  # the brain-wide test alone: the rim
    out, ext = grow_enlarging(*args, ClassifyParams(grow_local_excess=0.15), level)
    assert np.array_equal(out == 1, fu_les)
    assert ext[1].followup_volume_mm3 == float(fu_les.sum())
    out, _ = grow_enlarging(*args, ClassifyParams(grow_local_excess=0.35), level)  # over the lesion's excess
    assert np.array_equal(out == 1, labels == 1)
