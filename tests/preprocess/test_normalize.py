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
