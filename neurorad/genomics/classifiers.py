"""Count classifiers as scikit-learn estimators: radiogenomics-NB and the paper's baselines.

Input layout (all estimators): ``X`` is samples x features, the first columns raw read counts
(all genes), the last ``n_radiomics`` columns continuous radiomics features. With
``n_genes=k`` the estimator ranks genes by edgeR's classic exact test on its training rows
only and keeps the top k (DERs), so cross-validation and pipelines never leak test samples
into selection; size factors are always computed from all gene columns. A caller that already
ran the DE step on the same training rows (the protocol, which reuses one ranking for every
DER size) passes it as ``fit(X, y, de_result=...)``.

Estimators
----------
- :class:`RadiogenomicsNB`: the radiogenomics negative-binomial classifier (paper eqs. 2-7, 11,
  8a/8b, 19): ``y_ij | class k ~ NB(mu_ijk, phi_j)``, ``log mu_ijk = log s_i + log g_j +
  beta0_jk + x_i^T beta_jk``, posterior by Bayes with equal priors by default.
- :class:`NBLDA`: Dong et al. (2016) *BMC Bioinformatics* 17:369.
- :class:`PLDA`: Witten (2011) *Ann. Appl. Stat.* 5:2493 (Poisson LDA).
- :class:`VoomNSC`: Zararsiz et al. (2017) *PLoS ONE* 12:e0176185 (voom weights, log-CPM,
  weighted nearest shrunken centroids; threshold by 10-fold CV inside training).
- :class:`RFGenomics` / :class:`RFRadiogenomics`: random forests on log DER counts
  (plus radiomics features).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from neurorad.genomics.counts import fit_size_factors
from neurorad.genomics.de import DEResult, classic_de
from neurorad.genomics.dispersion import common_dispersion, tagwise_dispersion
from neurorad.genomics.forest import NumbaForest
from neurorad.genomics.nb import nb_glm_fit, nb_logpmf


class _CountClassifier(ClassifierMixin, BaseEstimator):
    """Shared plumbing: splitting X, size factors, DER selection, priors and posteriors."""

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        return tags

    # --- input handling -------------------------------------------------------------------
    def _n_rad(self) -> int:
        return int(getattr(self, "n_radiomics", 0) or 0)

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nr = self._n_rad()
        counts = X[:, : X.shape[1] - nr]
        rad = X[:, X.shape[1] - nr:]
        if np.any(counts < 0):
            raise ValueError("Negative values in data passed to the count columns; read counts must be >= 0")
        return counts, rad

    def _validate_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if self.classes_.size < 2:
            raise ValueError(f"training data hold a single class ({self.classes_[0]!r}); two are needed")
        counts, rad = self._split(X)
        if counts.shape[1] == 0:
            raise ValueError("no count columns")
        return counts, rad, y_idx, X

    def _select(self, counts: np.ndarray, y_idx: np.ndarray, de_result: DEResult | None) -> np.ndarray:
        """Column indices of the genes the model uses (top-k DERs on training rows, or all)."""
        k = getattr(self, "n_genes", None)
        if k is None:
            self.de_result_ = de_result
            return np.arange(counts.shape[1])
        if de_result is None:
            if self.classes_.size != 2:
                raise ValueError("n_genes (exact-test DER selection) needs exactly two classes")
            de_result = classic_de(counts.T, y_idx, q2q=getattr(self, "q2q", "exact"))
        if de_result.ranking.size != counts.shape[1]:
            raise ValueError("de_result was computed on a different number of genes than X holds")
        self.de_result_ = de_result
        return np.asarray(de_result.top(int(k)))

    def _log_prior(self, y_idx: np.ndarray) -> np.ndarray:
        k = self.classes_.size
        pri = getattr(self, "priors", "equal")
        if isinstance(pri, str):
            if pri == "equal":
                return np.full(k, -np.log(k))
            if pri == "empirical":
                return np.log(np.bincount(y_idx, minlength=k) / y_idx.size)
            raise ValueError(f"priors must be 'equal', 'empirical' or an array, got {pri!r}")
        p = np.asarray(pri, dtype=np.float64)
        if p.shape != (k,) or np.any(p <= 0):
            raise ValueError("priors must be positive, one per class")
        return np.log(p / p.sum())

    def _train_size_factors(self, counts: np.ndarray) -> np.ndarray:
        # keep only the size-factor reference (scale, per-gene aggregates), never the training counts:
        # a pickled model must not carry patients' RNA-seq data
        s, self.size_factor_ref_ = fit_size_factors(counts.T, method=getattr(self, "size_factor", "total"))
        return s

    def _test_size_factors(self, counts: np.ndarray) -> np.ndarray:
        return self.size_factor_ref_.factors(counts.T)

    def submodel(self, k: int) -> _CountClassifier:
        """The fitted model restricted to its first k genes (per-gene models only: NB family).

        Every per-gene quantity of PLDA, NBLDA and RadiogenomicsNB is estimated from that gene
        alone, so this equals fitting with ``n_genes=k`` on the same training rows and DE ranking
        (tested); the protocol uses it to fit once per split at the largest DER size.
        """
        import copy

        check_is_fitted(self)
        if not getattr(self, "_per_gene_", False):
            raise TypeError(f"{type(self).__name__} is not a per-gene model; refit instead")
        k = int(k)
        sub = copy.copy(self)
        sub.n_genes = k
        sub.genes_ = self.genes_[:k]
        for name in self._gene_attrs_:
            val = getattr(self, name)
            setattr(sub, name, val[..., :k] if name not in ("coef_", "converged_") else val[:, :k])
        return sub

    # --- prediction -----------------------------------------------------------------------
    def _joint_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define its class-conditional log-likelihood")

    def _check_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float64, reset=False)

    def decision_function(self, X: Any) -> np.ndarray:
        jll = self._joint_log_likelihood(self._check_X(X))
        return jll[:, 1] - jll[:, 0] if jll.shape[1] == 2 else jll

    def predict_log_proba(self, X: Any) -> np.ndarray:
        jll = self._joint_log_likelihood(self._check_X(X))
        return jll - special.logsumexp(jll, axis=1, keepdims=True)

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        jll = self._joint_log_likelihood(self._check_X(X))
        return self.classes_[np.argmax(jll, axis=1)]


def _class_rates(counts: np.ndarray, s: np.ndarray, y_idx: np.ndarray, k: int, beta: float) -> tuple:
    """``g_j`` (training gene totals) and ``d_kj = (X_kj + beta) / (N_kj + beta)`` (Witten 2011)."""
    g = counts.sum(axis=0)
    d = np.empty((k, counts.shape[1]))
    for c in range(k):
        m = y_idx == c
        d[c] = (counts[m].sum(axis=0) + beta) / (s[m].sum() * g + beta)
    return g, d


class PLDA(_CountClassifier):
    """Poisson linear discriminant analysis (Witten 2011), without the power transform or sparsity.

    ``x_ij | k ~ Poisson(s_i g_j d_kj)``; ``d_kj`` with the ``beta = 1`` pseudo-count.
    """

    _per_gene_ = True
    _gene_attrs_ = ("g_", "d_", "dispersion_")

    def __init__(self, n_genes: int | None = None, n_radiomics: int = 0, size_factor: str = "total",
                 beta: float = 1.0, priors: Any = "equal", q2q: str = "exact") -> None:
        self.n_genes = n_genes
        self.n_radiomics = n_radiomics
        self.size_factor = size_factor
        self.beta = beta
        self.priors = priors
        self.q2q = q2q

    def fit(self, X: Any, y: Any, de_result: DEResult | None = None) -> PLDA:
        counts, _, y_idx, _ = self._validate_fit(X, y)
        s = self._train_size_factors(counts)
        self.genes_ = self._select(counts, y_idx, de_result)
        c = counts[:, self.genes_]
        self.g_, self.d_ = _class_rates(c, s, y_idx, self.classes_.size, self.beta)
        self.log_prior_ = self._log_prior(y_idx)
        self.dispersion_ = np.zeros(c.shape[1])
        return self

    def _joint_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        counts, _ = self._split(X)
        s = self._test_size_factors(counts)
        c = counts[:, self.genes_]
        out = np.empty((X.shape[0], self.classes_.size))
        for k in range(self.classes_.size):
            mu = s[:, None] * self.g_[None, :] * self.d_[k][None, :]
            out[:, k] = nb_logpmf(c, mu, self.dispersion_[None, :]).sum(axis=1) + self.log_prior_[k]
        return out


class NBLDA(PLDA):
    """Negative-binomial LDA (Dong et al. 2016): PLDA's means with a per-gene NB dispersion.

    ``dispersion="moment"`` is Dong et al.'s method-of-moments estimate pooled within classes,
    ``max(0, mean[((x - mu)^2 - mu) / mu^2])`` (their sSeq shrinkage step is not applied);
    ``"tagwise"`` uses edgeR's weighted-likelihood estimate instead; a float fixes it.
    """

    def __init__(self, n_genes: int | None = None, n_radiomics: int = 0, size_factor: str = "total",
                 beta: float = 1.0, priors: Any = "equal", dispersion: Any = "moment", q2q: str = "exact") -> None:
        super().__init__(n_genes, n_radiomics, size_factor, beta, priors, q2q)
        self.dispersion = dispersion

    def fit(self, X: Any, y: Any, de_result: DEResult | None = None) -> NBLDA:
        super().fit(X, y, de_result)
        counts, _, y_idx, _ = self._validate_fit(X, y)
        s = self._train_size_factors(counts)
        c = counts[:, self.genes_]
        if isinstance(self.dispersion, str) and self.dispersion == "moment":
            mu = s[:, None] * self.g_[None, :] * self.d_[y_idx]
            dof = max(c.shape[0] - self.classes_.size, 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(mu > 0, ((c - mu) ** 2 - mu) / mu**2, 0.0)
            self.dispersion_ = np.maximum(ratio.sum(axis=0) / dof, 0.0)
        elif isinstance(self.dispersion, str) and self.dispersion == "tagwise":
            self.dispersion_ = _edger_dispersion(self, counts, y_idx)[self.genes_]
        else:
            self.dispersion_ = np.full(c.shape[1], float(self.dispersion))
        return self


def _edger_dispersion(est: _CountClassifier, counts: np.ndarray, y_idx: np.ndarray) -> np.ndarray:
    """Tagwise dispersions for all gene columns: from the DE result when there is one, else edgeR's path."""
    de = getattr(est, "de_result_", None)
    if de is not None and de.tagwise_dispersion.size == counts.shape[1]:
        return de.tagwise_dispersion
    y = counts.T
    ok = y.sum(axis=1) > 0
    disp = np.zeros(y.shape[0])
    if ok.sum() >= 2:
        common = common_dispersion(y[ok], y_idx, y.sum(axis=0), q2q=getattr(est, "q2q", "exact"))
        disp[ok] = tagwise_dispersion(y[ok], y_idx, common, y.sum(axis=0), q2q=getattr(est, "q2q", "exact"))
    return disp


