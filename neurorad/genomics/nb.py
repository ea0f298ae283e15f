"""Negative-binomial log-likelihood and NB log-link regression fitted for many genes at once.

Parametrisation: mean ``mu``, dispersion ``phi`` (variance ``mu + phi mu^2``; size ``1/phi``),
as edgeR and the radiogenomics paper (its eq. 2). ``phi = 0`` is the Poisson limit.

``nb_glm_fit`` fits, for every gene g separately but in one vectorised IRLS loop,

    log mu_ig = offset_ig + x_i^T beta_g,      y_ig ~ NB(mu_ig, phi_g)

(McCullagh & Nelder 1989, ch. 2; the NB working weight ``mu / (1 + phi mu)``), with Gaussian
priors on the coefficients (a ridge on slopes, a weak prior on the intercept around a given
value) so that separation (a gene with no reads in a class, or a covariate that perfectly
predicts zeros) gives finite estimates instead of diverging iterations; step halving keeps
the penalised likelihood non-decreasing.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

POISSON_PHI = 1e-10  # below this dispersion the NB is evaluated as Poisson


@njit(cache=True)
def _nb_logpmf_flat(y: np.ndarray, mu: np.ndarray, phi: np.ndarray, out: np.ndarray) -> None:
    """One pass per element (numpy needs ~10 full-size temporaries and both branches everywhere)."""
    for i in range(y.size):
        yi, mi, ph = y[i], mu[i], phi[i]
        if ph <= POISSON_PHI:  # Poisson: y log mu - mu - log y!
            out[i] = (yi * math.log(mi) if yi != 0.0 else 0.0) - mi - math.lgamma(yi + 1.0)
        else:
            r = 1.0 / ph
            pm = ph * mi
            l1p = math.log1p(pm)
            v = math.lgamma(yi + r) - math.lgamma(r) - math.lgamma(yi + 1.0) - r * l1p - yi * l1p
            if yi != 0.0:
                v += yi * math.log(pm)
            out[i] = v


def nb_logpmf(y: np.ndarray, mu: np.ndarray, phi: np.ndarray | float) -> np.ndarray:
    """Elementwise NB log-pmf ``log P(Y = y | mu, phi)``; broadcasts; Poisson where ``phi <= 1e-10``.

    Equals ``scipy.stats.nbinom.logpmf(y, 1/phi, 1/(1 + phi mu))`` (compiled, one pass).
    """
    y, mu, phi = np.broadcast_arrays(np.asarray(y, dtype=np.float64), np.asarray(mu, dtype=np.float64),
                                     np.asarray(phi, dtype=np.float64))
    out = np.empty(y.shape)
    _nb_logpmf_flat(np.ascontiguousarray(y).ravel(), np.ascontiguousarray(mu).ravel(),
                    np.ascontiguousarray(phi).ravel(), out.reshape(-1))
    return out


def nb_glm_fit(
    y: np.ndarray,
    x: np.ndarray,
    offset: np.ndarray,
    phi: np.ndarray,
    prior_mean: np.ndarray | None = None,
    prior_precision: np.ndarray | None = None,
    max_iter: int = 50,
    tol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray, int]:
    """MAP fit of per-gene NB log-link regressions sharing one design.

    ``y`` samples x genes counts, ``x`` samples x p design (include an intercept column),
    ``offset`` samples x genes (or samples), ``phi`` per gene. ``prior_mean`` genes x p and
    ``prior_precision`` (p,) define independent Gaussian priors (precision 0 = flat).
    Returns ``(beta (genes x p), converged (genes,), iterations)``.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    n, g = y.shape
    p = x.shape[1]
    off = np.broadcast_to(np.asarray(offset, dtype=np.float64).reshape(n, -1), (n, g))
    phi = np.broadcast_to(np.asarray(phi, dtype=np.float64), (g,))[None, :]
    prec = np.zeros(p) if prior_precision is None else np.asarray(prior_precision, dtype=np.float64)
    pmean = np.zeros((g, p)) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
    P = np.diag(prec)
    xx = (x[:, :, None] * x[:, None, :]).reshape(n, p * p)  # per-sample outer products: X^T W X = W^T xx

    def objective(beta: np.ndarray) -> np.ndarray:
        eta = np.clip(x @ beta.T + off, -50.0, 50.0)
        ll = nb_logpmf(y, np.exp(eta), phi).sum(axis=0)
        return ll - 0.5 * (((beta - pmean) ** 2) * prec[None, :]).sum(axis=1)

    # start: intercept at the pooled rate, slopes at the prior mean
    beta = pmean.copy()
    rate = np.log((y.sum(axis=0) + 0.5) / np.exp(off).sum(axis=0))
    icol = int(np.argmax(np.all(x == 1.0, axis=0))) if np.any(np.all(x == 1.0, axis=0)) else None
    if icol is not None:
        beta[:, icol] = rate
    obj = objective(beta)
    converged = np.zeros(g, dtype=bool)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - it is returned
        eta = np.clip(x @ beta.T + off, -50.0, 50.0)
        mu = np.exp(eta)
        w = mu / (1.0 + phi * mu)
        # Newton step of the penalised log-likelihood (Fisher scoring = IRLS)
        score = x.T @ ((y - mu) / (1.0 + phi * mu))  # p x g
        score = score.T - (beta - pmean) * prec[None, :]
        info = (w.T @ xx).reshape(g, p, p) + P[None, :, :]
        info += 1e-10 * np.eye(p)[None, :, :]
        step = np.linalg.solve(info, score[:, :, None])[:, :, 0]
        t = np.ones(g)
        new = beta + step
        new_obj = objective(new)
        for _ in range(30):  # step halving where the objective went down
            bad = ~(new_obj >= obj - 1e-9 * (1.0 + np.abs(obj))) & ~converged
            if not bad.any():
                break
            t[bad] *= 0.5
            new[bad] = beta[bad] + t[bad, None] * step[bad]
            new_obj = np.where(bad, objective(new), new_obj)
        done = np.max(np.abs(new - beta), axis=1) < tol
        beta = np.where(converged[:, None], beta, new)
        obj = np.where(converged, obj, new_obj)
        converged |= done
        if converged.all():
            break
    return beta, converged, it
