from __future__ import annotations

import numpy as np
import pytest
from skimage.exposure import match_histograms

from neurorad.errors import InputError, ProcessingError
from neurorad.image.volume import Volume
from neurorad.preprocess.normalize import (
    NyulStandardizer,
    histogram_match,
    joint_histogram_fit,
    joint_histogram_normalize,
    percentile_scale,
    restore_magnitude_origin,
    zscore,
)


def _vol(data: np.ndarray) -> Volume:
    return Volume(np.asarray(data), np.eye(4))


@pytest.fixture(scope="module")
def colin_small(colin_head) -> Volume:
    return Volume(colin_head.data[::2, ::2, ::2].copy(), np.diag([2.0, 2, 2, 1]))


def test_zscore_and_percentile_inside_mask(colin_small):
    m = colin_small.data > 30
    z = zscore(colin_small, m)
    assert z.data[m].mean() == pytest.approx(0, abs=1e-5)
    assert z.data[m].std() == pytest.approx(1, abs=1e-4)
    p = percentile_scale(colin_small, m, 2, 98)
    lo, hi = np.percentile(p.data[m], [2, 98])
    assert lo == pytest.approx(0, abs=1e-5) and hi == pytest.approx(1, abs=1e-5)
    with pytest.raises(InputError):
        percentile_scale(colin_small, m, 90, 10)


def test_histogram_match_equals_skimage(colin_small):
    rng = np.random.default_rng(0)
    src = colin_small.with_data((colin_small.data ** 1.3 + rng.normal(scale=3, size=colin_small.shape))
                                .astype(np.float32))
    ref = colin_small
    ours = histogram_match(src, ref)
    theirs = match_histograms(src.data, ref.data)
    np.testing.assert_allclose(ours.data, theirs, rtol=1e-5, atol=1e-3)


def test_joint_histogram_fit_recovers_known_line(colin_small):
    # follow-up = real anatomy; baseline = a * follow-up + b + noise (noise in the dependent variable)
    rng = np.random.default_rng(1)
    fu = colin_small
    m = fu.data > 20
    a_true, b_true = 1.37, -12.5
    base = fu.with_data((a_true * fu.data + b_true + rng.normal(scale=4, size=fu.shape)).astype(np.float32))
    fit = joint_histogram_fit(base, fu, m, bins=256)
    assert fit.slope == pytest.approx(a_true, rel=0.01)
    assert fit.intercept == pytest.approx(b_true, abs=1.0)
    out, _ = joint_histogram_normalize(base, fu, m)
    assert np.abs(out.data[m] - base.data[m]).mean() < 4  # within the noise
    with pytest.raises(InputError):
        joint_histogram_fit(base, Volume(fu.data, np.diag([1.0, 1, 1, 1])), m)


def test_nyul_maps_landmarks_onto_standard_scale(colin_small, tmp_path):
    m = colin_small.data > 20
    rng = np.random.default_rng(2)
    # training set: the same anatomy under different monotonic intensity distortions
    train = [colin_small.with_data((s * colin_small.data ** g + o).astype(np.float32))
             for s, g, o in [(1.0, 1.0, 0.0), (2.5, 0.9, 10.0), (0.7, 1.15, -3.0)]]
    nyul = NyulStandardizer().fit(train, [m] * 3)
    assert nyul.standard_[0] == pytest.approx(1) and nyul.standard_[-1] == pytest.approx(100)
    assert np.all(np.diff(nyul.standard_) > 0)
    new = colin_small.with_data((3.0 * colin_small.data ** 1.05 + rng.normal(scale=0.5, size=m.shape) + 7)
                                .astype(np.float32))
    out = nyul.transform(new, m)
    np.testing.assert_allclose(nyul.image_landmarks(out, m), nyul.standard_, rtol=2e-3, atol=0.05)
    # two differently scaled copies of one image end up on the same scale
    a, b = nyul.transform(train[0], m), nyul.transform(train[1], m)
    assert np.median(np.abs(a.data[m] - b.data[m])) < 1.0
    nyul.save(tmp_path / "nyul.json")
    np.testing.assert_allclose(NyulStandardizer.load(tmp_path / "nyul.json").standard_, nyul.standard_)
    with pytest.raises(ProcessingError):
        NyulStandardizer().transform(new)
    # fitting from landmarks computed once (what joint_normalise does) gives the same map, and passing an
    # image's landmarks to transform is the same as passing its mask
    lms = [nyul.image_landmarks(v, m) for v in train]
    np.testing.assert_array_equal(NyulStandardizer().fit_landmarks(lms).standard_, nyul.standard_)
    np.testing.assert_array_equal(nyul.transform(new, landmarks=nyul.image_landmarks(new, m)).data, out.data)
    # beyond the end landmarks the map continues with the end segments' slopes (an analytic check)
    lm = nyul.image_landmarks(new, m)
    probe = Volume(np.array([[[lm[0] - 10.0, lm[-1] + 10.0]]], np.float32), np.eye(4))
    y = nyul.transform(probe, landmarks=lm).data.ravel()
    s_ = nyul.standard_
    assert y[0] == pytest.approx(s_[0] - 10.0 * (s_[1] - s_[0]) / (lm[1] - lm[0]), rel=1e-5)
    assert y[1] == pytest.approx(s_[-1] + 10.0 * (s_[-1] - s_[-2]) / (lm[-1] - lm[-2]), rel=1e-5)


