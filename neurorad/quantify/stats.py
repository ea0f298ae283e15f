"""Multiple-testing correction: the one Benjamini-Hochberg implementation of the project.

Benjamini & Hochberg (1995), J R Stat Soc B 57:289-300: the step-up adjusted p-values
``q_(i) = min_{j >= i} min(1, m p_(j) / j)``; equal to statsmodels'
``multipletests(method="fdr_bh")`` (tests/quality, tests/genomics use it as the oracle).
"""

from __future__ import annotations

import numpy as np

__all__ = ["benjamini_hochberg"]


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values), same order as the input; NaN stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    pv = p[ok]
    m = pv.size
    if m == 0:
        return out
    order = np.argsort(pv)
    ranked = pv[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(q, 1.0)
    out[ok] = res
    return out
