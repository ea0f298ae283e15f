"""Binary-outcome discrimination and clinical usefulness: ROC AUC with the DeLong confidence
interval, and decision-curve analysis.

* **AUC** = Mann-Whitney probability P(score_case > score_control) + 0.5 P(tie).
* **DeLong** variance (DeLong, DeLong & Clarke-Pearson, Biometrics 1988) with the fast
  midrank algorithm of Sun & Xu (IEEE Signal Process Lett 2014); the 95 % CI is
  AUC +- z_(1-alpha/2) SE on the AUC scale, clipped to [0, 1], as R ``pROC::ci.auc(method =
  "delong")`` computes it (the oracle in tests/evaluate/test_roc.py).
* **Decision curve** (Vickers & Elkin, Med Decis Making 2006): net benefit at threshold
  probability p_t = TP/n - FP/n x p_t/(1 - p_t), against "treat all" and "treat none" (0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["AUC", "auc_delong", "roc_curve", "decision_curve"]


def _midrank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    z = x[order]
    n = len(x)
    t = np.zeros(n)
    i = 0
    while i < n:
        j = i
        while j < n and z[j] == z[i]:
            j += 1
        t[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n)
    out[order] = t
    return out


@dataclass(frozen=True)
class AUC:
    auc: float
    se: float
    ci_low: float
    ci_high: float
    n_cases: int
    n_controls: int


def _check(score: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(score, float).ravel()
    y = np.asarray(outcome).ravel().astype(int)
    if s.shape != y.shape:
        raise ValueError("score and outcome differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    if set(np.unique(y)) - {0, 1}:
        raise ValueError("outcome must be 0/1")
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("AUC needs both outcomes present")
    return s, y


def auc_delong(score: np.ndarray, outcome: np.ndarray, level: float = 0.95) -> AUC:
    """AUC with its DeLong standard error and CI (module doc). Higher score = more likely case."""
    s, y = _check(score, outcome)
    x, yy = s[y == 1], s[y == 0]
    m, n = len(x), len(yy)
    tx, ty, tz = _midrank(x), _midrank(yy), _midrank(np.concatenate([x, yy]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v01 = (tz[:m] - tx) / n  # structural components of the cases
    v10 = 1.0 - (tz[m:] - ty) / m  # of the controls
    var = float(np.var(v01, ddof=1) / m + np.var(v10, ddof=1) / n)
    se = float(np.sqrt(max(var, 0.0)))
    z = float(stats.norm.ppf(1 - (1 - level) / 2))
    return AUC(auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se), m, n)


def roc_curve(score: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds), thresholds decreasing, from (0,0) to (1,1)."""
    s, y = _check(score, outcome)
    thr = np.unique(s)[::-1]
    tpr = np.array([0.0] + [float(np.mean(s[y == 1] >= t)) for t in thr])
    fpr = np.array([0.0] + [float(np.mean(s[y == 0] >= t)) for t in thr])
    return fpr, tpr, np.concatenate([[np.inf], thr])


def decision_curve(prob: np.ndarray, outcome: np.ndarray, thresholds: np.ndarray | None = None
                   ) -> dict[str, np.ndarray]:
    """Net benefit of the model and of "treat all" at each threshold probability (module doc)."""
    p, y = _check(prob, outcome)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("decision curves need probabilities in [0, 1]")
    pt = np.linspace(0.01, 0.99, 99) if thresholds is None else np.asarray(thresholds, float)
    n = len(y)
    prev = y.mean()
    nb, nb_all = [], []
    for t in pt:
        treat = p >= t
        tp = np.sum(treat & (y == 1)) / n
        fp = np.sum(treat & (y == 0)) / n
        w = t / (1 - t)
        nb.append(tp - fp * w)
        nb_all.append(prev - (1 - prev) * w)
    return {"threshold": pt, "net_benefit": np.array(nb), "treat_all": np.array(nb_all),
            "treat_none": np.zeros_like(pt)}