@pytest.fixture(scope="module")
def magnitude(colin_small, colin_brain_mask) -> tuple[Volume, np.ndarray]:
    """Colin27 (2 mm) as a magnitude image: Rician noise of 2 % of the brain median, so air is about 0, never below."""
    rng = np.random.default_rng(3)
    d = np.asarray(colin_small.data, np.float64)
    brain = colin_brain_mask[::2, ::2, ::2]
    sigma = 0.02 * np.median(d[brain])
    noisy = np.hypot(d + rng.normal(0, sigma, d.shape), rng.normal(0, sigma, d.shape))
    return colin_small.with_data(noisy.astype(np.float32)), brain


def _tissue_ratio(data: np.ndarray, brain: np.ndarray) -> float:
    """Bright over median brain tissue: what a contrast ratio reads (it needs the image's zero where it belongs)."""
    return float(np.percentile(data[brain], 90) / np.median(data[brain]))


def test_a_z_scored_or_offset_series_gets_its_zero_back(magnitude) -> None:
    """Whole-image z-score and a negative offset move the zero; the shift puts the darkest 1 % back at it, and the
    tissue ratio (analytic oracle: the magnitude image's own) comes back within 1 %, where the moved images read it
    19 % and more off."""
    vol, brain = magnitude
    truth = _tissue_ratio(vol.data, brain)
    z = zscore(vol)
    offset = vol.with_data(np.asarray(vol.data) - np.float32(3.0 * np.median(vol.data[brain])))
    for moved in (z, offset):
        assert abs(_tissue_ratio(moved.data, brain) / truth - 1) > 0.1
        back, shift = restore_magnitude_origin(moved)
        assert shift > 0
        assert np.percentile(back.data, 1) == pytest.approx(0, abs=1e-4 * float(np.abs(back.data).max()))
        assert _tissue_ratio(back.data, brain) == pytest.approx(truth, rel=0.01)


def test_the_zeros_of_a_stripped_series_stay_or_come_back_exactly(magnitude) -> None:
    """Stripped then z-scored: the constant background returns to exactly 0 (what signal_support reads as 'no
    signal'). Z-scored inside the brain with 0 outside (given as the support): the zeros outside stay 0 and the
    brain's darkest 1 % (FLAIR's dark CSF) sits at 0."""
    from neurorad.preprocess.brain_extraction import signal_support

    vol, brain = magnitude
    stripped = vol.with_data(np.where(brain, vol.data, 0).astype(np.float32))
    back, shift = restore_magnitude_origin(zscore(stripped))
    assert shift > 0
    assert np.array_equal(back.data == 0, ~brain)
    assert np.array_equal(signal_support(back), signal_support(stripped))
    inside = zscore(vol, brain)
    inside = inside.with_data(np.where(brain, inside.data, 0).astype(np.float32))
    support = signal_support(inside)
    back, shift = restore_magnitude_origin(inside, support)
    assert shift > 0 and np.all(back.data[~support] == 0)
    assert np.percentile(back.data[support], 1) == pytest.approx(0, abs=1e-5)
    assert np.count_nonzero(back.data[brain] < 0) <= 0.011 * brain.sum()


def test_a_magnitude_image_is_left_as_it_is(magnitude) -> None:
    """Interpolation undershoot (a few % of voxels slightly negative) and a positive offset (not recognisable from
    values) leave the image unchanged."""
    vol, _ = magnitude
    d = np.asarray(vol.data).copy()
    rng = np.random.default_rng(0)
    idx = rng.choice(d.size, int(0.05 * d.size), replace=False)
    d.flat[idx] = -0.01 * float(d.max())
    for img in (vol, vol.with_data(d), vol.with_data(np.asarray(vol.data) + np.float32(100.0))):
        back, shift = restore_magnitude_origin(img)
        assert shift == 0.0 and np.array_equal(back.data, img.data)
    with pytest.raises(InputError, match="support shape"):
        restore_magnitude_origin(vol, np.ones((2, 2, 2), bool))
