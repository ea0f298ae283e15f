"""NB likelihood and regression, the classifiers as scikit-learn estimators, planted-signal recovery."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.utils.estimator_checks import parametrize_with_checks

from neurorad.genomics import classifiers as C
from neurorad.genomics.nb import nb_glm_fit, nb_logpmf

# -- NB likelihood ------------------------------------------------------------------------------


def test_nb_logpmf_equals_scipy():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 500, 300).astype(float)
    mu = rng.uniform(0.1, 400, 300)
    phi = rng.uniform(1e-4, 3, 300)
    ours = nb_logpmf(y, mu, phi).sum()
    ref = stats.nbinom.logpmf(y, 1 / phi, 1 / (1 + phi * mu)).sum()
    assert ours == pytest.approx(ref, rel=1e-11)


def test_nb_logpmf_poisson_limit():
    y = np.array([0.0, 1, 5, 40])
    mu = np.array([0.5, 2.0, 5.0, 33.0])
    np.testing.assert_allclose(nb_logpmf(y, mu, 0.0), stats.poisson.logpmf(y, mu), rtol=1e-12)
    np.testing.assert_allclose(nb_logpmf(y, mu, 1e-9), stats.poisson.logpmf(y, mu), rtol=1e-6)


def test_nb_glm_matches_statsmodels():
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    n, p = 60, 3
    x = np.hstack([np.ones((n, 1)), rng.normal(size=(n, p - 1))])
    off = np.log(rng.uniform(0.5, 2, n))
    phi = np.array([0.3, 0.05])
    beta_true = np.array([[2.0, 0.5, -0.3], [4.0, -0.2, 0.1]])
    y = np.column_stack([rng.negative_binomial(1 / ph, 1 / (1 + ph * np.exp(x @ b + off)))
                         for b, ph in zip(beta_true, phi, strict=True)]).astype(float)
    beta, conv, _ = nb_glm_fit(y, x, off, phi)
    assert conv.all()
    for g in range(2):
        ref = sm.GLM(y[:, g], x, family=sm.families.NegativeBinomial(alpha=phi[g]), offset=off).fit(tol=1e-12)
        np.testing.assert_allclose(beta[g], ref.params, atol=1e-6)


def test_nb_glm_separation_stays_finite():
    """A gene with no reads at all in a class, and a covariate separating zeros: finite estimates."""
    n = 20
    x = np.column_stack([np.ones(n), np.r_[np.zeros(10), np.ones(10)]])
    y = np.column_stack([np.zeros(n), np.r_[np.zeros(10), np.full(10, 30.0)]])
    beta, conv, _ = nb_glm_fit(y, x, np.zeros(n), np.array([0.1, 0.0]),
                               prior_precision=np.array([0.01, 1.0]))
    assert np.all(np.isfinite(beta))


# -- scikit-learn estimator checks --------------------------------------------------------------

_NOT_COUNTS = "sklearn's blob features are continuous, not read counts: a count model cannot reach 83% on them"
_NEG_TEST = "the check predicts on unshifted (negative) data although the estimator declares positive_only"


def _expected(est):
    out = {"check_decision_proba_consistency": _NEG_TEST}
    if not isinstance(est, C.RFGenomics):
        out["check_classifiers_train"] = _NOT_COUNTS
    return out


@parametrize_with_checks(
    [C.PLDA(), C.NBLDA(), C.RadiogenomicsNB(), C.VoomNSC(cv=3), C.RFGenomics(n_estimators=10),
     C.RFRadiogenomics(n_estimators=10), C.RFGenomics(n_estimators=10, backend="sklearn"),
     C.RFRadiogenomics(n_estimators=10, backend="sklearn")],
    expected_failed_checks=_expected,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- behaviour ------------------------------------------------------------------------------------


def _xy(cohort, target):
    x = np.hstack([cohort.counts.to_numpy().T.astype(float), cohort.radiomics.to_numpy()])
    return x, cohort.clinical[target].to_numpy()


@pytest.mark.parametrize("name", ["RadiogenomicsNB", "NBLDA", "PLDA"])
def test_submodel_equals_refit(small_cohort, name):
    from neurorad.genomics.de import classic_de

    x, y = _xy(small_cohort, "IDH")
    tr = np.arange(0, 108, 1) % 5 != 0
    cls = C.CLASSIFIERS[name]
    de = classic_de(x[tr, :-8].T, y[tr], q2q="wilson-hilferty")
    big = cls(n_genes=50, n_radiomics=8).fit(x[tr], y[tr], de_result=de)
    small = cls(n_genes=20, n_radiomics=8).fit(x[tr], y[tr], de_result=de)
    np.testing.assert_allclose(big.submodel(20).predict_proba(x[~tr]), small.predict_proba(x[~tr]), rtol=1e-9)


def test_selection_uses_training_rows_only(small_cohort, monkeypatch):
    seen = []
    real = C.classic_de

    def spy(counts, group, **kw):
        seen.append(counts.shape[1])
        return real(counts, group, **kw)

    monkeypatch.setattr(C, "classic_de", spy)
    x, y = _xy(small_cohort, "IDH")
    C.PLDA(n_genes=10, n_radiomics=8).fit(x[:70], y[:70])
    assert seen == [70]


@pytest.mark.slow
def test_planted_signal_recovered(small_cohort):
    """Every classifier ranks held-out patients well above chance (AUC); with no signal none does."""
    from sklearn.metrics import roc_auc_score

    from neurorad.genomics.simulate import simulate_cohort

    rng = np.random.default_rng(0)
    null = simulate_cohort(n_samples=108, n_genes=1500, effect=0.0, seed=4)
    for cohort, lo, hi in ((small_cohort, 0.8, 1.01), (null, 0.0, 0.75)):
        x, y = _xy(cohort, "IDH")
        te = np.zeros(108, dtype=bool)
        for lab in np.unique(y):
            idx = np.flatnonzero(y == lab)
            te[rng.choice(idx, int(round(0.3 * idx.size)), replace=False)] = True
        for name, cls in C.CLASSIFIERS.items():
            est = cls(n_genes=30, n_radiomics=8, q2q="wilson-hilferty")
            proba = est.fit(x[~te], y[~te]).predict_proba(x[te])[:, 1]
            auc = roc_auc_score(y[te] == est.classes_[1], proba)
            print(name, round(auc, 3))
            assert lo <= auc <= hi, (name, auc)


def test_radiogenomics_nb_uses_radiomics(small_cohort):
    """Radiogenes follow the log-linear model: with the radiomics link the held-out likelihood is higher."""
    x, y = _xy(small_cohort, "IDH")
    genes = small_cohort.truth["radiogenes"]["IDH"]
    cols = np.r_[genes, np.arange(x.shape[1] - 8, x.shape[1])]
    counts_cols = x[:, genes]
    with_rad = C.RadiogenomicsNB(n_radiomics=8, dispersion=0.15).fit(x[:80][:, cols], y[:80])
    without = C.RadiogenomicsNB(n_radiomics=0, dispersion=0.15).fit(counts_cols[:80], y[:80])
    ll_with = with_rad._joint_log_likelihood(x[80:][:, cols])
    ll_without = without._joint_log_likelihood(counts_cols[80:])
    idx = np.searchsorted(with_rad.classes_, y[80:])
    assert ll_with[np.arange(28), idx].sum() > ll_without[np.arange(28), idx].sum()


def test_voom_weights_match_edgepython(pasilla):
    import edgepython as ep

    table, group = pasilla
    y = table.counts[table.counts.sum(axis=1) > 50][:2000].astype(float)
    lib = y.sum(axis=0)
    g = (group == "treated").astype(int)
    logcpm, w, _ = C.voom_weights(y.T, lib, g)
    design = np.column_stack([1 - g, g]).astype(float)
    ref = ep.voom(y, design=design, lib_size=lib)
    np.testing.assert_allclose(logcpm.T, np.asarray(ref["E"]), atol=1e-10)
    # statsmodels lowess and R lowess (used by voom) interpolate within delta differently: ~0.2%
    np.testing.assert_allclose(w.T, np.asarray(ref["weights"]), rtol=5e-3)


def test_nsc_centroids_match_sklearn_with_unit_weights():
    from sklearn.neighbors import NearestCentroid

    rng = np.random.default_rng(5)
    x = rng.normal(size=(40, 25)) + np.r_[np.zeros(20), np.ones(20)][:, None] * rng.normal(0, 1, 25)
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    cent, overall, sd, s0, mk = C._nsc_stats(x, np.ones_like(x), y, 2)
    for delta in (0.1, 0.5, 1.5):
        ref = NearestCentroid(shrink_threshold=delta).fit(x, y)
        np.testing.assert_allclose(C._shrunken(cent, overall, sd, s0, mk, delta), ref.centroids_, atol=1e-10)


def test_radiogenomics_nb_poisson_limit_equals_plda_without_radiomics(small_cohort):
    x, y = _xy(small_cohort, "IDH")
    c = x[:, :200]
    a = C.RadiogenomicsNB(dispersion="poisson", intercept_prior_var=1e8).fit(c[:80], y[:80])
    b = C.PLDA(beta=0.0).fit(c[:80], y[:80])
    np.testing.assert_allclose(a.predict_proba(c[80:]), b.predict_proba(c[80:]), atol=1e-3)


def test_voomnsc_threshold_is_the_cv_minimiser(small_cohort):
    """The vectorised CV picks the largest threshold with the least CV error, as a plain loop does."""
    from sklearn.model_selection import StratifiedKFold

    x, y = _xy(small_cohort, "1p19q")
    est = C.VoomNSC(n_genes=30, n_radiomics=8, q2q="wilson-hilferty").fit(x[:90], y[:90])
    yi = np.searchsorted(est.classes_, y[:90])
    counts = x[:90, :-8]
    logcpm, w, _ = C.voom_weights(counts[:, est.genes_], counts.sum(axis=1), yi)
    errors = np.zeros(est.cv_grid_.size)
    for tr, te in StratifiedKFold(10, shuffle=True, random_state=0).split(logcpm, yi):
        stats_ = C._nsc_stats(logcpm[tr], w[tr], yi[tr], 2)
        for t, delta in enumerate(est.cv_grid_):
            sh = C._shrunken(*stats_, delta)
            pred = np.argmax(C._nsc_scores(logcpm[te], sh, stats_[2], stats_[3], est.log_prior_), axis=1)
            errors[t] += np.sum(pred != yi[te])
    assert est.threshold_ == est.cv_grid_[np.flatnonzero(errors == errors.min())[-1]]
