"""edgeR classic path against the independent implementation ``edgepython`` on real counts."""

from __future__ import annotations

import edgepython as ep
import numpy as np
import pytest
from scipy import stats

from neurorad.genomics import de as D
from neurorad.genomics import dispersion as disp


def _prep(table, group):
    y = table.counts.astype(np.float64)
    y = y[y.sum(axis=1) > 0]
    return y, np.asarray(group), y.sum(axis=0)


def _oracle(y, group):
    dge = ep.make_dgelist(y, group=group)
    dge = ep.estimate_common_disp(dge)
    dge = ep.estimate_tagwise_disp(dge)
    return dge, ep.exact_test(dge)["table"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["pasilla", "airway"])
def test_dispersion_and_exact_test_match_edgepython(dataset, request):
    table, group = request.getfixturevalue(dataset)
    y, group, lib = _prep(table, group)
    dge, tab = _oracle(y, group)
    common = disp.common_dispersion(y, group, lib)
    # the oracle searches to tol 1e-6 in delta = phi / (1 + phi)
    assert common == pytest.approx(dge["common.dispersion"], rel=1e-5)
    # given the same common dispersion, tagwise and AveLogCPM agree
    alc = disp.ave_log_cpm(y, lib, dispersion=dge["common.dispersion"])
    np.testing.assert_allclose(alc, dge["AveLogCPM"], rtol=0, atol=1e-8)
    tag = disp.tagwise_dispersion(y, group, dge["common.dispersion"], lib, ave_logcpm=alc)
    np.testing.assert_allclose(tag, dge["tagwise.dispersion"], rtol=1e-5)
    # exact test with the oracle's tagwise dispersions
    ours = D.exact_test(y, group, dge["tagwise.dispersion"], lib)
    np.testing.assert_allclose(ours["logFC"], tab["logFC"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours["PValue"], tab["PValue"], rtol=1e-6, atol=1e-12)
    # the whole path end to end (own common/tagwise estimates)
    res = D.classic_de(y, group, lib_size=lib)
    p_ours = np.empty(y.shape[0])
    p_ours[res.ranking] = res.table["PValue"].to_numpy()
    np.testing.assert_allclose(p_ours, tab["PValue"], rtol=1e-3, atol=1e-10)
    top_ours = set(res.ranking[:100])
    top_oracle = set(np.argsort(tab["PValue"].to_numpy(), kind="stable")[:100])
    assert len(top_ours & top_oracle) >= 98


def test_fast_pseudocounts_rank_like_exact(pasilla):
    y, group, lib = _prep(*pasilla)
    y = y[:4000]
    d = disp.common_dispersion(y, group, lib)
    exact = D.exact_test(y, group, d, lib)["PValue"].to_numpy()
    fast = D.exact_test(y, group, d, lib, q2q="wilson-hilferty")["PValue"].to_numpy()
    assert stats.spearmanr(exact, fast).statistic > 0.999
    assert len(set(np.argsort(exact)[:50]) & set(np.argsort(fast)[:50])) >= 45


def test_maximize_interpolant_matches_oracle():
    from edgepython.dispersion_lowlevel import maximize_interpolant as oracle

    rng = np.random.default_rng(0)
    x = np.linspace(-6, 6, 11)
    ll = -((x[None, :] - rng.uniform(-7, 7, (500, 1))) ** 2) * rng.uniform(0.1, 3, (500, 1)) \
        + rng.normal(0, 0.3, (500, 11))
    np.testing.assert_allclose(disp.maximize_interpolant(x, ll), oracle(x, ll), atol=1e-10)


def test_mglm_one_group_is_the_nb_mle():
    rng = np.random.default_rng(1)
    lib = rng.uniform(1e5, 5e5, 6)
    y = rng.poisson(lib * 1e-4, (50, 6)).astype(float)
    beta = disp.mglm_one_group(y, 0.1, np.log(lib))
    mu = np.exp(beta[:, None]) * lib
    score = ((y - mu) / (1 + 0.1 * mu)).sum(axis=1)
    np.testing.assert_allclose(score, 0.0, atol=1e-6)
    assert disp.mglm_one_group(np.zeros((1, 6)), 0.1, np.log(lib))[0] == -np.inf


def test_exact_test_poisson_limit_is_binomial_test():
    y1 = np.array([[3.0, 5.0], [0.0, 1.0]])
    y2 = np.array([[12.0, 9.0], [4.0, 6.0]])
    p = D.exact_test_double_tail(y1, y2, np.zeros(2))
    assert p[0] == pytest.approx(stats.binomtest(8, 29, 0.5).pvalue)
    assert p[1] == pytest.approx(stats.binomtest(1, 11, 0.5).pvalue)


def test_beta_binomial_tail_equals_nb_convolution():
    """The closed form used for the exact test equals edgeR's ratio of NB pmf sums."""
    n1, n2, phi = 3, 4, 0.2
    s1, s2 = 40, 110
    s = s1 + s2
    mu1, mu2 = n1 * s / (n1 + n2), n2 * s / (n1 + n2)

    def nb(k, n, mu):
        return stats.nbinom.pmf(k, n / phi, (n / phi) / (n / phi + mu))

    i = np.arange(0, s1 + 1)
    p_direct = 2 * np.sum(nb(i, n1, mu1) * nb(s - i, n2, mu2)) / nb(s, n1 + n2, s)
    p = D.exact_test_double_tail(np.array([[s1, 0, 0.0]]), np.array([[s2, 0, 0, 0.0]]), np.array([phi]))
    assert p[0] == pytest.approx(min(p_direct, 1.0), rel=1e-10)


def test_bh_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(2).uniform(size=200) ** 3
    np.testing.assert_allclose(D.benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], atol=1e-12)


def test_compiled_fast_path_equals_numpy_fast_path(small_cohort):
    """The numba kernels compute the same fast path as the numpy code (tagwise, p-values, ranking)."""
    from scipy import special

    from neurorad.genomics import _kernels as K

    z = np.r_[np.linspace(0.01, 9.99, 50), np.linspace(10, 1e6, 50)]
    np.testing.assert_allclose([K.lgamma_fast(v) for v in z], special.gammaln(z), rtol=1e-13, atol=1e-13)
    y = small_cohort.counts.to_numpy().astype(np.float64)
    y = y[y.mean(axis=1) > 5]
    group = small_cohort.clinical["ATRX"].to_numpy()
    lib = y.sum(axis=0)
    a = D.classic_de(y, group, lib_size=lib, q2q="compiled", common_max_genes=1500, logfc=False)
    b = D.classic_de(y, group, lib_size=lib, q2q="wilson-hilferty", common_max_genes=1500, logfc=False)
    np.testing.assert_allclose(a.tagwise_dispersion, b.tagwise_dispersion, rtol=1e-8)
    pa, pb = np.empty(y.shape[0]), np.empty(y.shape[0])
    pa[a.ranking], pb[b.ranking] = a.table["PValue"].to_numpy(), b.table["PValue"].to_numpy()
    np.testing.assert_allclose(pa, pb, rtol=1e-7, atol=1e-300)
    assert np.array_equal(a.ranking[:150], b.ranking[:150])
