"""Two-group exact test for NB counts and the ranking of differentially expressed genes (DERs).

edgeR's classic ``exactTest`` (Robinson & Smyth 2008, *Biostatistics* 9:321), vectorised:
pseudo-counts at the common library size, then for each gene the conditional distribution of
the group-1 sum given the total. With equal NB probabilities that conditional law is a sum
of NB pmf products; the doubled smaller tail is the p-value ("doubletail"). Genes with both
sums above ``big_count`` use edgeR's beta approximation; zero dispersion gives the binomial
test. logFC uses prior counts 0.125 scaled by library size (edgeR ``exactTest``).

``classic_de`` runs the whole path (common -> tagwise dispersion -> exact test) and returns
a table ranked by p-value; the protocol calls it on training samples only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from neurorad.genomics.dispersion import (
    _levels,
    ave_log_cpm,
    common_dispersion,
    mglm_one_group,
    newton_tol,
    q2q_nbinom,
    tagwise_dispersion,
)
from neurorad.quantify.stats import benjamini_hochberg


def _beta_approx(s1: np.ndarray, s2: np.ndarray, n1: int, n2: int, disp: np.ndarray) -> np.ndarray:
    """edgeR ``exactTestBetaApprox`` (continuity-corrected beta approximation).

    edgeR compares ``(s1 +- 0.5) / y`` with the beta median; the beta CDF is increasing, so
    ``(s1 + 0.5) / y < median`` is ``betainc(a1, a2, (s1 + 0.5) / y) < 1/2`` (and likewise on the
    right): the same test without the (costly) inverse incomplete beta function.
    """
    y = s1 + s2
    mu = y / (n1 + n2)
    p = np.ones_like(y)
    nz = np.flatnonzero(y > 0)
    a1 = n1 * mu[nz] / (1.0 + disp[nz] * mu[nz])
    a2 = (n2 / n1) * a1
    lo = special.betainc(a1, a2, np.minimum((s1[nz] + 0.5) / y[nz], 1.0))
    left = lo < 0.5
    p[nz[left]] = 2.0 * lo[left]
    rest = np.flatnonzero(~left)  # the upper tail only where the lower one is not below 1/2
    hi = special.betaincc(a1[rest], a2[rest], np.clip((s1[nz[rest]] - 0.5) / y[nz[rest]], 0.0, 1.0))
    right = hi < 0.5
    p[nz[rest[right]]] = 2.0 * hi[right]
    return np.minimum(p, 1.0)


def exact_test_double_tail(
    y1: np.ndarray, y2: np.ndarray, dispersion: np.ndarray, big_count: int = 900, chunk_elems: int = 4_000_000
) -> np.ndarray:
    """Doubled-tail exact p-values from per-group (pseudo-)count matrices (genes x samples)."""
    y1 = np.asarray(y1, dtype=np.float64)
    y2 = np.asarray(y2, dtype=np.float64)
    n1, n2 = y1.shape[1], y2.shape[1]
    n = n1 + n2
    disp = np.asarray(dispersion, dtype=np.float64)
    s1r, s2r = y1.sum(axis=1), y2.sum(axis=1)
    s1, s2 = np.round(s1r), np.round(s2r)
    s = s1 + s2
    mu1 = n1 * s / n
    pvals = np.ones(s.size)
    pois = disp <= 0
    if pois.any():
        pvals[pois] = np.array([stats.binomtest(int(a), int(a + b), n1 / n).pvalue if a + b > 0 else 1.0
                                for a, b in zip(s1[pois], s2[pois], strict=True)])
    big = (s1 > big_count) & (s2 > big_count) & ~pois
    if big.any():
        pvals[big] = _beta_approx(s1r[big], s2r[big], n1, n2, disp[big])
    rest = ~pois & ~big & (s > 0) & (s1 != mu1)
    idx = np.flatnonzero(rest)
    if idx.size:
        left = s1[idx] < mu1[idx]
        # the tail variable and its NB size: group 1 (left tail) or group 2 (right tail)
        x = np.where(left, s1[idx], s2[idx])
        a = np.where(left, n1, n2) / disp[idx]
        b = np.where(left, n2, n1) / disp[idx]
        pvals[idx] = _bb_lower_tail_x2(x, s[idx], a, b, chunk_elems)
    return pvals


def _bb_lower_tail_x2(x: np.ndarray, s: np.ndarray, a: np.ndarray, b: np.ndarray, chunk_elems: int) -> np.ndarray:
    """``min(1, 2 P(X <= x))`` for ``X ~ BetaBinomial(s, a, b)``, vectorised.

    Given the total s, the group-1 sum of two NB sums with a common probability is
    beta-binomial with shapes ``n1/phi, n2/phi``: edgeR's ratio of NB pmf products (its
    ``exactTestDoubleTail``) in closed form. The pmf is summed down from x with the ratio
    recursion (two logs per term); for unimodal laws (a, b >= 1) only the terms within
    ``30 sd + 30`` of x are summed (the rest are below 1e-40 of the largest), else all.
    """
    logp_x = (special.gammaln(s + 1.0) - special.gammaln(x + 1.0) - special.gammaln(s - x + 1.0)
              + special.betaln(x + a, s - x + b) - special.betaln(a, b))
    sd = np.sqrt(s * a * b * (a + b + s) / ((a + b) ** 2 * (a + b + 1.0)))
    full = x + 1.0
    narrow = np.where((a >= 1.0) & (b >= 1.0), np.minimum(full, np.ceil(9.0 * sd + 10.0)), full)
    width = narrow.astype(np.int64)
    out, tail_ok = _bb_sum(x, s, a, b, logp_x, width, chunk_elems)
    todo = np.flatnonzero(~tail_ok & (width < full))
    while todo.size:  # widen 2x where the omitted tail could matter, up to every term
        width[todo] = np.minimum(full[todo], 2 * width[todo]).astype(np.int64)
        out[todo], ok = _bb_sum(x[todo], s[todo], a[todo], b[todo], logp_x[todo], width[todo], chunk_elems)
        todo = todo[~ok & (width[todo] < full[todo])]
    return out


def _bb_sum(x: np.ndarray, s: np.ndarray, a: np.ndarray, b: np.ndarray, logp_x: np.ndarray, width: np.ndarray,
            chunk_elems: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum of the ``width`` pmf terms from x down, and whether the omitted terms are negligible.

    The beta-binomial with shapes >= 1 is log-concave: going down from the last summed term the
    pmf ratios only shrink, so the omitted mass is at most ``last * r / (1 - r)`` with ``r`` the
    last ratio. "Negligible" is that bound below 1e-13 of the sum (or nothing omitted).
    """
    out = np.ones(x.size)
    ok = np.ones(x.size, dtype=bool)
    order = np.argsort(width, kind="stable")
    start = 0
    while start < order.size:
        stop = start + 1
        while stop < order.size and width[order[stop]] * (stop - start + 1) <= max(chunk_elems, width[order[stop]]):
            stop += 1
        g = order[start:stop]
        w = int(width[g[-1]])
        m = np.arange(max(w - 1, 0), dtype=np.float64)[None, :]
        xi, si, ai, bi = x[g][:, None], s[g][:, None], a[g][:, None], b[g][:, None]
        i = xi - m  # term i -> i - 1
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.log(i * (si - i + bi)) - np.log((si - i + 1.0) * (i - 1.0 + ai))
        valid = m < (width[g][:, None] - 1)
        step[~valid] = -np.inf
        terms = np.empty((g.size, step.shape[1] + 1))
        terms[:, 0] = 0.0
        np.cumsum(step, axis=1, out=terms[:, 1:])
        top = terms.max(axis=1)
        lse = top + np.log(np.exp(terms - top[:, None]).sum(axis=1))
        rows = np.arange(g.size)
        last = terms[rows, width[g] - 1]
        lr = step[rows, np.maximum(width[g] - 2, 0)] if step.shape[1] else np.full(g.size, -np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(lr < 0, last + lr - np.log(-np.expm1(lr)), np.inf)
        ok[g] = (width[g] >= x[g] + 1) | (bound - lse < np.log(1e-13))
        total = logp_x[g] + lse
        out[g] = np.minimum(np.exp(np.minimum(np.log(2.0) + total, 0.0)), 1.0)
        start = stop
    return out, ok


def exact_test(
    counts: np.ndarray,
    group: np.ndarray,
    dispersion: float | np.ndarray,
    lib_size: np.ndarray | None = None,
    pair: tuple | None = None,
    prior_count: float = 0.125,
    big_count: int = 900,
    q2q: str = "exact",
    logfc: bool = True,
) -> pd.DataFrame:
    """edgeR ``exactTest`` for two groups: columns ``logFC`` (pair[1] vs pair[0], log2) and ``PValue``.

    ``logfc=False`` skips the fold changes (NaN), which a ranking by p-value does not need.
    """
    y = np.asarray(counts, dtype=np.float64)
    group = np.asarray(group)
    ng = y.shape[0]
    lib_size = y.sum(axis=0) if lib_size is None else np.asarray(lib_size, dtype=np.float64)
    disp = np.asarray(dispersion, dtype=np.float64)
    disp = np.full(ng, float(disp)) if disp.ndim == 0 else disp
    levels = _levels(group)
    pair = tuple(levels[:2]) if pair is None else pair
    if len(pair) != 2 or pair[0] == pair[1]:
        raise ValueError("pair must name two different groups")
    j1, j2 = group == pair[0], group == pair[1]
    if j1.sum() == 0 or j2.sum() == 0:
        raise ValueError(f"both groups of {pair} need at least one sample")
    keep = j1 | j2
    y, lib_size, j1, j2 = y[:, keep], lib_size[keep], j1[keep], j2[keep]
    offset = np.log(lib_size)
    pc = prior_count * lib_size / lib_size.mean()
    off_aug = np.log(lib_size + 2.0 * pc)
    if logfc:
        a1 = mglm_one_group(y[:, j1] + pc[j1], disp, off_aug[j1])
        a2 = mglm_one_group(y[:, j2] + pc[j2], disp, off_aug[j2])
        lfc = (a2 - a1) / np.log(2.0)
    else:
        lfc = np.full(ng, np.nan)
    e = np.exp(mglm_one_group(y, disp, offset, tol=newton_tol(q2q)))
    common = float(np.exp(offset.mean()))
    in_mean = e[:, None] * lib_size[None, :]
    out_mean = np.broadcast_to(e[:, None] * common, y.shape)
    pseudo = q2q_nbinom(y, in_mean, out_mean, disp, method=q2q)
    pv = exact_test_double_tail(pseudo[:, j1], pseudo[:, j2], disp, big_count=big_count)
    return pd.DataFrame({"logFC": lfc, "PValue": pv})


@dataclass(frozen=True)
class DEResult:
    """The classic edgeR path's output for one set of samples."""

    table: pd.DataFrame  # gene, logFC, logCPM, PValue, FDR; ranked by PValue
    common_dispersion: float
    tagwise_dispersion: np.ndarray  # per gene, input order
    ranking: np.ndarray  # gene indices (input order) from most to least significant

    def top(self, k: int) -> np.ndarray:
        """Indices of the k most significant genes (top-k DERs)."""
        return self.ranking[:k]


def classic_de(
    counts: np.ndarray,
    group: np.ndarray,
    gene_ids: np.ndarray | None = None,
    lib_size: np.ndarray | None = None,
    prior_df: float = 10.0,
    q2q: str = "exact",
    common_max_genes: int | None = None,
    logfc: bool = True,
) -> DEResult:
    """Common and tagwise qCML dispersion, then the exact test; genes x samples counts, two groups.

    Defaults reproduce edgeR (``estimateCommonDisp``, ``estimateTagwiseDisp``, ``exactTest``).
    The fast path, ``q2q="wilson-hilferty"`` (numpy) or ``q2q="compiled"`` (the same in numba
    per-gene kernels, :mod:`neurorad.genomics._kernels`), also orders genes by the closed-form
    Poisson AveLogCPM and stops Newton at 1e-6; the protocol uses ``"compiled"`` with
    ``common_max_genes=1500`` and ``logfc=False`` (the ranking needs p-values only).
    """
    y = np.asarray(counts, dtype=np.float64)
    group = np.asarray(group)
    levels = _levels(group)
    if len(levels) != 2:
        raise ValueError(f"the exact test compares two groups, got {len(levels)}")
    lib_size = y.sum(axis=0) if lib_size is None else np.asarray(lib_size, dtype=np.float64)
    common = common_dispersion(y, group, lib_size, q2q=q2q, max_genes=common_max_genes,
                               tol=1e-8 if q2q == "exact" else 1e-6)
    if q2q == "compiled":
        return _compiled_de(y, group, levels, lib_size, common, prior_df, gene_ids)
    if q2q == "exact":
        alc = ave_log_cpm(y, lib_size, dispersion=common)
    else:  # fast path: the Poisson (closed-form) AveLogCPM, used only to order genes by abundance
        pc = 2.0 * lib_size / lib_size.mean()
        alc = (np.log((y + pc).sum(axis=1)) - np.log((lib_size + 2.0 * pc).sum()) + np.log(1e6)) / np.log(2.0)
    tag = tagwise_dispersion(y, group, common, lib_size, prior_df=prior_df, ave_logcpm=alc, q2q=q2q)
    res = exact_test(y, group, tag, lib_size, pair=(levels[0], levels[1]), q2q=q2q, logfc=logfc)
    ranking = np.lexsort((np.arange(y.shape[0]), res["PValue"].to_numpy()))
    genes = np.arange(y.shape[0]).astype(str) if gene_ids is None else np.asarray(gene_ids)
    table = pd.DataFrame({
        "gene": genes,
        "logFC": res["logFC"].to_numpy(),
        "logCPM": alc,
        "PValue": res["PValue"].to_numpy(),
        "FDR": benjamini_hochberg(res["PValue"].to_numpy()),
    }).iloc[ranking].reset_index(drop=True)
    return DEResult(table, common, tag, ranking)


def _compiled_de(
    y: np.ndarray, group: np.ndarray, levels: list, lib_size: np.ndarray, common: float, prior_df: float,
    gene_ids: np.ndarray | None,
) -> DEResult:
    """The fast path (Wilson-Hilferty pseudo-counts, Poisson AveLogCPM order, no logFC) in numba kernels."""
    from neurorad.genomics import _kernels as K
    from neurorad.genomics.dispersion import maximize_interpolant, moving_average_by_col

    ng, n = y.shape
    gidx = np.searchsorted(np.asarray(levels), group).astype(np.int64)
    pc = 2.0 * lib_size / lib_size.mean()
    alc = (np.log((y + pc).sum(axis=1)) - np.log((lib_size + 2.0 * pc).sum()) + np.log(1e6)) / np.log(2.0)
    # tagwise (weighted likelihood on the grid, as tagwise_dispersion)
    pseudo = K.pseudo_counts(y, gidx, len(levels), lib_size, np.full(ng, common), 1e-6, True)
    pts = np.linspace(-6.0, 6.0, 11)
    disp_grid = common * 2.0**pts
    r_grid = 1.0 / (disp_grid / (1.0 + disp_grid)) - 1.0
    l0 = K.cond_loglik_grid(pseudo, gidx, len(levels), r_grid)
    order = np.argsort(alc, kind="stable")
    m0 = np.empty_like(l0)
    m0[order] = moving_average_by_col(l0[order], int(np.floor(0.3 * ng)))
    tag = common * 2.0 ** maximize_interpolant(pts, l0 + prior_df / (n - len(levels)) * m0)
    # exact test: pseudo-counts at the pooled mean, then the doubled beta-binomial tail
    pseudo = K.pseudo_counts(y, np.zeros(n, dtype=np.int64), 1, lib_size, tag, 1e-6, False)
    j1, j2 = gidx == 0, gidx == 1
    n1, n2 = int(j1.sum()), int(j2.sum())
    s1r, s2r = pseudo[:, j1].sum(axis=1), pseudo[:, j2].sum(axis=1)
    s1, s2 = np.round(s1r), np.round(s2r)
    s = s1 + s2
    mu1 = n1 * s / n
    pv = np.ones(ng)
    big = (s1 > 900) & (s2 > 900)
    if big.any():
        pv[big] = _beta_approx(s1r[big], s2r[big], n1, n2, tag[big])
    rest = np.flatnonzero(~big & (s > 0) & (s1 != mu1))
    if rest.size:
        left = s1[rest] < mu1[rest]
        x = np.where(left, s1[rest], s2[rest])
        a = np.where(left, n1, n2) / tag[rest]
        b = np.where(left, n2, n1) / tag[rest]
        pv[rest] = K.bb_tail_x2(x, s[rest], a, b)
    ranking = np.lexsort((np.arange(ng), pv))
    genes = np.arange(ng).astype(str) if gene_ids is None else np.asarray(gene_ids)
    table = pd.DataFrame({"gene": genes, "logFC": np.nan, "logCPM": alc, "PValue": pv, "FDR": benjamini_hochberg(pv)})
    return DEResult(table.iloc[ranking].reset_index(drop=True), common, tag, ranking)
