"""A compact random forest classifier in numba (Breiman 2001, *Machine Learning* 45:5).

Why ours: scikit-learn's ``RandomForestClassifier`` is correct and is kept as the reference
(``RFGenomics(backend="sklearn")``), but at the protocol's size (86 training samples x <= 158
features, 50 trees, 12 forests per split, 300 splits) its per-tree Python overhead (~1 ms per
tree for estimator cloning, input checks, the Cython builder's set-up) is about ten times the
actual tree-growing work. Here all trees of a forest are grown in one compiled call.

Algorithm, as scikit-learn's defaults (``criterion="gini"``, ``max_features="sqrt"``,
``min_samples_split=2``, ``min_samples_leaf=1``, ``bootstrap=True``, no depth limit):

- each tree draws ``n`` bootstrap samples with replacement; a sample drawn ``w`` times has
  weight ``w`` (samples never drawn are left out of the tree);
- at each node, candidate features are drawn without replacement until ``max_features`` have
  been visited and at least one is not constant in the node (scikit-learn's rule);
- for each candidate, the node's samples in the feature's order (one global sort per fit;
  no sorting per node) give every threshold between distinct values (midpoints); the split
  maximising the weighted Gini decrease is kept (the first one on ties);
- nodes are split until pure (weighted Gini 0) or holding one distinct sample, or no feature
  varies; a leaf stores its weighted class frequencies;
- ``predict_proba`` averages the leaves' class frequencies over trees.

The random stream is numba's own generator seeded once per fit, so a fit is deterministic
given ``random_state``; it is not the same stream as scikit-learn's, so individual trees differ
from scikit-learn's (tests compare held-out accuracy and AUC averaged over seeds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_FEATURE_THRESHOLD = 1e-7  # values closer than this are one value (scikit-learn's constant)


@njit(cache=True)
def _grow_forest(X: np.ndarray, y: np.ndarray, n_classes: int, n_trees: int, max_features: int,
                 bootstrap: bool, seed: int) -> tuple:
    """Grow ``n_trees`` trees; returns flat node arrays ``(feature, threshold, left, right, value, n_nodes)``."""
    np.random.seed(seed)  # noqa: NPY002 - seeds numba's own per-thread generator (compiled code)
    n, p = X.shape
    max_nodes = 2 * n + 1
    feature = np.full((n_trees, max_nodes), -1, dtype=np.int64)
    threshold = np.zeros((n_trees, max_nodes))
    left = np.full((n_trees, max_nodes), -1, dtype=np.int64)
    right = np.full((n_trees, max_nodes), -1, dtype=np.int64)
    value = np.zeros((n_trees, max_nodes, n_classes))
    n_nodes = np.zeros(n_trees, dtype=np.int64)

    order = np.empty((p, n), dtype=np.int64)  # per feature, the samples in increasing value
    for f in range(p):
        order[f] = np.argsort(X[:, f], kind="mergesort")

    w = np.zeros(n)
    samples = np.empty(n, dtype=np.int64)
    in_node = np.zeros(n, dtype=np.bool_)
    feats = np.arange(p)
    tot = np.zeros(n_classes)
    cl = np.zeros(n_classes)
    st_start = np.empty(max_nodes, dtype=np.int64)
    st_end = np.empty(max_nodes, dtype=np.int64)
    st_node = np.empty(max_nodes, dtype=np.int64)

    for t in range(n_trees):
        w[:] = 0.0
        if bootstrap:
            for _ in range(n):
                w[np.random.randint(0, n)] += 1.0  # noqa: NPY002
        else:
            w[:] = 1.0
        m = 0
        for i in range(n):
            if w[i] > 0.0:
                samples[m] = i
                m += 1
        nodes = 1
        top = 0
        st_start[0], st_end[0], st_node[0] = 0, m, 0
        top = 1
        while top > 0:
            top -= 1
            start, end, node = st_start[top], st_end[top], st_node[top]
            tot[:] = 0.0
            for a in range(start, end):
                i = samples[a]
                tot[y[i]] += w[i]
            wsum = 0.0
            sq = 0.0
            for k in range(n_classes):
                wsum += tot[k]
                sq += tot[k] * tot[k]
            for k in range(n_classes):
                value[t, node, k] = tot[k] / wsum
            if end - start < 2 or sq >= wsum * wsum * (1.0 - 1e-12):  # one sample, or pure
                continue
            for a in range(start, end):
                in_node[samples[a]] = True
            # candidate features: Fisher-Yates draws until max_features visited and one non-constant
            best_proxy = -1.0
            best_f = -1
            best_thr = 0.0
            visited = 0
            found_varying = False
            remaining = p
            while remaining > 0 and (visited < max_features or not found_varying):
                j = np.random.randint(0, remaining)  # noqa: NPY002
                f = feats[j]
                feats[j] = feats[remaining - 1]
                feats[remaining - 1] = f
                remaining -= 1
                visited += 1
                cl[:] = 0.0
                wl = 0.0
                prev_v = 0.0
                have_prev = False
                for r in range(n):
                    i = order[f, r]
                    if not in_node[i]:
                        continue
                    v = X[i, f]
                    if have_prev and v > prev_v + _FEATURE_THRESHOLD:
                        found_varying = True
                        wr = wsum - wl
                        sl = 0.0
                        sr = 0.0
                        for k in range(n_classes):
                            sl += cl[k] * cl[k]
                            d = tot[k] - cl[k]
                            sr += d * d
                        proxy = sl / wl + sr / wr  # max of this <=> min of weighted child Gini
                        if proxy > best_proxy + 1e-12:
                            best_proxy = proxy
                            best_f = f
                            thr = prev_v / 2.0 + v / 2.0
                            if thr >= v:
                                thr = prev_v
                            best_thr = thr
                    cl[y[i]] += w[i]
                    wl += w[i]
                    prev_v = v
                    have_prev = True
            for a in range(start, end):
                in_node[samples[a]] = False
            if best_f < 0:  # no feature varies in this node
                continue
            # partition samples[start:end] by the split
            lo = start
            hi = end - 1
            while lo <= hi:
                if X[samples[lo], best_f] <= best_thr:
                    lo += 1
                else:
                    tmp = samples[lo]
                    samples[lo] = samples[hi]
                    samples[hi] = tmp
                    hi -= 1
            feature[t, node] = best_f
            threshold[t, node] = best_thr
            left[t, node] = nodes
            right[t, node] = nodes + 1
            # push right then left (left grown first, depth first)
            st_start[top], st_end[top], st_node[top] = lo, end, nodes + 1
            top += 1
            st_start[top], st_end[top], st_node[top] = start, lo, nodes
            top += 1
            nodes += 2
        n_nodes[t] = nodes
    return feature, threshold, left, right, value, n_nodes


@njit(cache=True)
def _forest_proba(X: np.ndarray, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray,
                  right: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Mean over trees of the leaf class frequencies of each row of X."""
    n_trees = feature.shape[0]
    n_classes = value.shape[2]
    out = np.zeros((X.shape[0], n_classes))
    for i in range(X.shape[0]):
        for t in range(n_trees):
            node = 0
            while feature[t, node] >= 0:
                node = left[t, node] if X[i, feature[t, node]] <= threshold[t, node] else right[t, node]
            for k in range(n_classes):
                out[i, k] += value[t, node, k]
    return out / n_trees