class RadiogenomicsNB(_CountClassifier):
    """The radiogenomics negative-binomial classifier.

    Model (paper eqs. 2-7 and 11): for class k, gene j and patient i,
    ``y_ij ~ NB(mu_ijk, phi_j)`` and the discriminant is
    ``sum_j log NB(y_ij; mu_ijk, phi_j) + log pi_k`` (equal priors by default).
    The mean is linked to the radiomics vector ``x_i`` log-linearly (eqs. 8a/8b):
    ``log mu_ijk = log s_i + log g_j + beta0_jk + x_i^T beta_jk``.

    Estimation: the paper's equation 19 as printed is not a well-posed estimator; we fit the
    intended model, a per-gene, per-class NB log-link regression of the class's training counts
    on the (standardised) radiomics features with ``log(s_i g_j)`` as offset, by IRLS
    vectorised over genes. Dispersions are edgeR's tagwise estimates from training data (eqs.
    12-16). Safety: ``phi -> 0`` evaluates the Poisson limit; Gaussian priors (ridge
    ``1/slope_prior_var`` on slopes, a weak prior with variance ``intercept_prior_var`` on
    ``beta0_jk`` around the gene's pooled rate) keep estimates finite under separation (a gene
    with no reads in a class, or too few patients per feature). With ``n_radiomics=0`` it is an
    NB classifier with class means only.
    """

    _per_gene_ = True
    _gene_attrs_ = ("g_", "dispersion_", "coef_", "converged_")

    def __init__(self, n_genes: int | None = None, n_radiomics: int = 0, size_factor: str = "total",
                 dispersion: Any = "tagwise", priors: Any = "equal", slope_prior_var: float = 1.0,
                 intercept_prior_var: float = 100.0, max_iter: int = 50, q2q: str = "exact") -> None:
        self.n_genes = n_genes
        self.n_radiomics = n_radiomics
        self.size_factor = size_factor
        self.dispersion = dispersion
        self.priors = priors
        self.slope_prior_var = slope_prior_var
        self.intercept_prior_var = intercept_prior_var
        self.max_iter = max_iter
        self.q2q = q2q

    def fit(self, X: Any, y: Any, de_result: DEResult | None = None) -> RadiogenomicsNB:
        counts, rad, y_idx, _ = self._validate_fit(X, y)
        s = self._train_size_factors(counts)
        self.genes_ = self._select(counts, y_idx, de_result)
        c = counts[:, self.genes_]
        self.g_ = c.sum(axis=0)
        if isinstance(self.dispersion, str):
            if self.dispersion == "tagwise":
                self.dispersion_ = _edger_dispersion(self, counts, y_idx)[self.genes_]
            elif self.dispersion == "poisson":
                self.dispersion_ = np.zeros(c.shape[1])
            else:
                raise ValueError(f"dispersion must be 'tagwise', 'poisson' or a number, got {self.dispersion!r}")
        else:
            self.dispersion_ = np.full(c.shape[1], float(self.dispersion))
        self.rad_mean_ = rad.mean(axis=0) if rad.shape[1] else np.zeros(0)
        sd = rad.std(axis=0) if rad.shape[1] else np.zeros(0)
        self.rad_scale_ = np.where(sd > 0, sd, 1.0)
        z = (rad - self.rad_mean_) / self.rad_scale_
        design = np.hstack([np.ones((c.shape[0], 1)), z])
        p = design.shape[1]
        with np.errstate(divide="ignore"):
            base = np.log(np.maximum(s, 1e-300))[:, None] + np.log(np.maximum(self.g_, 1e-300))[None, :]
        pooled = np.log((c.sum(axis=0) + 0.5) / np.exp(base).sum(axis=0))
        prec = np.r_[1.0 / self.intercept_prior_var, np.full(p - 1, 1.0 / self.slope_prior_var)]
        self.coef_ = np.empty((self.classes_.size, c.shape[1], p))
        self.converged_ = np.empty((self.classes_.size, c.shape[1]), dtype=bool)
        self.n_iter_ = 0
        for k in range(self.classes_.size):
            m = y_idx == k
            pm = np.zeros((c.shape[1], p))
            pm[:, 0] = pooled
            self.coef_[k], self.converged_[k], it = nb_glm_fit(c[m], design[m], base[m], self.dispersion_, pm, prec,
                                                               max_iter=self.max_iter)
            self.n_iter_ = max(self.n_iter_, it)
        self.log_prior_ = self._log_prior(y_idx)
        return self

    def _joint_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        counts, rad = self._split(X)
        s = self._test_size_factors(counts)
        c = counts[:, self.genes_]
        z = (rad - self.rad_mean_) / self.rad_scale_
        design = np.hstack([np.ones((c.shape[0], 1)), z])
        with np.errstate(divide="ignore"):
            base = np.log(np.maximum(s, 1e-300))[:, None] + np.log(np.maximum(self.g_, 1e-300))[None, :]
        out = np.empty((X.shape[0], self.classes_.size))
        for k in range(self.classes_.size):
            eta = np.clip(base + design @ self.coef_[k].T, -50.0, 50.0)
            out[:, k] = nb_logpmf(c, np.exp(eta), self.dispersion_[None, :]).sum(axis=1) + self.log_prior_[k]
        return out


