"""Reader-study statistics, as used to validate the MS, WMH and microbleed systems.

* Cohen's kappa (Cohen 1960), optional linear/quadratic weights; CI from the large-sample
  standard error of Fleiss, Cohen & Everitt (1969) for the unweighted case, bootstrap over cases
  for the weighted case.
* Fleiss' kappa (Fleiss 1971) with the standard error of Fleiss, Nee & Landis (1979) (SE under
  the null, used for the z test) and a bootstrap-over-subjects percentile CI.
* Kendall's W with tie correction (Kendall & Babington Smith 1939; Legendre 2005):
  W = 12 S / (m^2 (n^3 - n) - m sum_j T_j), T_j = sum (t^3 - t) over tie groups of rater j;
  Friedman's chi2 = m (n - 1) W.
* Sensitivity per reader with the Wilson score interval (Wilson 1927).
* Paired t-test, one-way ANOVA with Tukey HSD (scipy), chi-square or Fisher's exact test on a
  2x2 table (Fisher when an expected count is < 5).
* Reading-phase comparison as in the MS reader study: a logistic GEE (exchangeable working
  correlation within patient, robust SE; Liang & Zeger 1986), or a logistic mixed model with
  patient (and reader) random intercepts (statsmodels ``BinomialBayesMixedGLM``, variational Bayes).
* Inter-reader disagreement tables (pairwise agreement counts and kappa), like the MS study's
  Tables 2-3.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from neurorad.errors import InputError

Z95 = float(stats.norm.ppf(0.975))


def _confusion(r1: Sequence, r2: Sequence) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(r1), np.asarray(r2)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise InputError("two raters need equally long, non-empty rating lists")
    cats = np.unique(np.concatenate([a, b]))
    ia, ib = np.searchsorted(cats, a), np.searchsorted(cats, b)
    k = cats.size
    return np.bincount(ia * k + ib, minlength=k * k).reshape(k, k).astype(float), cats


def _kappa_from_table(t: np.ndarray, weights: str | None) -> float:
    k = t.shape[0]
    n = t.sum()
    p = t / n
    i, j = np.indices((k, k))
    if weights is None:
        w = (i == j).astype(float)
    elif weights == "linear":
        w = 1 - np.abs(i - j) / max(k - 1, 1)
    elif weights == "quadratic":
        w = 1 - ((i - j) / max(k - 1, 1)) ** 2
    else:
        raise ValueError("weights must be None, 'linear' or 'quadratic'")
    po = np.sum(w * p)
    pe = np.sum(w * np.outer(p.sum(1), p.sum(0)))
    return float((po - pe) / (1 - pe)) if pe < 1 else float("nan")


def cohen_kappa(
    r1: Sequence, r2: Sequence, weights: str | None = None, n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Cohen's kappa of two raters with a 95 % CI (``kappa, se, ci_low, ci_high``)."""
    t, _ = _confusion(r1, r2)
    kappa = _kappa_from_table(t, weights)
    n = t.sum()
    if weights is None:
        p = t / n
        pr, pc = p.sum(1), p.sum(0)
        pe = float(pr @ pc)
        # Fleiss, Cohen & Everitt (1969) large-sample variance
        diag = np.sum(np.diag(p) * (1 - (pr + pc) * (1 - kappa)) ** 2)
        off = (1 - kappa) ** 2 * np.sum(p * (pc[:, None] + pr[None, :]) ** 2 * (1 - np.eye(len(pr))))
        var = (diag + off - (kappa - pe * (1 - kappa)) ** 2) / (n * (1 - pe) ** 2)
        se = float(np.sqrt(max(var, 0.0)))
        return {"kappa": kappa, "se": se, "ci_low": kappa - Z95 * se, "ci_high": kappa + Z95 * se}
    rng = np.random.default_rng(seed)
    a, b = np.asarray(r1), np.asarray(r2)
    cats = np.unique(np.concatenate([a, b]))
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, a.size, a.size)
        ia, ib = np.searchsorted(cats, a[idx]), np.searchsorted(cats, b[idx])
        tb = np.bincount(ia * cats.size + ib, minlength=cats.size**2).reshape(cats.size, cats.size)
        boots.append(_kappa_from_table(tb.astype(float), weights))
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return {"kappa": kappa, "se": float(np.nanstd(boots, ddof=1)), "ci_low": float(lo), "ci_high": float(hi)}


