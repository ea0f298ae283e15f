"""The shipped WMH / microbleed starter models: found by the name the engines use, verified against their
recorded hashes, within the 25 MB limit, cards that say synthetic and name the retrain command; and each
runs through its engine's input mapping back onto a small native grid (2 slices: seconds, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.image.volume import Volume
from neurorad.segment import svd_starter
from neurorad.segment.registry import SHIPPED_ROOT, find_model

pytest.importorskip("torch")


@pytest.mark.parametrize("kind", ["wmh", "cmb"])
def test_starter_model_is_shipped_verified_small_and_carded(kind: str) -> None:
    info = find_model(svd_starter.MODELS[kind])  # verifies every file's sha256
    assert info.path.parent == SHIPPED_ROOT
    size_mb = sum(p.stat().st_size for p in info.path.rglob("*") if p.is_file()) / 1e6
    assert size_mb <= 25.0
    card = info.card
    assert "SYNTHETIC" in card["training_data"] and "NOT FIT" in card["limitations"]
    assert card["validation"]["command"] == svd_starter.RETRAIN[kind]
    assert card["architecture"]["architecture"] == {"wmh": "unet2d", "cmb": "unet25d"}[kind]


@pytest.mark.parametrize("kind", ["wmh", "cmb"])
def test_starter_model_maps_back_onto_the_native_grid(kind: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(100.0, 10.0, (40, 36, 2)).astype(np.float32)
    vol = Volume(data, np.diag([5.0, 5.0, 3.0, 1.0]))
    seg = svd_starter.load_starter(kind)
    x, geom = svd_starter.wmh_input(vol) if kind == "wmh" else svd_starter.cmb_input(vol)
    assert x.shape == (384, 384, 2)
    prob = svd_starter.predict_native(seg, x, geom)
    assert prob.shape == data.shape
    assert np.all((prob >= 0) & (prob <= 1)) and np.isfinite(prob).all()
