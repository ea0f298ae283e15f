"""ICH haematoma engines: the learned starter (by name), a site's model (by folder), the training entry.

Tests never train the shipped model: the training smoke test runs the entry point for one step on two tiny
analytic heads at 4 mm, and its model is then run as a site model by folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurorad.errors import InputError
from neurorad.image.masks import dice
from neurorad.image.volume import Volume
from neurorad.preprocess.ct_brain import ct_brain_mask
from neurorad.segment.haematoma import haematoma_classes, learned_haematoma, segment_haematoma
from tests.workflows.test_ich import synthetic_head

pytest.importorskip("torch")
pytest.importorskip("monai")


def _truth(head: Volume) -> np.ndarray:
    return (np.asarray(head.data) > 55) & (np.asarray(head.data) < 90)


@pytest.fixture(scope="module")
def tiny_ct() -> tuple[Volume, Volume]:
    ct = synthetic_head((40, 26, 28), voxel=4.0, seed=3)
    return ct, ct_brain_mask(ct)


def test_shipped_learned_engine_by_name_on_the_input_grid(tiny_ct: tuple[Volume, Volume]) -> None:
    ct, brain = tiny_ct
    mask = segment_haematoma(ct, brain, "unet2d")
    assert mask.data.shape == ct.data.shape and np.allclose(mask.affine, ct.affine)
    assert str(mask.metadata.get("segmentation", "")).startswith("ich-unet2d")
    # a phantom-trained model on an analytic head it never saw: it finds the 70 HU ellipsoid
    assert dice(np.asarray(mask.data) > 0, _truth(ct)) >= 0.6


def test_workflow_records_the_learned_model(tiny_ct: tuple[Volume, Volume], tmp_path: Path) -> None:
    from neurorad.image.nifti import load_nifti, save_nifti
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.ich import ICHWorkflow
    from neurorad.workflows.runner import execute

    ct, _ = tiny_ct
    save_nifti(ct.with_data(np.round(ct.data).astype(np.int16)), tmp_path / "ct.nii.gz")
    res = execute(ICHWorkflow(), WorkflowInputs({"ct": tmp_path / "ct.nii.gz"},
                                                options={"engine": "unet2d", "space": "native"}),
                  tmp_path / "out", write_outputs=False)
    (model,) = res.provenance.models
    assert (model.name, model.kind) == ("ich-unet2d", "learned") and len(model.sha256) == 64
    mask = load_nifti(tmp_path / "out" / "haematoma_mask.nii.gz")
    assert mask.data.shape == ct.data.shape
    assert res.quantity("haematoma_volume").value > 5.0
    with pytest.raises(InputError, match="no model no-such-model"):
        execute(ICHWorkflow(), WorkflowInputs({"ct": tmp_path / "ct.nii.gz"}, options={"engine": "no-such-model"}),
                tmp_path / "bad", write_outputs=False)


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
