"""Issue 17, lesion volumes: the half-maximum rule reads a smoothed convex lesion small (its half-maximum surface moves
inwards by about sigma^2 / R); ``ms_difference.partial_volume_core`` delineates a lesion of
``ClassifyParams.pv_level_min_diameter_mm`` or more at the level whose extent holds its partial-volume sum.

The oracle is analytic: an ellipsoid of known semi-axes rasterised with its lesion fraction per voxel (the truth
rule of both simulators: voxels at least half inside), scaled to a contrast, smoothed exactly as the candidate step
smooths (``ms_difference._smoothing_sigma_vox``) after the acquisition's own blur (1 mm FWHM: a point spread, the
registration's resampling), with smoothed Gaussian noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from neurorad.segment.ms_difference import (
    CandidateParams,
    ClassifyParams,
    _smoothing_sigma_vox,
    delineate,
    partial_volume_core,
)


def _occupancy(shape: tuple[int, int, int], spacing: tuple[float, float, float], centre_mm: np.ndarray,
               semi_mm: np.ndarray, sub: int = 4) -> np.ndarray:
    """Each voxel's fraction inside the axis-aligned ellipsoid (``sub``^3 samples per voxel)."""
    axes = [((np.arange(n)[:, None] + (np.arange(sub) + 0.5)[None, :] / sub) * s).ravel()
            for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    inside = (((x - centre_mm[0]) / semi_mm[0]) ** 2 + ((y - centre_mm[1]) / semi_mm[1]) ** 2
              + ((z - centre_mm[2]) / semi_mm[2]) ** 2) <= 1.0
    return inside.reshape(shape[0], sub, shape[1], sub, shape[2], sub).mean(axis=(1, 3, 5))


def _lesion(semi_mm: tuple[float, float, float], spacing: tuple[float, float, float], contrast: float, seed: int,
            noise: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(smoothed change, its candidate labels, truth voxels) for one ellipsoid at a random sub-voxel centre."""
    rng = np.random.default_rng(seed)
    size_mm = 2 * max(semi_mm) + 16.0
    shape = tuple(int(np.ceil(size_mm / s)) for s in spacing)
    centre = np.array([n * s / 2 for n, s in zip(shape, spacing, strict=True)]) + rng.uniform(-0.5, 0.5, 3) * spacing
    occ = _occupancy(shape, spacing, centre, np.asarray(semi_mm))
    sig = np.asarray(_smoothing_sigma_vox(spacing, CandidateParams()))
    acquired = np.sqrt(sig**2 + (ACQUISITION_FWHM_MM / 2.3548 / np.asarray(spacing)) ** 2)
    n = ndimage.gaussian_filter(ndimage.gaussian_filter(rng.normal(0, noise, shape), sig), sig)
    n *= noise / n.std()
    d = (ndimage.gaussian_filter(contrast * occ, acquired) + n).astype(np.float32)
    lab, _ = ndimage.label(d > 3 * n.std(), ndimage.generate_binary_structure(3, 3))
    cand = (lab == lab[np.unravel_index(np.argmax(d), d.shape)]).astype(np.int32)
    return d, cand, occ >= 0.5


ON = ClassifyParams()  # the default since workflow 1.31.0: from 5 mm
HALF_MAX = ClassifyParams(pv_level_min_diameter_mm=None)
ACQUISITION_FWHM_MM = 1.0


@pytest.mark.parametrize(("semi", "spacing"), [
    ((4.0, 4.0, 4.0), (1.0, 1.0, 1.0)),
    ((3.5, 4.5, 3.0), (1.0, 1.0, 1.0)),
    ((5.5, 5.0, 6.0), (1.0, 1.0, 1.0)),
    ((5.0, 5.0, 6.0), (1.0, 1.0, 3.0)),
])
def test_a_large_lesion_is_measured_by_its_partial_volume_sum_where_half_maximum_reads_it_small(
        semi: tuple[float, float, float], spacing: tuple[float, float, float]) -> None:
    hm_ratio, pv_ratio = [], []
    for seed, contrast in enumerate((0.2, 0.35, 0.5)):
        d, cand, truth = _lesion(semi, spacing, contrast, seed)
        hm = delineate(cand, 1, ["new"], d, HALF_MAX, spacing_mm=spacing) == 1
        pv = delineate(cand, 1, ["new"], d, ON, spacing_mm=spacing) == 1
        hm_ratio.append(hm.sum() / truth.sum())
        pv_ratio.append(pv.sum() / truth.sum())
        assert (hm & ~pv).sum() <= 0.02 * hm.sum()  # a lower iso-contour: it holds the half-maximum core
        assert ndimage.label(pv, ndimage.generate_binary_structure(3, 3))[1] == 1
        # on the lesion: it covers at least what half maximum covers, and little beside it
        assert (pv & truth).sum() >= (hm & truth).sum()
        assert (pv & ~truth).sum() <= 0.25 * truth.sum()
    assert np.median(hm_ratio) < 0.95  # the bias the rule corrects exists in this oracle
    assert abs(np.median(pv_ratio) - 1.0) <= 0.06
    assert abs(np.median(pv_ratio) - 1.0) < abs(np.median(hm_ratio) - 1.0)


def test_a_small_lesion_and_the_setting_off_keep_half_maximum() -> None:
    assert ON.pv_level_min_diameter_mm == 5.0
    spacing = (1.0, 1.0, 1.0)
    d, cand, _ = _lesion((2.0, 2.0, 2.0), spacing, 0.4, 3)  # 4 mm: its blurred peak is under its contrast
    hm = delineate(cand, 1, ["new"], d, HALF_MAX, spacing_mm=spacing)
    np.testing.assert_array_equal(delineate(cand, 1, ["new"], d, ON, spacing_mm=spacing), hm)
    d, cand, _ = _lesion((5.0, 5.0, 5.0), spacing, 0.4, 4)
    hm = delineate(cand, 1, ["new"], d, HALF_MAX, spacing_mm=spacing)
    np.testing.assert_array_equal(delineate(cand, 1, ["new"], d, HALF_MAX, spacing_mm=None), hm)
    np.testing.assert_array_equal(delineate(cand, 1, ["new"], d, ON, spacing_mm=None), hm)
    assert not np.array_equal(delineate(cand, 1, ["new"], d, ON, spacing_mm=spacing), hm)


def test_the_level_stays_within_its_bounds_and_reach() -> None:
    spacing = (1.0, 1.0, 1.0)
    d, cand, _ = _lesion((5.0, 5.0, 5.0), spacing, 0.4, 5)
    own = cand == 1
    peak = float(np.percentile(d[own], 95))
    core = own & (d >= 0.5 * peak)
    # a broad faint plateau around the lesion (change the sum counts within the reach): the level cannot go below
    # its lower bound, and the mask cannot leave the reach
    wide = d + np.where(own & ~core, 0.45 * peak, 0.0).astype(np.float32)
    m = partial_volume_core(own, wide, core, peak, spacing, ON)
    assert wide[m].min() >= ON.pv_level_fraction_bounds[0] * peak - 1e-6
    dist = ndimage.distance_transform_edt(~core, sampling=spacing)
    assert dist[m].max() <= ON.pv_level_reach_mm + 1e-6
    # no contrast: unchanged
    assert partial_volume_core(own, d, np.zeros_like(core), peak, spacing, ON).sum() == 0
