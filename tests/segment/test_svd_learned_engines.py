"""The learned WMH / microbleed engines' plumbing (papers' input grid -> network -> native grid, thresholds,
2-10 mm filter) with a stand-in network, so the test needs no trained model; and a clear error naming the
retrain command when the model is missing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from neurorad.errors import InputError
from neurorad.image.volume import Volume
from neurorad.segment import svd_starter
from neurorad.workflows.cmb.workflow import CMBWorkflow
from neurorad.workflows.wmh.workflow import WMHWorkflow


class _Bright:
    """Stand-in segmenter: foreground probability 1 where the (paper-grid) input is above ``level``."""

    name, version, weights_sha256 = "stand-in", "0.0.1", "0" * 64

    def __init__(self, level: float) -> None:
        self.level = level

    def predict(self, vols):
        x = np.asarray(vols[0].data)
        fg = (x > self.level).astype(np.float32)
        return SimpleNamespace(probabilities=Volume(np.stack([1 - fg, fg], -1), vols[0].affine))


def _ball(shape, c, r):
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return np.linalg.norm(g - np.asarray(c), axis=-1) <= r


def test_wmh_unet2d_engine_maps_back_to_the_native_grid(monkeypatch) -> None:
    shape = (150, 170, 20)
    brain = _ball(shape, (75, 85, 10), 60)
    lesion = _ball(shape, (60, 90, 10), 4)
    data = np.where(brain, 0.5, 0.0) + 0.5 * lesion
    vol = Volume(data.astype(np.float32), np.diag([1.2, 1.2, 3.0, 1.0]))
    monkeypatch.setattr(svd_starter, "load_starter", lambda kind, ref=None: _Bright(2.0))  # z-score of 1.0 > 2
    anat = SimpleNamespace(brain=brain)
    mask, prob, model, params = WMHWorkflow()._segment("unet2d", vol, anat, np.zeros(shape, bool), {})
    inter = (mask & lesion).sum()
    assert 2 * inter / (mask.sum() + lesion.sum()) > 0.9
    assert model.kind == "learned" and model.name == "stand-in" and params["threshold"] == 0.5
    assert prob.shape == shape and prob.max() <= 1.0


def test_cmb_unet25d_engine_keeps_2_to_10_mm_foci(monkeypatch) -> None:
    shape = (120, 130, 40)
    brain = _ball(shape, (60, 65, 20), 55)
    data = np.where(brain, 0.8, 0.0)
    small = _ball(shape, (40, 50, 20), 2.5)  # 5 mm
    big = _ball(shape, (80, 80, 20), 8.0)  # 16 mm: removed by the 2-10 mm rule
    data[small | big] = 0.05
    vol = Volume(data.astype(np.float32), np.eye(4))

    class _Dark(_Bright):
        def predict(self, vols):
            x = np.asarray(vols[0].data)
            fg = (x < 0.2).astype(np.float32)  # dark (outside the brain too: the engine masks it)
            return SimpleNamespace(probabilities=Volume(np.stack([1 - fg, fg], -1), vols[0].affine))

    monkeypatch.setattr(svd_starter, "load_starter", lambda kind, ref=None: _Dark(0))
    labels, prob, cands, model, params = CMBWorkflow()._detect("unet25d", vol, SimpleNamespace(brain=brain), {})
    assert len(cands) == 1 and labels[40, 50, 20] == 1 and not labels[big].any()
    assert 3.5 < cands[0]["diameter_mm"] < 6.5 and params["diameter_mm"] == [2.0, 10.0]


def test_missing_model_names_the_retrain_command() -> None:
    pytest.importorskip("neurorad.segment.engine")
    with pytest.raises(InputError, match="svd_train wmh"):
        svd_starter.load_starter("wmh", "no-such-model@9.9.9")
