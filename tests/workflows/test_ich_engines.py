"""ICH haematoma engines: the learned starter (by name), a site's model (by folder), the training entry.

Tests never train the shipped model: the training smoke test runs the entry point for one step on two tiny
analytic heads at 4 mm, and its model is then run as a site model by folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurorad.image.volume import Volume
from neurorad.preprocess.ct_brain import ct_brain_mask
from neurorad.segment.haematoma import haematoma_classes, learned_haematoma
from tests.workflows.test_ich import synthetic_head

pytest.importorskip("torch")
pytest.importorskip("monai")


def _truth(head: Volume) -> np.ndarray:
    return (np.asarray(head.data) > 55) & (np.asarray(head.data) < 90)


@pytest.fixture(scope="module")
def tiny_ct() -> tuple[Volume, Volume]:
    ct = synthetic_head((40, 26, 28), voxel=4.0, seed=3)
    return ct, ct_brain_mask(ct)


def test_haematoma_classes_of_a_site_model() -> None:
    assert haematoma_classes({0: "background", 1: "oedema", 2: "Hemorrhage"}) == [2]
    assert haematoma_classes({0: "background", 1: "ICH", 2: "IVH blood"}) == [1, 2]
    assert haematoma_classes({0: "background", 1: "lesion"}) == [1]


def test_training_entry_smoke_and_site_model_by_folder(tiny_ct: tuple[Volume, Volume], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from neurorad.segment.dataset import write_dataset
    from neurorad.segment.registry import open_model
    from neurorad.workflows.ich import train as ich_train

    cases = []
    for i, h in enumerate(((30, 20, 20), (44, 26, 30))):
        head = synthetic_head(h, voxel=4.0, seed=10 + i)
        cases.append((f"h{i}", [head], head.with_data(_truth(head).astype(np.uint8))))
    write_dataset(tmp_path / "run" / "dataset", cases, ["CT"], {0: "background", 1: "haematoma"})
    # the shipped CONFIG on a 4 mm grid with small patches: seconds, not minutes
    monkeypatch.setitem(ich_train.CONFIG, "data", {**ich_train.CONFIG["data"], "spacing_mm": [4.0, 4.0, 4.0],
                                                   "patch_size": [32, 32]})
    monkeypatch.setitem(ich_train.CONFIG, "inference", {**ich_train.CONFIG["inference"], "patch_size": [32, 32]})
    assert ich_train.main(["--out", str(tmp_path / "run"), "--epochs", "1", "--iterations", "1"]) == 0
    folder = tmp_path / "run" / "run" / "model"
    card = open_model(folder).card
    assert card["name"] == "ich-unet2d" and "SYNTHETIC" in card["training_data"]
    assert "neurorad.workflows.ich.train" in card["validation"]["command"]
    ct, brain = tiny_ct
    mask, record = learned_haematoma(ct, brain, str(folder))  # a site model named by its folder
    assert mask.data.shape == ct.data.shape and np.allclose(mask.affine, ct.affine)
    assert record["classes"] == ["haematoma"] and len(record["sha256"]) == 64
