"""The partial-volume rule's peak when a candidate is mostly weaker change around a focal lesion
(``half_maximum_core``'s ``focal_ratio``, ``ClassifyParams.delineation_focal_ratio``)."""

from __future__ import annotations

import numpy as np

from neurorad.segment.ms_difference import ClassifyParams, delineate, half_maximum_core


def _blob_in_faint_region() -> tuple[np.ndarray, np.ndarray]:
    """A 30^3 region of faint change 0.25 (the candidate) holding a Gaussian lesion of peak 1.0 (sigma 1.5 voxels)."""
    z, y, x = np.mgrid[:30, :30, :30].astype(float)
    blob = np.exp(-((x - 15) ** 2 + (y - 15) ** 2 + (z - 15) ** 2) / (2 * 1.5 ** 2))
    d = np.maximum(0.25, blob).astype(np.float32)
    own = np.ones(d.shape, bool)
    return own, d


def test_a_lesion_in_a_region_of_faint_change_is_delineated_at_half_its_own_peak() -> None:
    own, d = _blob_in_faint_region()
    # the candidate's 95th percentile is the faint level: half of it keeps the whole 27,000-voxel candidate
    assert np.percentile(d[own], 95) == 0.25
    assert half_maximum_core(own, d, 0.5, 95.0).sum() == own.sum()
    core = half_maximum_core(own, d, 0.5, 95.0, focal_ratio=3.0)
    # analytic: around the maximum, d >= 0.5 (radius 1.5 * sqrt(2 ln 2) voxels); its 95th percentile p; the core is
    # d >= p / 2, connected to the maximum
    around = d >= 0.5
    p = np.percentile(d[around], 95)
    expected = d >= 0.5 * p
    assert 0.5 < p <= 1.0
    assert np.array_equal(core, expected)
    assert around.sum() <= core.sum() < 5 * around.sum()


def test_a_compact_lesion_is_delineated_as_before() -> None:
    """A candidate not much larger than its lesion: the rule does not apply, the core is the candidate percentile's."""
    z, y, x = np.mgrid[:20, :20, :20].astype(float)
    d = np.exp(-((x - 10) ** 2 + (y - 10) ** 2 + (z - 10) ** 2) / (2 * 2.0 ** 2)).astype(np.float32)
    own = d > 0.05
    before = half_maximum_core(own, d, 0.5, 95.0)
    assert np.array_equal(half_maximum_core(own, d, 0.5, 95.0, focal_ratio=3.0), before)


def test_delineate_passes_the_ratio() -> None:
    own, d = _blob_in_faint_region()
    labels = own.astype(np.int32)
    whole = delineate(labels, 1, ["new"], d, ClassifyParams(delineation_focal_ratio=None))
    focal = delineate(labels, 1, ["new"], d, ClassifyParams(delineation_focal_ratio=3.0))
    assert (whole == 1).sum() == own.sum() and (focal == 1).sum() < 200