# --------------------------------------------------------------------------------------------
# voom + nearest shrunken centroids


def _lowess_interp(x: np.ndarray, y: np.ndarray, span: float) -> tuple[np.ndarray, np.ndarray]:
    from statsmodels.nonparametric.smoothers_lowess import lowess

    fit = lowess(y, x, frac=span, it=3, delta=0.01 * float(np.ptp(x)), return_sorted=True)
    return fit[:, 0], fit[:, 1]


def voom_weights(counts: np.ndarray, lib_size: np.ndarray, y_idx: np.ndarray, span: float = 0.5) -> tuple:
    """voom (Law et al. 2014, *Genome Biology* 15:R29): log-CPM and precision weights.

    ``counts`` samples x genes; design = class indicators. Returns ``(logcpm, weights, trend)``
    with ``trend = (x, y)`` the lowess fit of sqrt residual SD against mean log2 count.
    """
    n, g = counts.shape
    logcpm = np.log2((counts + 0.5) / (lib_size[:, None] + 1.0) * 1e6)
    k = int(y_idx.max()) + 1
    design = np.eye(k)[y_idx]
    coef, *_ = np.linalg.lstsq(design, logcpm, rcond=None)
    fitted = design @ coef
    rank = np.linalg.matrix_rank(design)
    sigma = np.sqrt(((logcpm - fitted) ** 2).sum(axis=0) / max(n - rank, 1))
    amean = logcpm.mean(axis=0)
    sx = amean + np.mean(np.log2(lib_size + 1.0)) - np.log2(1e6)
    sy = np.sqrt(sigma)
    if g >= 3 and np.ptp(sx) > 0:
        tx, ty = _lowess_interp(sx, sy, span)
    else:
        tx, ty = np.array([sx.min()]), np.array([np.mean(sy)])
    fitted_logcount = fitted + np.log2(lib_size + 1.0)[:, None] - np.log2(1e6)
    pred = np.interp(fitted_logcount, tx, ty)
    weights = 1.0 / np.maximum(pred, 1e-8) ** 4
    return logcpm, weights, (tx, ty)


