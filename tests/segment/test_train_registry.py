"""Training reproducibility, resume, the registry (hashes, cards, CLI) and bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from neurorad.errors import InputError, ProcessingError
from neurorad.image.volume import Volume
from neurorad.segment import engine as engine_module
from neurorad.segment import load_segmenter
from neurorad.segment.base import ClassicalSegmenter, Segmenter
from neurorad.segment.dataset import read_dataset
from neurorad.segment.engine import bf16_supported
from neurorad.segment.registry import finalize_folder, find_model, read_card, verify
from neurorad.segment.train import parse_config, train
from tests.segment.conftest import tiny_config

SHORT = {"max_epochs": 2, "iterations_per_epoch": 3, "stop_at_val_dice": None}


def _toml(d: dict) -> str:
    lines = []
    for sec, vals in d.items():
        lines.append(f"[{sec}]")
        for k, v in vals.items():
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def trained(planted_dataset, tmp_path_factory) -> Path:
    """One short CLI training run (unet3d, 2 epochs); returns the run folder."""
    from neurorad.cli import app

    tmp = tmp_path_factory.mktemp("cli_train")
    cfg = tmp / "tiny.toml"
    cfg.write_text(_toml(tiny_config(planted_dataset, "unet3d", **SHORT)))
    r = CliRunner().invoke(app, ["--quiet", "train", str(cfg), "--out", str(tmp / "run")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "validation Dice" in r.output
    return tmp / "run"


def test_cli_train_writes_a_registry_model_with_card_curves_and_hashes(trained):
    model = trained / "model"
    card = read_card(model)
    assert card["name"] == "planted-unet3d" and card["version"] == "0.1.0"
    assert card["contrasts"] == ["t1"] and card["labels"] == {"0": "background", "1": "blob"}
    assert card["validation"]["command"].startswith("neurorad train ")
    assert 0.0 <= card["validation"]["metrics"]["val_dice_mean"] <= 1.0
    assert set(card["files"]) >= {"fold_0.pt", "curves.csv", "curves.png"}
    assert verify(model) == []
    rows = (trained / "curves.csv").read_text().strip().splitlines()
    assert rows[0].startswith("fold,epoch,loss,val_dice") and len(rows) == 1 + 2


@pytest.mark.slow
def test_same_seed_same_weights_and_resume_continues_exactly(planted_dataset, trained, tmp_path):
    ref = read_card(trained / "model")["training"]["weights_state_sha256"]
    cfg = parse_config(tiny_config(planted_dataset, "unet3d", **SHORT), tmp_path)
    again = train(cfg, tmp_path / "again")
    assert [f.weights_sha256 for f in again.folds] == ref

    class Stop(Exception):
        pass

    def interrupt(ev: dict) -> None:
        if ev["stage"] == "epoch" and ev["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "resumed", progress=interrupt)
    assert not (tmp_path / "resumed" / "model").exists()
    with pytest.raises(InputError, match="--resume"):
        train(cfg, tmp_path / "resumed")
    resumed = train(cfg, tmp_path / "resumed", resume=True)
    assert [f.weights_sha256 for f in resumed.folds] == ref
    # `touch RUN/STOP` ends an interrupted run at once: the best checkpoint so far becomes the model
    with pytest.raises(Stop):
        train(cfg, tmp_path / "stopped", progress=interrupt)
    (tmp_path / "stopped" / "STOP").touch()
    stopped = train(cfg, tmp_path / "stopped", resume=True)
    assert stopped.folds[0].epochs == 1 and verify(stopped.model_dir) == []
    # a different seed gives different weights (the hash can tell runs apart)
    other = parse_config(tiny_config(planted_dataset, "unet3d", **SHORT, seed=1), tmp_path)
    assert [f.weights_sha256 for f in train(other, tmp_path / "other").folds] != ref


def test_init_weights_fine_tunes_from_a_registry_model_and_refuses_one_that_does_not_fit(planted_dataset, trained,
                                                                                          tmp_path):
    start = read_card(trained / "model")["training"]["weights_state_sha256"][0]
    # learning rate 0: the run's weights stay exactly the model it started from (random ones would not)
    cfg = parse_config(tiny_config(planted_dataset, "unet3d", **SHORT, learning_rate=0.0,
                                   init_weights=str(trained / "model")), tmp_path)
    run = train(cfg, tmp_path / "tuned")
    assert run.folds[0].weights_sha256 == start
    init = read_card(run.model_dir)["training"]["init_weights"]
    assert init == {"model": "planted-unet3d@0.1.0", "file": "fold_0.pt", "weights_state_sha256": start}
    scratch = train(parse_config(tiny_config(planted_dataset, "unet3d", **SHORT, learning_rate=0.0), tmp_path),
                    tmp_path / "scratch")
    assert scratch.folds[0].weights_sha256 != start and "init_weights" not in read_card(scratch.model_dir)["training"]
    # another width of network, or a model that is not there: named before any data is prepared
    wide = tiny_config(planted_dataset, "unet3d", **SHORT, init_weights=str(trained / "model"))
    wide["model"]["features"] = [16, 32, 64, 128, 256]
    with pytest.raises(InputError, match="does not fit the configured unet3d network"):
        train(parse_config(wide, tmp_path), tmp_path / "wide")
    with pytest.raises(InputError, match="init_weights: no model nosuch-model"):
        train(parse_config(tiny_config(planted_dataset, "unet3d", **SHORT, init_weights="nosuch-model@1.0.0"),
                           tmp_path), tmp_path / "missing")


def test_poly_schedule_decays_the_learning_rate_as_nnunet_and_the_starter_options_set_it(planted_dataset,
                                                                                           tmp_path):
    from argparse import ArgumentParser

    from neurorad.segment.train import add_budget_arguments, poly_learning_rate, train_starter

    # analytic: nnU-Net's (1 - (e - 1) / E) ** 0.9, full rate at the first epoch, nearly zero at the last
    assert poly_learning_rate(1e-3, 1, 4) == 1e-3
    assert poly_learning_rate(1e-3, 3, 4) == pytest.approx(1e-3 * 0.5 ** 0.9, rel=1e-12)
    assert poly_learning_rate(1e-3, 40, 40) == pytest.approx(1e-3 * (1 / 40) ** 0.9, rel=1e-12)
    with pytest.raises(ValueError, match="outside 1..4"):
        poly_learning_rate(1e-3, 5, 4)
    with pytest.raises(InputError, match="lr_schedule must be one of plateau, poly"):
        parse_config(tiny_config(planted_dataset, "unet3d", **SHORT, lr_schedule="cosine"), tmp_path)
    # a starter entry's --learning-rate / --lr-schedule reach the run, its curves and the card's command
    ap = ArgumentParser()
    add_budget_arguments(ap)
    args = ap.parse_args(["--epochs", "3", "--iterations", "2", "--learning-rate", "0.004", "--lr-schedule", "poly",
                          "--foreground-sampling", "component"])
    raw = tiny_config(planted_dataset, "unet3d", max_epochs=9, iterations_per_epoch=9, stop_at_val_dice=None,
                      lr_patience_epochs=1, lr_factor=0.5)
    (tmp_path / "out").mkdir()
    model = train_starter(raw, tmp_path / "out", args, "python -m planted")
    rows = (model / "curves.csv").read_text().strip().splitlines()[1:]
    lrs = [float(r.split(",")[4]) for r in rows]
    assert lrs == pytest.approx([poly_learning_rate(0.004, e, 3) for e in (1, 2, 3)], rel=1e-9)
    card = read_card(model)
    assert card["training"]["config"]["training"]["lr_schedule"] == "poly"
    assert card["training"]["config"]["training"]["foreground_sampling"] == "component"
    assert card["validation"]["command"] == ("python -m planted --out RUN --epochs 3 --iterations 2 "
                                             "--learning-rate 0.004 --lr-schedule poly --foreground-sampling component")


def test_component_sampling_centres_small_lesions_as_often_as_large_ones():
    from neurorad.segment.networks import ArchSpec
    from neurorad.segment.train import PreparedCase, foreground_index, sample_batch

    label = np.zeros((64, 64, 64), np.int16)
    label[2:32, 2:32, 2:32] = 1  # a large lesion of 27,000 voxels, over the 20,000 kept
    label[60, 60, 60] = 1  # a one-voxel lesion, far away
    fg, comp = foreground_index(label)
    assert comp is None and len(fg) == 20000
    fg_c, comp = foreground_index(label, components=True)
    assert comp is not None and sorted(set(comp.tolist())) == [1, 2] and (comp == 2).sum() == 1
    assert all(label[tuple(v)] for v in fg_c)
    arch = ArchSpec("unet3d", 1, 2, (8, 16, 32, 64, 128), 1, 0.0, {})
    image = np.zeros((1, 64, 64, 64), np.float32)

    def small_share(case: PreparedCase) -> float:
        rng = np.random.default_rng(0)
        hits = 0
        for _ in range(100):
            _, y = sample_batch(rng, [case], arch, (16, 16, 16), 1, 1.0, False, False)
            hits += int(y.sum() == 1)  # the patch holds the small lesion, not the large one
        return hits / 100

    # binomial: one voxel in 20,000 is picked ~0 times in 100; one lesion in two about 50 times
    assert small_share(PreparedCase("v", image, label, fg)) == 0.0
    assert 0.3 < small_share(PreparedCase("c", image, label, fg_c, comp)) < 0.7


def test_changed_file_refuses_to_run_and_corrupt_checkpoint_is_named(trained, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(trained / "model", model)
    assert load_segmenter(model).weights_sha256 == find_model(str(model)).weights_sha256
    w = model / "fold_0.pt"
    data = bytearray(w.read_bytes())
    data[-100] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ProcessingError, match="refusing to run.*fold_0.pt: sha256"):
        load_segmenter(model)
    # a truncated checkpoint whose hashes were re-recorded: still a clear error, naming the file
    w.write_bytes(bytes(data[: len(data) // 2]))
    finalize_folder(model, read_card(model))
    with pytest.raises(ProcessingError, match="fold_0.pt: corrupt or unreadable checkpoint"):
        load_segmenter(model)


def test_wrong_contrast_count_and_dimensions(trained):
    seg = load_segmenter(trained / "model")
    v = Volume(np.zeros((20, 20, 20), np.float32), np.eye(4))
    with pytest.raises(InputError, match="needs 1 input image"):
        seg.predict([v, v])
    with pytest.raises(InputError, match="must be a 3D image"):
        seg.predict([Volume(np.zeros((20, 20, 20, 2), np.float32), np.eye(4))])


def test_model_cli_list_show_verify_import(trained, tmp_path, monkeypatch):
    from neurorad.cli import app

    monkeypatch.setenv("NEURORAD_MODELS", str(tmp_path / "registry"))
    run = CliRunner()
    r = run.invoke(app, ["model", "import", str(trained / "model")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "registry" / "planted-unet3d" / "0.1.0" / "model.json").is_file()
    r = run.invoke(app, ["model", "list"])
    assert "planted-unet3d@0.1.0" in r.output
    r = run.invoke(app, ["model", "show", "planted-unet3d@0.1.0"])
    assert json.loads(r.output)["task"] == "planted blobs"
    r = run.invoke(app, ["model", "verify", "planted-unet3d"])
    assert r.exit_code == 0 and "OK" in r.output
    # the registered copy runs by name from the command line, output on the input grid
    img = tmp_path / "img.nii.gz"
    from neurorad.image.nifti import save_nifti
    from neurorad.segment.planted import planted_cases

    _, [vol], _ = planted_cases(1, seed=9)[0]
    save_nifti(vol, img)
    r = run.invoke(app, ["segment", str(img), "--model", "planted-unet3d@0.1.0", "--out", str(tmp_path / "l.nii.gz")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "l.json").read_text())["version"] == "0.1.0"
    # tamper with the registered copy: verify fails with exit code 3
    (tmp_path / "registry" / "planted-unet3d" / "0.1.0" / "curves.csv").write_text("changed")
    from neurorad.cli import main

    monkeypatch.setattr("sys.argv", ["neurorad", "model", "verify", "planted-unet3d@0.1.0"])
    with pytest.raises(SystemExit) as ex:
        main()
    assert ex.value.code == 3
    with pytest.raises(InputError, match="no model nothing"):
        find_model("nothing")


def test_dataset_errors(planted_dataset, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(planted_dataset, bad)
    (bad / "imagesTr" / "case_003_0000.nii.gz").unlink()
    with pytest.raises(InputError, match="case_003: missing image"):
        read_dataset(bad)
    (bad / "dataset.json").unlink()
    with pytest.raises(InputError, match="dataset.json missing"):
        read_dataset(bad)
    with pytest.raises(InputError, match="patch_size"):
        parse_config(tiny_config(planted_dataset, "unet3d") | {"data": {"dataset": "x", "patch_size": [30, 30, 30]}},
                     tmp_path).arch(1, 2)
    with pytest.raises(InputError, match="unknown key"):
        parse_config({"data": {"dataset": "x"}, "training": {"epochs": 3}}, tmp_path)


def test_classical_engine_is_a_segmenter():
    seg = ClassicalSegmenter("threshold", lambda vols: (vols[0].data > 0.5).astype(np.uint8),
                             {0: "background", 1: "bright"}, ("t1",))
    assert isinstance(seg, Segmenter)
    data = np.zeros((8, 8, 8), np.float32)
    data[2:5, 2:5, 2:5] = 1.0
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    out = seg.predict([Volume(data, aff)])
    assert out.probabilities.shape == (8, 8, 8, 2) and np.allclose(out.probabilities.affine, aff)
    assert int(out.label_map().data.sum()) == 27


@pytest.mark.slow
def test_kfold_ensemble_gives_uncertainty_on_the_input_grid(planted_dataset, tmp_path):
    cfg = parse_config(tiny_config(planted_dataset, "unet3d", max_epochs=1, iterations_per_epoch=2,
                                   stop_at_val_dice=None), tmp_path)
    cfg.folds = 2
    res = train(cfg, tmp_path / "run")
    assert len(res.folds) == 2 and set(res.folds[0].val_cases).isdisjoint(res.folds[1].val_cases)
    seg = load_segmenter(res.model_dir)
    assert len(seg.forwards) == 2
    from neurorad.segment.planted import planted_cases

    _, [vol], _ = planted_cases(1, seed=4, shape=(30, 34, 28))[0]
    out = seg.predict([vol])
    assert out.uncertainty is not None and out.uncertainty.spatial_shape == vol.spatial_shape
    u = np.asarray(out.uncertainty.data)
    assert u.min() >= 0 and u.max() > 0  # two differently trained members disagree somewhere


def test_onnx_export_matches_torch_and_records_the_faster_engine(trained, tmp_path, monkeypatch):
    from neurorad.cli import app
    from neurorad.segment.planted import planted_cases

    model = tmp_path / "m"
    shutil.copytree(trained / "model", model)
    r = CliRunner().invoke(app, ["model", "export-onnx", str(model), "--repeats", "1"])
    assert r.exit_code == 0, r.output
    card = read_card(model)
    assert "fold_0.onnx" in card["files"] and verify(model) == []
    rep = card["inference"]["onnx_export"]
    assert rep["max_abs_diff"] < 1e-3
    fallback = "onnx" if rep["onnx_s"] < rep["torch_s"] else "torch"
    assert card["inference"]["fallback_engine"] == fallback
    if rep.get("bf16_accepted") and rep["bf16_s"] < min(rep["onnx_s"], rep["torch_s"]):
        assert card["inference"]["preferred_engine"] == "torch-bf16"
    else:
        assert card["inference"]["preferred_engine"] == fallback
    _, [vol], _ = planted_cases(1, seed=11)[0]
    p_torch = load_segmenter(model, engine="torch").predict([vol]).probabilities.data
    seg_onnx = load_segmenter(model, engine="onnx")
    assert seg_onnx.engine == "onnx"
    p_onnx = seg_onnx.predict([vol]).probabilities.data
    assert np.abs(np.asarray(p_torch) - np.asarray(p_onnx)).max() < 1e-3
    # ONNX Runtime takes torch's thread count (OMP_NUM_THREADS / torch.set_num_threads), not every core
    from neurorad.segment.onnx_engine import onnx_forward

    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            opts = onnx_forward(model / "fold_0.onnx").session.get_session_options()  # type: ignore[attr-defined]
            assert opts.intra_op_num_threads == n
    finally:
        torch.set_num_threads(threads)
    assert load_segmenter(model).engine == card["inference"]["preferred_engine"]
    if bf16_supported():  # the reduced-precision engine stays within the export's tolerance on a real case
        p_bf16 = load_segmenter(model, engine="torch-bf16").predict([vol]).probabilities.data
        assert 0 < np.abs(np.asarray(p_torch) - np.asarray(p_bf16)).max() < 0.05
    # a card that prefers bfloat16, loaded on a CPU without it, runs the recorded float32 engine
    card["inference"]["preferred_engine"] = "torch-bf16"
    (model / "model.json").write_text(json.dumps(card))
    with monkeypatch.context() as mp:
        mp.setattr(engine_module, "bf16_supported", lambda: False)
        assert load_segmenter(model).engine == fallback
    # a changed ONNX file refuses to run like changed weights
    (model / "fold_0.onnx").write_bytes(b"not onnx")
    with pytest.raises(ProcessingError, match="fold_0.onnx"):
        load_segmenter(model, engine="onnx")


def test_accept_bf16_prefers_it_on_recorded_evidence_and_keeps_the_fallback(trained, tmp_path, monkeypatch):
    from neurorad.cli import app
    from neurorad.segment.onnx_engine import accept_bf16

    model = tmp_path / "m"
    shutil.copytree(trained / "model", model)
    with pytest.raises(InputError, match="no bfloat16 timing"):  # never exported: nothing measured
        accept_bf16(model, "a benchmark")
    card = read_card(model)
    # an export's record, as export-onnx writes it on a CPU with bfloat16 that refused it on the voxel check
    card["inference"] = {**card.get("inference", {}), "preferred_engine": "torch", "fallback_engine": "torch",
                         "onnx_export": {"torch_s": 0.2, "onnx_s": 0.25, "bf16_s": 0.3, "bf16_accepted": False}}
    finalize_folder(model, card)
    with pytest.raises(InputError, match="not faster"):
        accept_bf16(model, "a benchmark")
    card["inference"]["onnx_export"]["bf16_s"] = 0.05
    finalize_folder(model, card)
    with pytest.raises(InputError, match="evidence"):
        accept_bf16(model, "  ")
    (model / "fold_0.pt").write_bytes((model / "fold_0.pt").read_bytes() + b"x")  # a changed file is not re-blessed
    with pytest.raises(ProcessingError, match="failed verification"):
        accept_bf16(model, "a benchmark")
    shutil.rmtree(model)
    shutil.copytree(trained / "model", model)
    finalize_folder(model, card)
    r = CliRunner().invoke(app, ["model", "accept-bf16", str(model), "--evidence", "same lesions on 3 pairs"])
    assert r.exit_code == 0, r.output
    got = read_card(model)
    assert got["inference"]["preferred_engine"] == "torch-bf16" and got["inference"]["fallback_engine"] == "torch"
    assert got["inference"]["onnx_export"]["bf16_accepted_by"] == "same lesions on 3 pairs"
    assert verify(model) == []
    with monkeypatch.context() as mp:  # a CPU without native bfloat16 runs the float32 fallback
        mp.setattr(engine_module, "bf16_supported", lambda: False)
        assert load_segmenter(model).engine == "torch"
    if bf16_supported():
        assert load_segmenter(model).engine == "torch-bf16"


def test_nnunet_folder_checks(tmp_path):
    from neurorad.segment.nnunet import NnUNetSegmenter

    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir()
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "FLAIR"},
                                                     "labels": {"background": 0, "lesion": 1}}))
    with pytest.raises(InputError, match="plans.json missing"):
        NnUNetSegmenter(folder)
    (folder / "plans.json").write_text("{}")
    with pytest.raises(InputError, match="fold_0/checkpoint_final.pth"):
        NnUNetSegmenter(folder)
    (folder / "fold_0").mkdir()
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"x")
    seg = NnUNetSegmenter(folder)
    assert seg.contrasts == ("flair",) and seg.labels == {0: "background", 1: "lesion"}
    with pytest.raises(InputError, match="needs 1 input image"):
        seg.predict([])


def test_shipped_brain_model_is_registered_verified_small_and_honest():
    from neurorad.preprocess.brain_extraction import ENGINES
    from neurorad.segment.registry import SHIPPED_ROOT, list_models

    folder = SHIPPED_ROOT / "neurorad-weak-brain"
    assert verify(folder) == []
    card = read_card(folder)
    assert sum((folder / f).stat().st_size for f in card["files"]) <= 25 * 1024 * 1024
    assert "SYNTHETIC" in card["training_data"] and "validated locally" in card["intended_use"]
    assert card["architecture"]["architecture"] == "densevnet"
    assert any(m.name == "neurorad-weak-brain" and m.shipped for m in list_models())
    assert "neurorad-weak" in ENGINES and "prior-gmm" in ENGINES


def test_bf16_tolerance_shrinks_for_a_model_thresholded_at_card_probabilities():
    """A model whose card carries probability anchors (the MS learned engine's operating point) may run in
    bfloat16 only if that moves probabilities by under a tenth of the smallest anchor: ms-unet3d 0.3.0's export
    measured a bfloat16 change of 0.038 against an anchor of 0.08 and had been accepted at the generic 0.05."""
    from neurorad.segment.onnx_engine import bf16_tolerance_for

    assert bf16_tolerance_for({}) == 0.05
    card = {"operating_point": {"learned": {"extent_probability": 0.08, "core_probability": 0.4},
                                "fusion": {"extent_probability": 0.3, "core_probability": 0.5},
                                "chosen_by": "a sweep at 1 mm"}}
    assert bf16_tolerance_for(card) == pytest.approx(0.008)
    assert bf16_tolerance_for(card) < 0.038  # the measured change is refused now
    assert bf16_tolerance_for({"operating_point": {"learned": {"extent_probability": 0.9,
                                                               "core_probability": 0.95}}}) == 0.05


def test_a_configs_mirror_axes_reach_the_card_and_the_loaded_model(planted_dataset, tmp_path):
    """``[inference] mirror_axes`` (test-time mirroring over those axes only) is written on the card and used by
    the loaded model; a card without it mirrors every axis when ``mirror_tta`` is on (``InferenceSpec``)."""
    from neurorad.segment.engine import load_segmenter

    raw = tiny_config(planted_dataset, "unet3d", max_epochs=1, iterations_per_epoch=1, stop_at_val_dice=None)
    raw["inference"] = {"mirror_tta": True, "mirror_axes": [0]}
    run = train(parse_config(raw, tmp_path), tmp_path / "run")
    card = read_card(run.model_dir)
    assert card["inference"]["mirror_tta"] is True and card["inference"]["mirror_axes"] == [0]
    seg = load_segmenter(run.model_dir)
    assert seg.inference.mirror_tta and seg.inference.mirror_axes == (0,)
    assert load_segmenter(run.model_dir, mirror_axes=()).inference.mirror_tta is False
    raw["inference"] = {"mirror_tta": True, "mirror_axes": [0, 5]}
    with pytest.raises(InputError, match="mirror_axes"):
        train(parse_config(raw, tmp_path), tmp_path / "bad")
