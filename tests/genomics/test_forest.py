"""The numba random forest against scikit-learn's RandomForestClassifier (the reference)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score

from neurorad.genomics import classifiers as C
from neurorad.genomics.forest import NumbaForest


def _held_out(X, y, n_train, seeds, n_trees=50):
    """Mean held-out accuracy and AUC (class 1) over seeds for both forests."""
    acc = {"numba": [], "sklearn": []}
    auc = {"numba": [], "sklearn": []}
    for seed in seeds:
        idx = np.random.default_rng(seed).permutation(y.size)
        tr, te = idx[:n_train], idx[n_train:]
        for name, est in (("numba", NumbaForest(n_trees, random_state=seed)),
                          ("sklearn", RandomForestClassifier(n_trees, random_state=seed))):
            p = est.fit(X[tr], y[tr]).predict_proba(X[te])
            acc[name].append(np.mean(np.argmax(p, axis=1) == y[te]))
            if p.shape[1] == 2:
                auc[name].append(roc_auc_score(y[te], p[:, 1]))
    return {k: np.mean(v) for k, v in acc.items()}, {k: np.mean(v) for k, v in auc.items() if v}


@pytest.mark.parametrize("kind", ["informative", "redundant", "three_classes"])
def test_accuracy_like_sklearn_make_classification(kind):
    opts = {"informative": {"n_features": 60, "n_informative": 8},
            "redundant": {"n_features": 150, "n_informative": 4, "n_redundant": 10, "flip_y": 0.05},
            "three_classes": {"n_features": 40, "n_informative": 6, "n_classes": 3}}[kind]
    X, y = make_classification(n_samples=400, random_state=1, **opts)
    acc, auc = _held_out(X, y, 86, range(12))
    # seed-to-seed SD of a forest's held-out accuracy here is ~0.05: 0.04 on a mean of 12 is ~2.8 SE of a difference
    assert abs(acc["numba"] - acc["sklearn"]) < 0.04, acc
    for v in auc.values():
        assert abs(auc["numba"] - auc["sklearn"]) < 0.04, auc
        assert v > 0.7


def test_accuracy_like_sklearn_on_the_simulated_cohort(small_cohort):
    """RF-genomics on the cohort's planted DE genes: numba and scikit-learn backends agree on average."""
    x = np.hstack([small_cohort.counts.to_numpy().T.astype(float), small_cohort.radiomics.to_numpy()])
    y = small_cohort.clinical["1p19q"].to_numpy()
    scores = {"numba": [], "sklearn": []}
    for seed in range(6):
        te = np.random.default_rng(seed).permutation(108)[:40]
        tr = np.setdiff1d(np.arange(108), te)
        for backend in scores:
            est = C.RFRadiogenomics(n_genes=30, n_radiomics=8, n_estimators=50, random_state=seed, backend=backend,
                                    q2q="wilson-hilferty")
            p = est.fit(x[tr], y[tr]).predict_proba(x[te])[:, 1]
            scores[backend].append(roc_auc_score(y[te] == est.classes_[1], p))
    assert abs(np.mean(scores["numba"]) - np.mean(scores["sklearn"])) < 0.04, scores
    assert np.mean(scores["numba"]) > 0.8


def test_trees_are_pure_without_bootstrap():
    """Grown to purity: without bootstrap every tree classifies its training rows exactly (distinct rows)."""
    X, y = make_classification(n_samples=90, n_features=30, n_classes=3, n_informative=5, random_state=2)
    f = NumbaForest(10, bootstrap=False, random_state=0).fit(X, y)
    for t in range(10):
        leaf = f.apply_tree(X, t)
        np.testing.assert_array_equal(leaf.max(axis=1), 1.0)
        np.testing.assert_array_equal(np.argmax(leaf, axis=1), y)


def test_proba_rows_sum_to_one_and_seeded():
    X, y = make_classification(n_samples=120, n_features=20, random_state=3)
    a = NumbaForest(30, random_state=7).fit(X[:80], y[:80]).predict_proba(X[80:])
    b = NumbaForest(30, random_state=7).fit(X[:80], y[:80]).predict_proba(X[80:])
    c = NumbaForest(30, random_state=8).fit(X[:80], y[:80]).predict_proba(X[80:])
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    assert np.all((a >= 0) & (a <= 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_constant_features_and_ties():
    """Constant columns are never split on; tied values never separated; a constant X gives one leaf."""
    rng = np.random.default_rng(0)
    X = np.column_stack([np.zeros(40), rng.integers(0, 3, 40).astype(float), np.ones(40)])
    y = (X[:, 1] > 0).astype(int)
    f = NumbaForest(20, random_state=0).fit(X, y)
    used = f.feature_[f.feature_ >= 0]
    assert set(np.unique(used)) == {1}
    np.testing.assert_array_equal(np.argmax(f.predict_proba(X), axis=1), y)
    g = NumbaForest(5, random_state=0).fit(np.zeros((10, 2)), np.r_[np.zeros(5, int), np.ones(5, int)])
    assert np.all(g.n_nodes_ == 1)


def test_backend_choice_is_validated():
    X, y = make_classification(n_samples=40, n_features=5, random_state=0)
    with pytest.raises(ValueError, match="backend"):
        C.RFGenomics(backend="xgboost").fit(np.abs(X), y)