def _nsc_stats(x: np.ndarray, w: np.ndarray, y_idx: np.ndarray, k: int) -> tuple:
    """Weighted class centroids, overall centroid, pooled SD, s0 and m_k (Tibshirani et al. 2002)."""
    n = x.shape[0]
    cent = np.empty((k, x.shape[1]))
    ss = np.zeros(x.shape[1])
    nk = np.bincount(y_idx, minlength=k)
    for c in range(k):
        m = y_idx == c
        cent[c] = (w[m] * x[m]).sum(axis=0) / w[m].sum(axis=0)
        ss += (w[m] * (x[m] - cent[c]) ** 2).sum(axis=0)
    overall = (w * x).sum(axis=0) / w.sum(axis=0)
    sd = np.sqrt(ss / max(n - k, 1) / w.mean(axis=0))
    s0 = float(np.median(sd))
    mk = np.sqrt(1.0 / np.maximum(nk, 1) - 1.0 / n)
    return cent, overall, sd, s0, mk


def _shrunken(cent: np.ndarray, overall: np.ndarray, sd: np.ndarray, s0: float, mk: np.ndarray,
              delta: float) -> np.ndarray:
    scale = mk[:, None] * (sd + s0)[None, :]
    d = (cent - overall[None, :]) / scale
    d = np.sign(d) * np.maximum(np.abs(d) - delta, 0.0)
    return overall[None, :] + scale * d


