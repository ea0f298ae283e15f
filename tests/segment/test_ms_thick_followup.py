"""Issue 17, lesions on a thick follow-up: a lesion one slice thick whose mask came back from the common grid on
the neighbouring slice (nearest neighbour from a grid whose slices fall between the follow-up's) is delineated
again on the follow-up's own slices (``ClassifyParams.thick_followup_redelineate``,
``ms_difference.delineate_on_finer_grid(thick_axis=)``, ``ms_difference.thick_followup``).

The oracle is analytic: a ball of known radius sampled on 1 x 1 x 3 mm voxels (each voxel's occupancy from
sub-samples; a voxel is lesion when at least half of it is, the truth rule of both simulators), centred so that one
slice holds it; the mask the workflow would map back is the truth moved by one slice.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.segment.ms_difference import ClassifyParams, delineate_on_finer_grid, thick_followup

SPACING = (1.0, 1.0, 3.0)
SHAPE = (40, 40, 16)
ON = ClassifyParams(thick_followup_redelineate=True)


def _occupancy(radius_mm: float, centre_mm: np.ndarray, sub: int = 3) -> np.ndarray:
    """Each voxel's fraction inside the ball (``sub`` samples per mm along every axis)."""
    frac = np.zeros(SHAPE, np.float32)
    idx = np.indices(SHAPE).astype(np.float32)
    sp = np.asarray(SPACING)
    offs = [((np.arange(round(sub * s)) + 0.5) / round(sub * s) - 0.5) * s for s in sp]
    for dx in offs[0]:
        for dy in offs[1]:
            for dz in offs[2]:
                d2 = ((idx[0] * sp[0] + dx - centre_mm[0]) ** 2 + (idx[1] * sp[1] + dy - centre_mm[1]) ** 2
                      + (idx[2] * sp[2] + dz - centre_mm[2]) ** 2)
                frac += d2 <= radius_mm**2
    return frac / (len(offs[0]) * len(offs[1]) * len(offs[2]))


def _pair(radius_mm: float, contrast: float, seed: int, noise: float = 0.02) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    k = SHAPE[2] // 2
    centre = np.array([20.0, 20.0, k * SPACING[2]]) + rng.uniform(-0.3, 0.3, 3)  # one slice holds the ball
    occ = _occupancy(radius_mm, centre)
    x = np.indices(SHAPE).astype(np.float32)
    tissue = 1.0 + 0.004 * (x[0] - 20) + 0.01 * (x[2] - 8)  # a smooth tissue gradient (bias)
    follow = tissue * (1.0 + contrast * occ) + rng.normal(0, noise, SHAPE)
    baseline = 0.8 * tissue + 0.1 + rng.normal(0, noise, SHAPE)  # another protocol, no lesion, the same slices
    return follow.astype(np.float32), baseline.astype(np.float32), occ >= 0.5


@pytest.mark.parametrize("radius_mm, contrast, seed, shift", [(2.0, 0.8, 0, -1), (2.5, 0.5, 1, 1), (2.2, 0.6, 2, -1)])
def test_a_lesion_mapped_onto_the_neighbouring_slice_is_delineated_on_its_own(radius_mm: float, contrast: float,
                                                                             seed: int, shift: int) -> None:
    follow, baseline, truth = _pair(radius_mm, contrast, seed)
    assert truth.any() and len(np.unique(np.nonzero(truth)[2])) == 1  # one slice holds the lesion
    mapped = np.roll(truth, shift, axis=2)  # what nearest neighbour from a half-slice-off grid can give
    tissue = np.ones(SHAPE, bool)
    # the 1.30.0 delineation reaches 2 mm, less than a slice: it cannot leave the wrong slice
    plain = delineate_on_finer_grid(follow, baseline, mapped, tissue, SPACING, ON)
    assert plain is None or np.count_nonzero(plain & truth) < 0.4 * np.count_nonzero(truth)
    core = delineate_on_finer_grid(follow, baseline, mapped, tissue, SPACING, ON, thick_axis=2)
    assert core is not None
    assert np.count_nonzero(core & truth) >= 0.8 * np.count_nonzero(truth)  # on the lesion
    assert np.count_nonzero(core) <= 1.5 * np.count_nonzero(truth)  # and not spread over the slice beside it


def test_a_lesion_mapped_onto_its_own_slice_stays_there() -> None:
    follow, baseline, truth = _pair(2.2, 0.6, 3)
    core = delineate_on_finer_grid(follow, baseline, truth, np.ones(SHAPE, bool), SPACING, ON, thick_axis=2)
    assert core is not None
    assert np.count_nonzero(core & truth) >= 0.8 * np.count_nonzero(truth)
    assert np.count_nonzero(core & ~truth) <= 0.5 * np.count_nonzero(truth)


def test_no_lesion_under_the_mask_reaches_no_further_than_one_slice() -> None:
    follow, baseline, truth = _pair(2.2, 0.0, 4)  # no contrast: only noise under the mask
    core = delineate_on_finer_grid(follow, baseline, truth, np.ones(SHAPE, bool), SPACING, ON, thick_axis=2)
    if core is not None:
        slices = np.unique(np.nonzero(core)[2])
        assert slices.min() >= SHAPE[2] // 2 - 1 and slices.max() <= SHAPE[2] // 2 + 1


@pytest.mark.parametrize("followup, on, expected", [
    ((1.0, 1.0, 3.0), True, True),
    ((1.0, 5.0, 1.0), True, True),  # coronal slices
    ((1.0, 1.0, 3.0), False, False),  # the option off
    ((1.0, 1.0, 2.0), True, False),  # under thick_followup_min_mm
    ((3.0, 3.0, 3.0), True, False),  # a coarse 3D image, not slices
])
def test_when_a_follow_up_counts_as_thick(followup: tuple, on: bool, expected: bool) -> None:
    assert thick_followup(followup, ClassifyParams(thick_followup_redelineate=on)) is expected
    if on:  # on by default since workflow 1.36.0: the default params decide as the option on does
        assert thick_followup(followup) is expected
