"""Conformalized quantile regression (CQR; Romano, Patterson & Candes, NeurIPS 2019).

Given lower/upper quantile predictions ``lo``, ``hi`` (e.g. the alpha/2 and 1 - alpha/2 quantiles
of a per-patient lesion volume, or per-voxel intensities) on a calibration set with truth ``y``:

* conformity scores E_i = max(lo_i - y_i, y_i - hi_i)
* Q = the k-th smallest E with k = ceil((n + 1)(1 - alpha)) (the finite-sample quantile; +inf when
  k > n, i.e. too few calibration cases for that alpha)
* interval on new data: [lo - Q, hi + Q], with marginal coverage >= 1 - alpha under exchangeability.

Equal to MAPIE's ``ConformalizedQuantileRegressor(prefit=True)`` with
``predict_interval(symmetric_correction=True)`` (MAPIE's default applies separate lower/upper
corrections, a later variant).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from neurorad.errors import InputError


def _vec(x: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=float).ravel()
    if not np.all(np.isfinite(v)):
        raise InputError(f"{name} holds NaN or inf")
    return v


def cqr_quantile(y_cal: np.ndarray, lo_cal: np.ndarray, hi_cal: np.ndarray, alpha: float = 0.1) -> float:
    """The CQR correction Q from a calibration set (see module docstring)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    y, lo, hi = _vec(y_cal, "y_cal"), _vec(lo_cal, "lo_cal"), _vec(hi_cal, "hi_cal")
    if not (y.size == lo.size == hi.size) or y.size == 0:
        raise InputError("y_cal, lo_cal and hi_cal must be non-empty and of one length")
    scores = np.maximum(lo - y, y - hi)
    n = scores.size
    k = math.ceil((n + 1) * (1 - alpha))
    if k > n:
        return float("inf")
    return float(np.partition(scores, k - 1)[k - 1])


def cqr_interval(lo: np.ndarray, hi: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Conformalized interval [lo - Q, hi + Q]."""
    return np.asarray(lo, float) - q, np.asarray(hi, float) + q


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Empirical coverage: fraction of y with lo <= y <= hi."""
    y, lo, hi = np.asarray(y, float), np.asarray(lo, float), np.asarray(hi, float)
    return float(np.mean((y >= lo) & (y <= hi)))


def width_per_patient(lo: np.ndarray, hi: np.ndarray, patient: Sequence[Hashable]) -> dict[Hashable, float]:
    """Average interval width (hi - lo) per patient (e.g. over a patient's voxels or lesions)."""
    w = np.asarray(hi, float) - np.asarray(lo, float)
    pid = np.asarray(patient)
    if pid.shape != w.shape:
        raise InputError("patient ids must match the intervals one to one")
    keys, inv = np.unique(pid, return_inverse=True)
    sums = np.bincount(inv, weights=w)
    cnt = np.bincount(inv)
    return {k.item() if hasattr(k, "item") else k: float(s / c) for k, s, c in zip(keys, sums, cnt, strict=True)}