def fleiss_kappa(table: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Fleiss' kappa from a subjects x categories table of rater counts (same raters count per row).

    Returns ``kappa``, ``se0`` (Fleiss-Nee-Landis SE under H0), ``z``, ``p`` and a bootstrap
    percentile 95 % CI over subjects (``ci_low``, ``ci_high``).
    """
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or t.shape[0] < 2:
        raise InputError("Fleiss' kappa needs a subjects x categories count table with >= 2 subjects")
    m = t.sum(1)
    if not np.allclose(m, m[0]) or m[0] < 2:
        raise InputError("every subject must be rated by the same number (>= 2) of raters")

    def _k(tt: np.ndarray) -> float:
        nn, mm = tt.shape[0], tt[0].sum()
        pj = tt.sum(0) / (nn * mm)
        pi = (np.sum(tt * tt, 1) - mm) / (mm * (mm - 1))
        pe = np.sum(pj**2)
        return float((pi.mean() - pe) / (1 - pe)) if pe < 1 else float("nan")

    kappa = _k(t)
    n, mm = t.shape[0], m[0]
    pj = t.sum(0) / (n * mm)
    qj = 1 - pj
    s = np.sum(pj * qj)
    se0 = float(np.sqrt(2.0 / (n * mm * (mm - 1))) * np.sqrt(s**2 - np.sum(pj * qj * (qj - pj))) / s)
    z = kappa / se0
    rng = np.random.default_rng(seed)
    boots = [_k(t[rng.integers(0, n, n)]) for _ in range(n_boot)]
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return {"kappa": kappa, "se0": se0, "z": float(z), "p": float(2 * stats.norm.sf(abs(z))),
            "ci_low": float(lo), "ci_high": float(hi)}


def ratings_to_counts(ratings: np.ndarray) -> np.ndarray:
    """Subjects x raters category labels -> subjects x categories count table (for Fleiss)."""
    r = np.asarray(ratings)
    cats = np.unique(r)
    return np.stack([(r == c).sum(1) for c in cats], axis=1)


def kendalls_w(ratings: np.ndarray) -> dict[str, float]:
    """Kendall's W (tie-corrected) of an n objects x m raters score matrix, with Friedman chi2 and p."""
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise InputError("Kendall's W needs an objects x raters matrix with >= 2 of each")
    n, m = x.shape
    ranks = np.column_stack([stats.rankdata(x[:, j]) for j in range(m)])
    r_sum = ranks.sum(1)
    s = float(np.sum((r_sum - r_sum.mean()) ** 2))
    ties = 0.0
    for j in range(m):
        _, counts = np.unique(x[:, j], return_counts=True)
        ties += float(np.sum(counts**3 - counts))
    w = 12 * s / (m**2 * (n**3 - n) - m * ties)
    chi2 = m * (n - 1) * w
    return {"w": float(w), "chi2": float(chi2), "df": float(n - 1), "p": float(stats.chi2.sf(chi2, n - 1))}


def wilson_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    den = 1 + z**2 / n
    c = (p + z**2 / (2 * n)) / den
    h = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return float(c - h), float(c + h)


def reader_sensitivity(df: pd.DataFrame, reader: str = "reader", truth: str = "truth",
                       call: str = "call") -> pd.DataFrame:
    """Per reader: positives, true positives, sensitivity and Wilson 95 % CI (rows with truth = 1)."""
    rows = []
    for r, g in df.groupby(reader, sort=True):
        pos = g[g[truth].astype(bool)]
        tp = int(pos[call].astype(bool).sum())
        lo, hi = wilson_ci(tp, len(pos))
        rows.append({reader: r, "positives": len(pos), "tp": tp,
                     "sensitivity": tp / len(pos) if len(pos) else np.nan, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def paired_t(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired t-test (scipy ``ttest_rel``) with the mean difference a - b and its 95 % CI."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    return {"mean_diff": float(np.mean(a - b)), "t": float(res.statistic), "p": float(res.pvalue),
            "ci_low": float(ci.low), "ci_high": float(ci.high)}


def anova_tukey(groups: dict[str, Sequence[float]]) -> tuple[dict[str, float], pd.DataFrame]:
    """One-way ANOVA (F, p) and Tukey HSD pairwise table (scipy ``tukey_hsd``)."""
    names = list(groups)
    data = [np.asarray(groups[k], float) for k in names]
    f = stats.f_oneway(*data)
    hsd = stats.tukey_hsd(*data)
    ci = hsd.confidence_interval(0.95)
    rows = [{"group1": names[i], "group2": names[j], "mean_diff": float(data[i].mean() - data[j].mean()),
             "p_adj": float(hsd.pvalue[i, j]), "ci_low": float(ci.low[i, j]), "ci_high": float(ci.high[i, j])}
            for i, j in combinations(range(len(names)), 2)]
    return {"f": float(f.statistic), "p": float(f.pvalue)}, pd.DataFrame(rows)


def contingency_test(table: np.ndarray) -> dict[str, float | str]:
    """Chi-square test of independence, or Fisher's exact test for a 2x2 table with an expected count < 5."""
    t = np.asarray(table)
    chi2, p, dof, expected = stats.chi2_contingency(t)
    if t.shape == (2, 2) and expected.min() < 5:
        odds, pf = stats.fisher_exact(t)
        return {"test": "fisher", "statistic": float(odds), "p": float(pf)}
    return {"test": "chi2", "statistic": float(chi2), "p": float(p), "dof": float(dof)}


def compare_phases(
    df: pd.DataFrame, outcome: str = "correct", phase: str = "phase", patient: str = "patient",
    reader: str | None = "reader", method: str = "gee",
) -> dict[str, float]:
    """Odds ratio of a binary outcome between reading phases (second level vs first).

    ``method="gee"``: logistic GEE, exchangeable correlation within patient, robust SE (the
    reader enters as a fixed effect when given). ``method="mixed"``: logistic model with patient
    (and reader) random intercepts, statsmodels ``BinomialBayesMixedGLM`` (posterior mean and SD).
    """
    import statsmodels.api as sm
    import statsmodels.formula.api as smf

    d = df.copy()
    d[outcome] = d[outcome].astype(int)
    levels = sorted(d[phase].unique())
    if len(levels) != 2:
        raise InputError(f"compare_phases needs exactly two phases, got {levels}")
    d["_phase"] = (d[phase] == levels[1]).astype(int)
    if method == "gee":
        formula = f"{outcome} ~ _phase" + (f" + C({reader})" if reader else "")
        fit = smf.gee(formula, patient, d, family=sm.families.Binomial(),
                      cov_struct=sm.cov_struct.Exchangeable()).fit()
        b, se, p = float(fit.params["_phase"]), float(fit.bse["_phase"]), float(fit.pvalues["_phase"])
    elif method == "mixed":
        from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

        vc = {"patient": f"0 + C({patient})"}
        if reader:
            vc["reader"] = f"0 + C({reader})"
        fit = BinomialBayesMixedGLM.from_formula(f"{outcome} ~ _phase", vc, d).fit_vb()
        i = list(fit.model.exog_names).index("_phase")
        b, se = float(fit.fe_mean[i]), float(fit.fe_sd[i])
        p = float(2 * stats.norm.sf(abs(b / se)))
    else:
        raise ValueError("method must be 'gee' or 'mixed'")
    return {"phase_ref": levels[0], "phase_test": levels[1], "log_or": b, "se": se, "p": p,
            "odds_ratio": float(np.exp(b)), "or_ci_low": float(np.exp(b - Z95 * se)),
            "or_ci_high": float(np.exp(b + Z95 * se))}


def disagreement_table(df: pd.DataFrame, case: str = "case", reader: str = "reader",
                       rating: str = "rating") -> pd.DataFrame:
    """Pairwise inter-reader agreement: cases read by both, agreements, disagreements, % and kappa."""
    wide = df.pivot_table(index=case, columns=reader, values=rating, aggfunc="first")
    rows = []
    for r1, r2 in combinations(wide.columns, 2):
        both = wide[[r1, r2]].dropna()
        agree = int((both[r1] == both[r2]).sum())
        k = cohen_kappa(both[r1].to_numpy(), both[r2].to_numpy())["kappa"] if len(both) else np.nan
        rows.append({"reader_1": r1, "reader_2": r2, "n_cases": len(both), "agree": agree,
                     "disagree": len(both) - agree, "agreement_pct": 100 * agree / len(both) if len(both) else np.nan,
                     "kappa": k})
    return pd.DataFrame(rows)


def disagreement_crosstab(df: pd.DataFrame, reader_1: str, reader_2: str, case: str = "case",
                          reader: str = "reader", rating: str = "rating") -> pd.DataFrame:
    """Cross-tabulation of two readers' ratings over the cases both read (rows reader_1)."""
    wide = df.pivot_table(index=case, columns=reader, values=rating, aggfunc="first")[[reader_1, reader_2]].dropna()
    return pd.crosstab(wide[reader_1], wide[reader_2], rownames=[reader_1], colnames=[reader_2])
