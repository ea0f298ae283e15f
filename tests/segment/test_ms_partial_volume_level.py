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
    half_maximum_cores,
    partial_volume_core,
    partial_volume_levels,
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


def _acquire(lesions: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator,
             noise: float) -> tuple[np.ndarray, float]:
    """The change as the candidate step sees it: lesion fraction x contrast blurred by the acquisition and the
    candidate smoothing, plus smoothed noise of SD ``noise``. Returns it and the noise SD."""
    sig = np.asarray(_smoothing_sigma_vox(spacing, CandidateParams()))
    acquired = np.sqrt(sig**2 + (ACQUISITION_FWHM_MM / 2.3548 / np.asarray(spacing)) ** 2)
    n = ndimage.gaussian_filter(ndimage.gaussian_filter(rng.normal(0, noise, lesions.shape), sig), sig)
    n *= noise / n.std()
    return (ndimage.gaussian_filter(lesions, acquired) + n).astype(np.float32), float(n.std())


def _lesion(semi_mm: tuple[float, float, float], spacing: tuple[float, float, float], contrast: float, seed: int,
            noise: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(smoothed change, its candidate labels, truth voxels) for one ellipsoid at a random sub-voxel centre."""
    rng = np.random.default_rng(seed)
    size_mm = 2 * max(semi_mm) + 16.0
    shape = tuple(int(np.ceil(size_mm / s)) for s in spacing)
    centre = np.array([n * s / 2 for n, s in zip(shape, spacing, strict=True)]) + rng.uniform(-0.5, 0.5, 3) * spacing
    occ = _occupancy(shape, spacing, centre, np.asarray(semi_mm))
    d, sd = _acquire(contrast * occ, spacing, rng, noise)
    lab, _ = ndimage.label(d > 3 * sd, ndimage.generate_binary_structure(3, 3))
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


def _two_lesions(gap_mm: float, contrasts: tuple[float, float], seed: int, semi_mm: tuple[float, float] = (4.0, 3.5),
                 noise: float = 0.03) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two balls ``gap_mm`` apart along the first axis on 1 mm voxels: (change, truth of A, truth of B, the
    half-maximum cores: A labelled 1, B 2, each at half its own peak on its side of the gap)."""
    rng = np.random.default_rng(seed)
    a, b = semi_mm
    size = (2 * a + gap_mm + 2 * b + 16.0, 2 * a + 16.0, 2 * a + 16.0)
    shape = tuple(int(np.ceil(v)) for v in size)
    centre_a = np.array([8.0 + a, size[1] / 2, size[2] / 2]) + rng.uniform(-0.5, 0.5, 3)
    centre_b = centre_a + np.array([a + gap_mm + b, 0.0, 0.0])
    occ_a = _occupancy(shape, (1.0, 1.0, 1.0), centre_a, np.full(3, a))
    occ_b = _occupancy(shape, (1.0, 1.0, 1.0), centre_b, np.full(3, b))
    d, _ = _acquire(contrasts[0] * occ_a + contrasts[1] * occ_b, (1.0, 1.0, 1.0), rng, noise)
    x = np.indices(shape)[0] + 0.5
    mid = centre_a[0] + a + 0.5 * gap_mm
    cores = np.zeros(shape, np.int32)
    struct = ndimage.generate_binary_structure(3, 3)
    for lab, side in ((1, x < mid), (2, x >= mid)):
        top = np.unravel_index(np.argmax(np.where(side, d, -np.inf)), shape)
        comp, _ = ndimage.label(side & (d >= 0.5 * float(d[top])), struct)
        cores[comp == comp[top]] = lab
    return d, occ_a >= 0.5, occ_b >= 0.5, cores


def test_a_separate_lesion_added_after_half_maximum_is_measured_at_its_own_level() -> None:
    # workflow 1.32.0: the parts of a candidate that holds two lesions (ms_difference.separate_lesion_cores) are added
    # after half maximum and have no peak of the candidate's; they too are measured by their partial-volume sum
    hm_ratio, pv_ratio = [], []
    for seed, contrasts in enumerate(((0.4, 0.25), (0.3, 0.3), (0.5, 0.2), (0.35, 0.3))):
        d, truth_a, truth_b, cores = _two_lesions(2.0, contrasts, seed)
        levels = partial_volume_levels(cores, 2, ["new", "new"], d, (1.0, 1.0, 1.0), ON)
        hm_ratio.append(np.count_nonzero(cores == 2) / truth_b.sum())
        pv_ratio.append(np.count_nonzero(levels == 2) / truth_b.sum())
        assert np.all(levels[cores == 2] == 2)  # a lower iso-contour: it holds its core
        assert abs(np.count_nonzero(levels == 1) / truth_a.sum() - 1.0) <= 0.1
    assert np.median(hm_ratio) < 0.9
    assert abs(np.median(pv_ratio) - 1.0) <= 0.06
    # the settings off: half maximum
    off = partial_volume_levels(cores, 2, ["new", "new"], d, (1.0, 1.0, 1.0), HALF_MAX)
    np.testing.assert_array_equal(off, cores)


def test_a_lesions_level_keeps_to_the_voxels_nearer_to_it_than_to_a_neighbour() -> None:
    # a faint lesion 1 mm from a bright one: the bright one's blurred edge is change within the faint one's reach.
    # Summed and delineated over every voxel (as 1.31.0 did within one candidate) the faint lesion's level takes
    # voxels of its neighbour; over its side of the Voronoi split between the cores it takes none
    struct = ndimage.generate_binary_structure(3, 3)
    taken_before, taken_now = 0, 0
    for seed, contrasts in enumerate(((0.2, 0.8), (0.25, 0.7), (0.15, 0.6), (0.2, 0.6))):
        d, truth_a, truth_b, cores = _two_lesions(1.0, contrasts, seed)
        hm, _ = half_maximum_cores((cores > 0).astype(np.int32), 1, ["new"], d, ON)  # the brighter one's core
        assert np.count_nonzero(hm & (cores == 2)) > 0.9 * np.count_nonzero(cores == 2)
        before = partial_volume_core(cores != 2, d, cores == 1, float(d[cores == 1].min()) / 0.5, (1.0, 1.0, 1.0),
                                     ON, struct)
        levels = partial_volume_levels(cores, 2, ["new", "new"], d, (1.0, 1.0, 1.0), ON)
        nearer_b = (ndimage.distance_transform_edt(cores != 2) < ndimage.distance_transform_edt(cores != 1))
        assert not np.any((levels == 1) & nearer_b)
        assert np.all(levels[cores == 2] == 2)
        taken_before += int(np.count_nonzero(before & truth_b))
        taken_now += int(np.count_nonzero((levels == 1) & truth_b))
    assert taken_before > 0  # the oracle holds the case the split is for
    assert taken_now == 0


def test_delineate_is_half_maximum_then_the_levels() -> None:
    spacing = (1.0, 1.0, 1.0)
    d, cand, _ = _lesion((5.0, 5.0, 5.0), spacing, 0.4, 6)
    cores, peaks = half_maximum_cores(cand, 1, ["new"], d, ON)
    # the half-maximum rule written out: the candidate's 95th-percentile change, and its voxels reaching half of it
    # connected to the maximum
    peak = float(np.percentile(d[cand == 1], 95))
    assert peaks == {1: pytest.approx(peak)}
    comp, _ = ndimage.label((cand == 1) & (d >= 0.5 * peak), ndimage.generate_binary_structure(3, 3))
    np.testing.assert_array_equal(cores == 1, comp == comp[np.unravel_index(np.argmax(d), d.shape)])
    np.testing.assert_array_equal(cores, delineate(cand, 1, ["new"], d, ON))
    np.testing.assert_array_equal(partial_volume_levels(cores, 1, ["new"], d, spacing, ON, peaks=peaks),
                                  delineate(cand, 1, ["new"], d, ON, spacing_mm=spacing))
