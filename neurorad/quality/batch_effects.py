"""Batch effects: quality metrics vs performance, and site separation in quality-metric space.

* :func:`benjamini_hochberg`: BH step-up adjusted p-values (Benjamini & Hochberg 1995), equal to
  statsmodels ``multipletests(method="fdr_bh")``.
* :func:`quality_performance_correlation`: Spearman's rho of every image-quality metric against
  every performance metric over cases, BH-adjusted over the whole family of tests; significant
  at ``alpha`` (the holistic-evaluation paper used an FDR of 0.25).
* :func:`site_pca`: z-score each metric over cases (constant metrics dropped), PCA by SVD, then
  one-way ANOVA of each retained component by site and pairwise Welch t-tests between sites
  (BH-adjusted within each component).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from neurorad.errors import InputError
from neurorad.quantify.stats import benjamini_hochberg

__all__ = ["benjamini_hochberg", "quality_performance_correlation", "site_pca"]


def quality_performance_correlation(
    quality: pd.DataFrame, performance: pd.DataFrame, alpha: float = 0.25
) -> pd.DataFrame:
    """Spearman rho and BH q for every (quality metric, performance metric) pair, joined on the index."""
    q, p = quality.select_dtypes("number"), performance.select_dtypes("number")
    joined = q.join(p, how="inner", lsuffix="_q")
    if len(joined) < 3:
        raise InputError("need at least 3 cases present in both the quality and the performance tables")
    rows = []
    for qm in q.columns:
        for pm in p.columns:
            a = joined[qm if qm not in p.columns else f"{qm}_q"].to_numpy(float)
            b = joined[pm].to_numpy(float)
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
                rho, pv = np.nan, np.nan
            else:
                rho, pv = stats.spearmanr(a[ok], b[ok])
            rows.append({"quality_metric": qm, "performance_metric": pm, "n": int(ok.sum()),
                         "rho": float(rho), "p": float(pv)})
    df = pd.DataFrame(rows)
    df["q"] = benjamini_hochberg(df["p"].to_numpy())
    df["significant"] = df["q"] <= alpha
    return df


def site_pca(quality: pd.DataFrame, site: pd.Series, n_components: int = 2) -> dict[str, object]:
    """PCA of z-scored quality metrics with ANOVA and pairwise t-tests by site.

    Returns ``scores`` (DataFrame: PC1.., site), ``explained_variance_ratio``, ``loadings``,
    ``anova`` (per component F, p) and ``pairwise`` (per component and site pair: t, p, q).
    """
    x = quality.select_dtypes("number").replace([np.inf, -np.inf], np.nan)
    x = x.loc[:, x.notna().all() & (x.std(ddof=0) > 0)]
    s = site.reindex(x.index)
    if x.shape[1] < 2 or x.shape[0] < 3 or s.isna().any():
        raise InputError("site PCA needs >= 3 cases with a site and >= 2 non-constant finite metrics")
    z = (x - x.mean()) / x.std(ddof=0)
    u, sv, vt = np.linalg.svd(z.to_numpy(), full_matrices=False)
    k = min(n_components, vt.shape[0])
    scores = pd.DataFrame(u[:, :k] * sv[:k], index=x.index, columns=[f"PC{i + 1}" for i in range(k)])
    # sign convention: largest loading positive (PCA signs are arbitrary)
    for i in range(k):
        if vt[i, np.argmax(np.abs(vt[i]))] < 0:
            vt[i] *= -1
            scores.iloc[:, i] *= -1
    scores["site"] = s.to_numpy()
    evr = sv**2 / np.sum(sv**2)
    anova, pair_rows = [], []
    sites = sorted(scores["site"].unique(), key=str)
    for c in scores.columns[:k]:
        groups = [scores.loc[scores.site == g, c].to_numpy() for g in sites]
        if len(groups) >= 2 and all(len(g) >= 2 for g in groups):
            f, p = stats.f_oneway(*groups)
        else:
            f, p = np.nan, np.nan
        anova.append({"component": c, "f": float(f), "p": float(p)})
        comp_rows = []
        for a, b in combinations(range(len(sites)), 2):
            t, p2 = stats.ttest_ind(groups[a], groups[b], equal_var=False)
            comp_rows.append({"component": c, "site_1": sites[a], "site_2": sites[b], "t": float(t), "p": float(p2)})
        if comp_rows:
            qv = benjamini_hochberg(np.array([r["p"] for r in comp_rows]))
            for r, qq in zip(comp_rows, qv, strict=True):
                r["q"] = float(qq)
        pair_rows += comp_rows
    return {
        "scores": scores, "explained_variance_ratio": evr[:k],
        "loadings": pd.DataFrame(vt[:k].T, index=x.columns, columns=scores.columns[:k]),
        "anova": pd.DataFrame(anova), "pairwise": pd.DataFrame(pair_rows),
    }
