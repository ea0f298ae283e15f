"""Calibration of voxel probabilities: Platt scaling, NLL, Brier, ECE/MCE, reliability diagrams.

All measures are computed on the voxels of an evaluation mask (the brain), on the probability of
the positive class ("binary" calibration, as torchmetrics ``BinaryCalibrationError``):

* NLL = mean of -[y log p + (1 - y) log(1 - p)], p clipped to [eps, 1 - eps] (eps = 1e-7).
* Brier = mean (p - y)^2 (scikit-learn ``brier_score_loss``).
* Bins: ``n_bins`` (15) equal-width bins on [0, 1]; bin i holds b_i <= p < b_{i+1}, and p = 1 is
  in the last bin (torchmetrics' bucketize). ECE = sum_i (n_i / N) |acc_i - conf_i| with acc_i the
  fraction of positives and conf_i the mean probability in bin i (Naeini et al. 2015;
  Guo et al. 2017); MCE = max_i over non-empty bins |acc_i - conf_i|. Reported ``_pct`` are x100.
* Platt scaling (Platt 1999): p' = sigmoid(a * logit(p) + b), (a, b) by maximum likelihood on a
  validation set (Newton-Raphson; equal to an unpenalised scikit-learn LogisticRegression on
  logit(p)). ``platt_targets=True`` uses Platt's smoothed targets (N+ + 1)/(N+ + 2) and
  1/(N- + 2) instead of 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurorad.evaluate._checks import as_binary, check_probability, check_same_shape

EPS = 1e-7


def _flatten(prob: np.ndarray, truth: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    prob = check_probability(prob)
    truth = as_binary(truth, "truth")
    check_same_shape(("probability", prob), ("truth", truth), ("mask", mask))
    if mask is not None:
        m = as_binary(mask, "brain mask")
        return prob[m].astype(np.float64), truth[m]
    return prob.ravel().astype(np.float64), truth.ravel()


def _nll(p: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(np.where(y, p, 1.0 - p), EPS, 1.0)
    return float(-np.mean(np.log(q)))


def _brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def nll(prob: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood (natural log) on the mask voxels."""
    return _nll(*_flatten(prob, truth, mask))


def brier(prob: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Brier score (mean squared error of the probability) on the mask voxels."""
    return _brier(*_flatten(prob, truth, mask))


@dataclass(frozen=True)
class Reliability:
    """Per-bin data of a reliability diagram (empty bins have count 0 and NaN means)."""

    edges: np.ndarray
    count: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error (fraction, not percent)."""
        n = self.count.sum()
        ok = self.count > 0
        return float(np.sum(self.count[ok] * np.abs(self.accuracy[ok] - self.mean_confidence[ok])) / n) if n else np.nan

    @property
    def mce(self) -> float:
        """Maximum calibration error over non-empty bins (fraction)."""
        ok = self.count > 0
        return float(np.max(np.abs(self.accuracy[ok] - self.mean_confidence[ok]))) if ok.any() else np.nan


def _reliability(p: np.ndarray, y: np.ndarray, n_bins: int) -> Reliability:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin index = searchsorted(edges, p, "right") - 1 (torchmetrics' bucketize), computed by
    # arithmetic and corrected where floating-point rounding crosses an edge (cheaper on 16M voxels)
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    idx -= p < edges[idx]
    idx += (idx < n_bins - 1) & (p >= edges[np.minimum(idx + 1, n_bins)])
    idx = np.clip(idx, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return Reliability(edges, count, sum_p / count, sum_y / count)


def reliability(prob: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None, n_bins: int = 15) -> Reliability:
    """Equal-width binning of the mask voxels' probabilities (see module docstring)."""
    return _reliability(*_flatten(prob, truth, mask), n_bins)


def calibration_metrics(
    prob: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None, n_bins: int = 15
) -> dict[str, float]:
    """``nll, brier, ece_pct, mce_pct`` on the mask voxels (one pass over the voxels)."""
    p, y = _flatten(prob, truth, mask)
    rel = _reliability(p, y, n_bins)
    return {"nll": _nll(p, y), "brier": _brier(p, y), "ece_pct": 100.0 * rel.ece, "mce_pct": 100.0 * rel.mce}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class PlattScaler:
    """p' = sigmoid(a * logit(p) + b)."""

    a: float
    b: float

    def transform(self, prob: np.ndarray) -> np.ndarray:
        """Recalibrated probabilities, same shape and float32 when the input was float32."""
        prob = check_probability(prob)
        z = self.a * _logit(prob) + self.b
        out = 1.0 / (1.0 + np.exp(-z))
        return out.astype(prob.dtype if prob.dtype == np.float32 else np.float64)


def platt_fit(
    prob: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray | None = None,
    platt_targets: bool = False,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> PlattScaler:
    """Fit Platt scaling on validation voxels by Newton-Raphson on the logistic log-likelihood."""
    p, y = _flatten(prob, truth, mask)
    x = _logit(p)
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("Platt scaling needs positive and negative voxels")
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2)) if platt_targets else y.astype(float)
    a, b = 1.0, 0.0
    for _ in range(max_iter):
        q = 1.0 / (1.0 + np.exp(-(a * x + b)))
        r = q - t
        w = np.maximum(q * (1 - q), 1e-12)
        g = np.array([np.dot(r, x), r.sum()])
        h = np.array([[np.dot(w * x, x), np.dot(w, x)], [np.dot(w, x), w.sum()]])
        step = np.linalg.solve(h + 1e-12 * np.eye(2), g)
        a, b = a - step[0], b - step[1]
        if np.max(np.abs(step)) < tol:
            break
    return PlattScaler(float(a), float(b))