def _nsc_scores(x: np.ndarray, shrunk: np.ndarray, sd: np.ndarray, s0: float, log_prior: np.ndarray) -> np.ndarray:
    """``-0.5 * discriminant``: -0.5 sum_j (x_j - c_kj)^2 / (s_j + s0)^2 + log pi_k."""
    diff = (x[:, None, :] - shrunk[None, :, :]) / (sd + s0)[None, None, :]
    return -0.5 * (diff**2).sum(axis=2) + log_prior[None, :]


class VoomNSC(_CountClassifier):
    """voom-weighted nearest shrunken centroids (Zararsiz et al. 2017, MLSeq ``voomNSC``).

    Training rows are voom-transformed (log-CPM with library sizes over all gene columns, and
    precision weights); weighted centroids and pooled SDs give the NSC of Tibshirani et al.
    (2002); the shrinkage threshold is chosen among ``n_thresholds`` values in
    ``[0, max |d_kj|]`` by stratified ``cv``-fold CV inside the training rows (the largest
    threshold among those with the least CV error). Test rows: log-CPM only.
    """

    def __init__(self, n_genes: int | None = None, n_radiomics: int = 0, n_thresholds: int = 30, cv: int = 10,
                 priors: Any = "equal", random_state: int | None = 0, threshold: float | None = None,
                 q2q: str = "exact") -> None:
        self.n_genes = n_genes
        self.n_radiomics = n_radiomics
        self.n_thresholds = n_thresholds
        self.cv = cv
        self.priors = priors
        self.random_state = random_state
        self.threshold = threshold
        self.q2q = q2q

    def fit(self, X: Any, y: Any, de_result: DEResult | None = None) -> VoomNSC:
        counts, _, y_idx, _ = self._validate_fit(X, y)
        lib = counts.sum(axis=1)
        self.genes_ = self._select(counts, y_idx, de_result)
        logcpm, w, _ = voom_weights(counts[:, self.genes_], lib, y_idx)
        k = self.classes_.size
        self.log_prior_ = self._log_prior(y_idx)
        cent, overall, sd, s0, mk = _nsc_stats(logcpm, w, y_idx, k)
        dmax = float(np.max(np.abs((cent - overall) / (mk[:, None] * (sd + s0)[None, :]))))
        grid = np.linspace(0.0, dmax, self.n_thresholds)
        if self.threshold is not None:
            best = float(self.threshold)
        else:
            nk = np.bincount(y_idx, minlength=k)
            folds = int(min(self.cv, nk.min()))
            errors = np.zeros(grid.size)
            if folds >= 2:
                skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
                for tr, te in skf.split(logcpm, y_idx):
                    if np.unique(y_idx[tr]).size < k:
                        continue
                    c2, o2, sd2, s02, mk2 = _nsc_stats(logcpm[tr], w[tr], y_idx[tr], k)
                    # all thresholds at once: centroids (T, K, G), scores (T, n_test, K)
                    scale = mk2[:, None] * (sd2 + s02)[None, :]
                    d = (c2 - o2[None, :]) / scale
                    dt = np.sign(d)[None] * np.maximum(np.abs(d)[None] - grid[:, None, None], 0.0)
                    sh = o2[None, None, :] + scale[None] * dt
                    diff = (logcpm[te][None, :, None, :] - sh[:, None, :, :]) / (sd2 + s02)
                    scores = -0.5 * (diff**2).sum(axis=3) + self.log_prior_[None, None, :]
                    errors += (np.argmax(scores, axis=2) != y_idx[te][None, :]).sum(axis=1)
            best = float(grid[np.flatnonzero(errors == errors.min())[-1]])
        self.threshold_ = best
        self.cv_grid_ = grid
        self.centroids_ = _shrunken(cent, overall, sd, s0, mk, best)
        self.sd_, self.s0_ = sd, s0
        return self

    def _joint_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        counts, _ = self._split(X)
        lib = counts.sum(axis=1)
        logcpm = np.log2((counts[:, self.genes_] + 0.5) / (lib[:, None] + 1.0) * 1e6)
        return _nsc_scores(logcpm, self.centroids_, self.sd_, self.s0_, self.log_prior_)


