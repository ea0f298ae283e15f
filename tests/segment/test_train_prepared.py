"""Training from compact prepared cases (``data.prepared``) and the GPU path's threaded patch sampling, on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurorad.errors import InputError
from neurorad.segment import train as train_module
from neurorad.segment.dataset import read_dataset
from neurorad.segment.inference import PreprocessSpec
from neurorad.segment.registry import read_card, verify
from neurorad.segment.train import (
    PreparedCase,
    load_prepared,
    parse_config,
    prepare_cases,
    read_prepared,
    resolve_device,
    train,
    write_prepared,
)
from tests.segment.conftest import tiny_config

SHORT = {"max_epochs": 2, "iterations_per_epoch": 3, "stop_at_val_dice": None}


def test_prepared_cases_round_trip_within_half_a_step_with_exact_zeros_and_labels(tmp_path):
    rng = np.random.default_rng(3)
    img = np.zeros((2, 20, 18, 16), np.float32)
    img[0, 4:16, 3:15, 2:14] = rng.normal(1.0, 0.3, (12, 12, 12))  # negatives inside, zero outside
    img[1, 4:16, 3:15, 2:14] = rng.uniform(0.5, 2.5, (12, 12, 12))
    lab = np.zeros((20, 18, 16), np.int16)
    lab[8:11, 8:11, 8:11] = 1
    ds = train_module.RawDataset(tmp_path / "p", ("a", "b"), {0: "background", 1: "lesion"}, ("x/c1",))
    prep = PreprocessSpec((1.5, 1.5, 1.5), "none")
    write_prepared(tmp_path / "p", [PreparedCase("x/c1", img, lab, np.zeros((0, 3), int))], ds, prep)
    back = read_prepared(tmp_path / "p")
    assert back.channel_names == ("a", "b") and back.labels == {0: "background", 1: "lesion"}
    case = load_prepared(back, prep, (24, 18, 16))[0]
    assert case.case_id == "x__c1" and case.image.shape == (2, 24, 18, 16)  # padded to the patch
    got = case.image[:, :20]
    for ch in range(2):  # the oracle: half of the 8-bit step over the channel's own range
        step = (img[ch].max() - img[ch].min()) / 254
        assert np.abs(got[ch] - img[ch]).max() <= step / 2 + 1e-6
    assert (got[img == 0] == 0).all()
    assert np.array_equal(case.label[:20], lab) and len(case.foreground) == 27
    with pytest.raises(InputError, match="config asks for"):
        load_prepared(back, PreprocessSpec((1.0, 1.0, 1.0), "none"), (24, 18, 16))
    (tmp_path / "p" / "x__c1.npz.bz2").write_bytes(b"not bzip2")
    with pytest.raises(InputError, match="corrupt prepared case"):
        load_prepared(back, prep, (24, 18, 16))
    (tmp_path / "p" / "x__c1.npz.bz2").unlink()
    with pytest.raises(InputError, match="1 case file"):
        read_prepared(tmp_path / "p")
    with pytest.raises(InputError, match="prepared.json missing"):
        read_prepared(tmp_path)


def test_a_run_from_prepared_cases_trains_with_threaded_patches(planted_dataset, tmp_path, monkeypatch):
    ds = read_dataset(planted_dataset)
    raw = tiny_config(planted_dataset, "unet3d", **SHORT)
    prep = PreprocessSpec(tuple(raw["data"]["spacing_mm"]), "zscore")
    write_prepared(tmp_path / "prep", prepare_cases([ds], prep, (32, 32, 32)), ds, prep)
    raw["data"].pop("dataset")
    raw["data"]["prepared"] = "prep"
    assert json.loads((tmp_path / "prep" / "prepared.json").read_text())["cases"] == list(ds.cases)
    # the GPU path's patch pool, forced on the CPU: batches drawn by threads from per-batch generators
    drawn: list[tuple[int, ...]] = []
    real = train_module.sample_batch

    def spy(rng, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        x, y = real(rng, *a, **k)
        drawn.append((rng.bit_generator.state["state"]["state"] % 1000, *x.shape))
        return x, y

    monkeypatch.setattr(train_module, "sample_batch", spy)
    monkeypatch.setattr(train_module, "_threaded_patches", lambda dev: True)
    cfg = parse_config(raw, tmp_path)
    run = train(cfg, tmp_path / "a")
    first = sorted(drawn)
    drawn.clear()
    again = train(parse_config(raw, tmp_path), tmp_path / "b")
    assert sorted(drawn) == first and len(first) == 2 * 3  # the same patches, whatever the threads' timing
    assert run.folds[0].weights_sha256 == again.folds[0].weights_sha256  # on CPU the weights too
    card = read_card(run.model_dir)
    assert card["training"]["datasets"] == ["prep"] and card["contrasts"] == ["t1"]
    assert verify(run.model_dir) == []
    with pytest.raises(InputError, match="dataset or prepared"):
        parse_config({**raw, "data": {**raw["data"], "dataset": str(planted_dataset)}}, tmp_path)


def test_device_names_are_checked():
    with pytest.raises(InputError, match="training.device"):
        parse_config(tiny_config(Path("d"), "unet3d", device="tpu"), Path("."))
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="sees no CUDA GPU"):
            resolve_device("cuda")
