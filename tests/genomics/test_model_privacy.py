"""A fitted radiogenomics model keeps only what prediction needs: no patient's training counts."""

from __future__ import annotations

import pickle
from dataclasses import fields, is_dataclass

import numpy as np
import pytest

from neurorad.genomics.classifiers import NBLDA, PLDA, RadiogenomicsNB, RFGenomics, VoomNSC

N_TRAIN, N_GENES = 37, 53  # distinct sizes: an array with a 37-long axis is per-training-sample


def _arrays(obj, seen=None, depth=0):
    """Every numpy array reachable from ``obj`` (attributes, containers, dataclasses, nested models)."""
    seen = seen if seen is not None else set()
    if id(obj) in seen or depth > 6:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _arrays(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _arrays(v, seen, depth + 1)
    elif is_dataclass(obj) and not isinstance(obj, type):
        for f in fields(obj):
            yield from _arrays(getattr(obj, f.name), seen, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for v in vars(obj).values():
            yield from _arrays(v, seen, depth + 1)


@pytest.mark.parametrize("make", [lambda: PLDA(), lambda: NBLDA(), lambda: NBLDA(size_factor="median-ratio"),
                                  lambda: RadiogenomicsNB(max_iter=5), lambda: VoomNSC(cv=2),
                                  lambda: RFGenomics(n_estimators=5)],
                         ids=["plda", "nblda", "nblda-median-ratio", "radiogenomics-nb", "voom-nsc", "rf"])
def test_pickled_model_holds_no_training_counts(make) -> None:
    rng = np.random.default_rng(3)
    y = np.array([0, 1] * (N_TRAIN // 2) + [0])
    mu = rng.uniform(20, 200, N_GENES) * np.where(y[:, None] == 1, 1.6, 1.0)
    X = rng.negative_binomial(5, 5 / (5 + mu)).astype(float) + 1
    model = make().fit(X, y)
    blob = pickle.dumps(model)
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.predict(X), model.predict(X))  # still predicts
    per_sample = [a.shape for a in _arrays(back) if N_TRAIN in a.shape and not isinstance(back, RFGenomics)]
    assert not per_sample, per_sample
    for row in X[:5]:  # no training sample's count vector, in any form the pickle could hold it
        assert row.tobytes() not in blob and row.astype(np.int64).tobytes() not in blob