# --------------------------------------------------------------------------------------------
# random forests


class RFGenomics(_CountClassifier):
    """Random forest on log-transformed DER counts, ``log2(1 + x_ij / s_i / n_train)``.

    ``use_radiomics=False`` (RF-genomics) ignores the radiomics columns; :class:`RFRadiogenomics`
    appends them as further features.

    ``backend="numba"`` (default) grows the forest with :class:`neurorad.genomics.forest.NumbaForest`
    (scikit-learn's default algorithm, all trees in one compiled call: ~15x faster at the
    protocol's size); ``backend="sklearn"`` uses scikit-learn's ``RandomForestClassifier``, the
    reference (``n_jobs`` applies to it only). Both: Gini, ``sqrt(p)`` features per node, bootstrap,
    fully grown trees.
    """

    use_radiomics = False

    def __init__(self, n_genes: int | None = None, n_radiomics: int = 0, n_estimators: int = 100,
                 random_state: int | None = 0, n_jobs: int | None = 1, q2q: str = "exact",
                 backend: str = "numba") -> None:
        self.n_genes = n_genes
        self.n_radiomics = n_radiomics
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.q2q = q2q
        self.backend = backend

    def _features(self, counts: np.ndarray, rad: np.ndarray, s: np.ndarray) -> np.ndarray:
        f = np.log2(1.0 + counts[:, self.genes_] / (s[:, None] * self._n_train_))
        return np.hstack([f, rad]) if self.use_radiomics else f

    def fit(self, X: Any, y: Any, de_result: DEResult | None = None) -> RFGenomics:
        counts, rad, y_idx, _ = self._validate_fit(X, y)
        s = self._train_size_factors(counts)
        self._n_train_ = counts.shape[0]
        self.genes_ = self._select(counts, y_idx, de_result)
        feats = self._features(counts, rad, s)
        if self.backend == "numba":
            self.forest_ = NumbaForest(n_estimators=self.n_estimators, random_state=self.random_state)
            self.forest_.fit(feats, y_idx, n_classes=self.classes_.size)
            self._forest_classes_ = np.arange(self.classes_.size)
        elif self.backend == "sklearn":
            self.forest_ = RandomForestClassifier(n_estimators=self.n_estimators, random_state=self.random_state,
                                                  n_jobs=self.n_jobs)
            self.forest_.fit(feats, y_idx)
            self._forest_classes_ = self.forest_.classes_
        else:
            raise ValueError(f"backend must be 'numba' or 'sklearn', got {self.backend!r}")
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        X = self._check_X(X)
        counts, rad = self._split(X)
        proba = self.forest_.predict_proba(self._features(counts, rad, self._test_size_factors(counts)))
        out = np.zeros((X.shape[0], self.classes_.size))
        out[:, self._forest_classes_] = proba
        return out

    def predict_log_proba(self, X: Any) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def decision_function(self, X: Any) -> np.ndarray:
        p = self.predict_proba(X)
        return p[:, 1] - p[:, 0] if p.shape[1] == 2 else p

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


class RFRadiogenomics(RFGenomics):
    """Random forest on log DER counts plus the radiomics features."""

    use_radiomics = True


CLASSIFIERS: dict[str, type[_CountClassifier]] = {
    "RadiogenomicsNB": RadiogenomicsNB,
    "NBLDA": NBLDA,
    "PLDA": PLDA,
    "VoomNSC": VoomNSC,
    "RF-genomics": RFGenomics,
    "RF-radiogenomics": RFRadiogenomics,
}
