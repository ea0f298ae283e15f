"""Reader statistics against statsmodels, scikit-learn, scipy, pingouin and published values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss
from statsmodels.stats.proportion import proportion_confint

from neurorad.evaluate import readers

# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories, kappa = 0.20993
WIKI = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def test_fleiss_wikipedia():
    r = readers.fleiss_kappa(WIKI, n_boot=200)
    assert r["kappa"] == pytest.approx(0.20993, abs=5e-6)
    assert r["kappa"] == pytest.approx(sm_fleiss(WIKI), abs=1e-12)
    assert r["ci_low"] < r["kappa"] < r["ci_high"]


def test_cohen_against_sklearn_and_statsmodels():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 120)
    b = np.where(rng.random(120) < 0.6, a, rng.integers(0, 4, 120))
    r = readers.cohen_kappa(a, b)
    assert r["kappa"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    table = pd.crosstab(a, b).to_numpy()
    assert r["se"] == pytest.approx(sm_cohens_kappa(table).std_kappa, rel=1e-6)
    for w in ("linear", "quadratic"):
        rw = readers.cohen_kappa(a, b, weights=w, n_boot=200)
        assert rw["kappa"] == pytest.approx(cohen_kappa_score(a, b, weights=w), abs=1e-12)
        assert rw["ci_low"] < rw["kappa"] < rw["ci_high"]


def test_kendalls_w_friedman_identity_with_ties():
    rng = np.random.default_rng(2)
    x = rng.integers(1, 5, size=(12, 4)).astype(float)  # 12 objects, 4 raters, many ties
    r = readers.kendalls_w(x)
    fr = stats.friedmanchisquare(*[x[i] for i in range(x.shape[0])])  # blocks = raters
    assert r["chi2"] == pytest.approx(fr.statistic, rel=1e-10)
    assert r["w"] == pytest.approx(fr.statistic / (x.shape[1] * (x.shape[0] - 1)), rel=1e-10)
    assert r["p"] == pytest.approx(fr.pvalue, rel=1e-8)
    perfect = np.tile(np.arange(10.0)[:, None], (1, 3))
    assert readers.kendalls_w(perfect)["w"] == pytest.approx(1.0)


def test_wilson_and_reader_sensitivity():
    assert readers.wilson_ci(17, 23) == pytest.approx(proportion_confint(17, 23, method="wilson"), abs=1e-12)
    df = pd.DataFrame({"reader": ["A"] * 10 + ["B"] * 10, "truth": [1] * 8 + [0] * 2 + [1] * 8 + [0] * 2,
                       "call": [1] * 6 + [0] * 4 + [1] * 8 + [1] * 2})
    t = readers.reader_sensitivity(df)
    assert list(t["sensitivity"]) == [0.75, 1.0]


def test_paired_anova_contingency():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=20), rng.normal(0.5, 1, 20)
    assert readers.paired_t(a, b)["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    g = {"x": rng.normal(0, 1, 15), "y": rng.normal(1, 1, 15), "z": rng.normal(0.2, 1, 15)}
    f, tab = readers.anova_tukey(g)
    assert f["p"] == pytest.approx(stats.f_oneway(*g.values()).pvalue)
    from statsmodels.stats.multicomp import pairwise_tukeyhsd
    sm = pairwise_tukeyhsd(np.concatenate(list(g.values())), np.repeat(list(g), 15))
    np.testing.assert_allclose(np.sort(tab["p_adj"].to_numpy()), np.sort(sm.pvalues), atol=2e-3)
    assert readers.contingency_test([[2, 8], [7, 3]])["test"] == "fisher"
    assert readers.contingency_test([[20, 30], [35, 15]])["test"] == "chi2"


def test_compare_phases_recovers_effect():
    rng = np.random.default_rng(5)
    rows = []
    for pat in range(60):
        u = rng.normal(0, 0.7)
        for rd in range(3):
            for ph, beta in (("1_without_ai", 0.0), ("2_with_ai", 1.0)):
                p = 1 / (1 + np.exp(-(0.2 + beta + u + 0.2 * rd)))
                rows.append({"patient": pat, "reader": rd, "phase": ph, "correct": rng.random() < p})
    df = pd.DataFrame(rows)
    g = readers.compare_phases(df, method="gee")
    assert g["p"] < 0.01 and 1.5 < g["odds_ratio"] < 5
    m = readers.compare_phases(df, method="mixed")
    assert m["log_or"] > 0.5
    ai = df[df.phase == "2_with_ai"]
    dt = readers.disagreement_table(ai.assign(case=ai.patient, rating=ai.correct))
    assert len(dt) == 3 and (dt["agree"] + dt["disagree"] == 60).all()
