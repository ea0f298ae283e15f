"""Calibration against torchmetrics / scikit-learn; CQR against MAPIE plus a coverage check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.classification import BinaryCalibrationError

from neurorad.errors import InputError
from neurorad.evaluate.calibration import brier, calibration_metrics, nll, platt_fit, reliability
from neurorad.evaluate.conformal import coverage, cqr_interval, cqr_quantile, width_per_patient


@pytest.fixture(scope="module")
def voxels():
    rng = np.random.default_rng(3)
    shape = (20, 20, 20)
    z = rng.normal(size=shape)
    truth = rng.random(shape) < 1 / (1 + np.exp(-2.5 * z))
    prob = (1 / (1 + np.exp(-1.2 * z - 0.3))).astype(np.float32)  # miscalibrated on purpose
    brain = np.zeros(shape, bool)
    brain[2:18, 3:17, 1:19] = True
    return prob, truth, brain


def test_against_torchmetrics_and_sklearn(voxels):
    prob, truth, brain = voxels
    p, y = prob[brain].astype(np.float64), truth[brain]
    m = calibration_metrics(prob, truth, brain, n_bins=15)
    ece = BinaryCalibrationError(n_bins=15, norm="l1")(torch.from_numpy(p), torch.from_numpy(y.astype(np.int64)))
    mce = BinaryCalibrationError(n_bins=15, norm="max")(torch.from_numpy(p), torch.from_numpy(y.astype(np.int64)))
    assert m["ece_pct"] == pytest.approx(100 * ece.item(), abs=1e-4)
    assert m["mce_pct"] == pytest.approx(100 * mce.item(), abs=1e-4)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-9)
    assert m["nll"] == pytest.approx(log_loss(y, p), rel=1e-6)
    rel = reliability(prob, truth, brain, 10)
    assert rel.count.sum() == brain.sum()


def test_platt_equals_unpenalised_logistic_and_improves(voxels):
    prob, truth, brain = voxels
    scaler = platt_fit(prob, truth, brain)
    x = np.log(prob[brain] / (1 - prob[brain])).astype(np.float64)[:, None]
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=1000).fit(x, truth[brain])
    assert scaler.a == pytest.approx(lr.coef_[0, 0], rel=1e-4)
    assert scaler.b == pytest.approx(lr.intercept_[0], abs=1e-4)
    # the generating model has slope 2.5/1.2 on logit(p): Platt recovers it approximately
    assert scaler.a == pytest.approx(2.5 / 1.2, rel=0.15)
    cal = scaler.transform(prob)
    assert nll(cal, truth, brain) < nll(prob, truth, brain)
    assert brier(cal, truth, brain) <= brier(prob, truth, brain)
    assert calibration_metrics(cal, truth, brain)["ece_pct"] < calibration_metrics(prob, truth, brain)["ece_pct"]


def test_bad_probabilities(voxels):
    _, truth, _ = voxels
    with pytest.raises(InputError):
        nll(np.full(truth.shape, -0.1), truth)


def _quantile_models(X, y, alpha):
    from sklearn.ensemble import GradientBoostingRegressor

    kw = dict(loss="quantile", n_estimators=60, max_depth=2, random_state=0)
    lo = GradientBoostingRegressor(alpha=alpha / 2, **kw).fit(X, y)
    hi = GradientBoostingRegressor(alpha=1 - alpha / 2, **kw).fit(X, y)
    med = GradientBoostingRegressor(alpha=0.5, **kw).fit(X, y)
    return lo, hi, med


def test_cqr_against_mapie_and_coverage():
    from mapie.regression import ConformalizedQuantileRegressor

    rng = np.random.default_rng(7)
    n = 1500
    X = rng.uniform(0, 5, size=(n, 1))
    y = np.sin(X[:, 0]) * 3 + rng.normal(0, 0.3 + 0.4 * X[:, 0], n)  # heteroscedastic
    tr, cal, te = slice(0, 500), slice(500, 1000), slice(1000, n)
    alpha = 0.1
    lo_m, hi_m, med_m = _quantile_models(X[tr], y[tr], alpha)
    q = cqr_quantile(y[cal], lo_m.predict(X[cal]), hi_m.predict(X[cal]), alpha)
    lo, hi = cqr_interval(lo_m.predict(X[te]), hi_m.predict(X[te]), q)
    mapie = ConformalizedQuantileRegressor([lo_m, hi_m, med_m], confidence_level=1 - alpha, prefit=True)
    mapie.conformalize(X[cal], y[cal])
    _, iv = mapie.predict_interval(X[te], symmetric_correction=True)  # Romano et al.: one Q for both ends
    np.testing.assert_allclose(lo, iv[:, 0, 0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(hi, iv[:, 1, 0], rtol=1e-9, atol=1e-9)
    cov = coverage(y[te], lo, hi)
    # marginal guarantee >= 1 - alpha, up to sampling error of 500 test points (3 sd ~ 0.04)
    assert cov >= 1 - alpha - 0.04
    w = width_per_patient(lo, hi, np.arange(500) % 5)
    assert len(w) == 5 and all(v > 0 for v in w.values())


def test_cqr_finite_sample_and_coverage_exact():
    # with n=9 and alpha=0.1, k = ceil(10*0.9) = 9 -> the maximum score; with n=8 k=9 > n -> inf
    y = np.arange(9.0)
    assert cqr_quantile(y, y - 1, y + 1, 0.1) == -1.0
    assert np.isinf(cqr_quantile(y[:8], y[:8], y[:8], 0.1))
    # average coverage over many random splits must reach 1 - alpha (exchangeable scores)
    rng = np.random.default_rng(0)
    covs = []
    for _ in range(400):
        e = rng.normal(size=40)
        qq = cqr_quantile(e[:20], np.zeros(20), np.zeros(20), 0.2)
        covs.append(coverage(e[20:], -qq + 0 * e[20:], qq + 0 * e[20:]))
    assert np.mean(covs) >= 0.8 - 0.01


def test_bin_edges_match_torchmetrics():
    # probabilities exactly on (and next to) the 15 bin edges: the binning must agree with torchmetrics
    edges = np.linspace(0, 1, 16)
    p = np.clip(np.concatenate([edges, np.nextafter(edges, 2), np.nextafter(edges, -1)]), 0, 1)
    y = (np.arange(p.size) % 3 == 0)
    ours = calibration_metrics(p[:, None, None], y[:, None, None], n_bins=15)
    ref = BinaryCalibrationError(n_bins=15, norm="l1")(torch.from_numpy(p), torch.from_numpy(y.astype(np.int64)))
    assert ours["ece_pct"] == pytest.approx(100 * ref.item(), abs=1e-4)