class NumbaForest:
    """Random forest classifier (Gini, sqrt features, bootstrap, fully grown trees); see the module docstring.

    Not a full scikit-learn estimator: :class:`neurorad.genomics.classifiers.RFGenomics` wraps it.
    ``fit(X, y)`` takes float features and integer class indices ``0..n_classes-1``.
    """

    def __init__(self, n_estimators: int = 100, max_features: str | int | float = "sqrt", bootstrap: bool = True,
                 random_state: int | None = 0) -> None:
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.random_state = random_state

    def _n_features_per_node(self, p: int) -> int:
        mf = self.max_features
        if mf == "sqrt":
            k = int(np.sqrt(p))
        elif mf == "log2":
            k = int(np.log2(p))
        elif mf is None:
            k = p
        elif isinstance(mf, float):
            k = int(mf * p)
        else:
            k = int(mf)
        return max(1, min(k, p))

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int | None = None) -> NumbaForest:
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.int64)
        if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] < 1:
            raise ValueError("X must be samples x features and y one class index per sample")
        if int(self.n_estimators) < 1:
            raise ValueError(f"n_estimators must be >= 1, got {self.n_estimators}")
        self.n_classes_ = int(y.max()) + 1 if n_classes is None else int(n_classes)
        rs = self.random_state
        if isinstance(rs, np.random.RandomState):
            seed = int(rs.randint(0, 2**31 - 1))
        elif rs is None:
            seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        else:
            seed = int(rs) % (2**31 - 1)
        (self.feature_, self.threshold_, self.left_, self.right_, self.value_,
         self.n_nodes_) = _grow_forest(X, y, self.n_classes_, int(self.n_estimators),
                                       self._n_features_per_node(X.shape[1]), bool(self.bootstrap), seed)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        return _forest_proba(X, self.feature_, self.threshold_, self.left_, self.right_, self.value_)

    def apply_tree(self, X: np.ndarray, t: int) -> np.ndarray:
        """Class frequencies of the leaf each row reaches in tree ``t`` (for tests)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        sl = slice(t, t + 1)
        return _forest_proba(X, self.feature_[sl], self.threshold_[sl], self.left_[sl], self.right_[sl],
                             self.value_[sl])
