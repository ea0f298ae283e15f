"""Glioma learned engines (issue 12, engines a and b): a site's model is matched to EASE's three regions by
its label names and to the four sequences by its channel names; the workflow runs it, records it and names it
in the report. Oracles: the model's own output mapped by hand (the fake model below computes its classes from
the inputs it was given), and nnU-Net's own prediction for a model nnU-Net trains here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurorad.errors import InputError
from neurorad.segment import glioma_learned
from neurorad.segment.glioma_learned import channel_order, region_of_label

HERE = Path(__file__).parent


@pytest.mark.parametrize(("name", "region"), [
    ("NCR", 1), ("necrotic and non-enhancing tumor core", 1), ("necrosis", 1), ("NET", 2),
    ("ED", 2), ("peritumoral edema", 2), ("oedema", 2), ("non_enhancing", 2), ("non-enhancing tumor", 2),
    ("ET", 3), ("GD-enhancing tumor", 3), ("enhancing", 3), ("background", None)])
def test_label_names_map_to_ease_regions(name: str, region: int | None) -> None:
    assert region_of_label(name) == region


def test_unknown_label_or_channel_is_refused_with_its_name() -> None:
    with pytest.raises(InputError, match="'vessel'"):
        region_of_label("vessel")
    assert channel_order(("FLAIR", "T1ce", "t1", "T2w"), "m") == ["flair", "t1c", "t1", "t2"]
    assert channel_order(("T1", "T1Gd", "T2", "T2-FLAIR"), "m") == ["t1", "t1c", "t2", "flair"]
    with pytest.raises(InputError, match="'DWI'"):
        channel_order(("T1", "DWI"), "m")
    with pytest.raises(InputError, match="sequence twice"):
        channel_order(("T1", "T1w"), "m")


def _fake_site_model(brain: np.ndarray):  # noqa: ANN202
    """A 'site model' with BraTS names, its own channel order and label order; its classes are thresholds of
    the inputs it receives, and it records that what it got outside the brain was zero."""
    from neurorad.segment.base import ClassicalSegmenter

    seen: dict[str, bool] = {}

    def fn(vols):  # noqa: ANN001, ANN202 - channels: FLAIR, T1ce, T1, T2
        flair, t1c = (np.asarray(v.data) for v in vols[:2])
        seen["zero_outside_brain"] = all(not np.asarray(v.data)[~brain].any() for v in vols)
        out = np.zeros(flair.shape, np.int64)
        out[flair > 60] = 2  # ED
        out[t1c > 70] = 1  # ET
        out[(t1c > 70) & (flair > 80)] = 3  # NCR
        return out

    model = ClassicalSegmenter("site-glioma", fn, {0: "background", 1: "ET", 2: "ED", 3: "NCR"},
                               ("FLAIR", "T1ce", "T1", "T2"), version="2.1.0", weights_sha256="ab" * 32)
    return model, seen


def test_site_model_through_the_workflow_is_mapped_recorded_and_named(tmp_path, monkeypatch) -> None:
    """The whole workflow with a learned engine: sequences in the model's channel order, zero outside the
    brain, classes mapped ET->3, ED->2, NCR->1 (oracle: the model's thresholds on the workflow's own
    co-registered, bias-corrected sequences), the components rule applied, provenance and report name it."""
    from neurorad.image.nifti import load_nifti
    from neurorad.segment.glioma_classical import GliomaParams, components_rule

    from .test_glioma import _head

    series, brain = {}, None
    for i, s in enumerate(("t1c", "t1", "t2", "flair")):
        series[s], brain = _head(seed=i)
    model, seen = _fake_site_model(brain)
    monkeypatch.setattr(glioma_learned, "learned_segmenter", lambda engine: model)
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.glioma import GliomaWorkflow

    wf = GliomaWorkflow()
    res = wf.run(WorkflowInputs(series, options={"brain_mask": brain, "registration_backend": "sitk",
                                                 "engine": "site-glioma@2.1.0"}), tmp_path, lambda f, m: None)
    assert seen["zero_outside_brain"]
    flair = np.asarray(load_nifti(tmp_path / "flair.nii.gz").data)
    t1c = np.asarray(load_nifti(tmp_path / "t1c.nii.gz").data)
    want = np.zeros(flair.shape, np.uint8)
    want[flair > 60] = 2
    want[t1c > 70] = 3
    want[(t1c > 70) & (flair > 80)] = 1
    want[~brain] = 0
    want = components_rule(want, (2.0, 2.0, 2.0), GliomaParams()).classes
    got = np.asarray(load_nifti(tmp_path / "tumour_classes.nii.gz").data)
    assert want.any() and (got == want).all()
    m = res.provenance.models[0]
    assert (m.name, m.version, m.kind, m.sha256) == ("site-glioma", "2.1.0", "learned", "ab" * 32)
    method = next(s for s in wf.report_sections(res, None) if s.heading == "Method")
    assert "learned model site-glioma 2.1.0" in method.paragraphs[0]


def test_unknown_engine_fails_before_any_work(tmp_path) -> None:
    from neurorad.workflows.contract import WorkflowInputs
    from neurorad.workflows.glioma import GliomaWorkflow

    from .test_glioma import _head

    series, brain = {}, None
    for i, s in enumerate(("t1c", "t1", "t2", "flair")):
        series[s], brain = _head(seed=i)
    steps: list[str] = []
    with pytest.raises(InputError, match="no-such-model"):
        GliomaWorkflow().run(WorkflowInputs(series, options={"brain_mask": brain, "engine": "no-such-model"}),
                             tmp_path, lambda f, m: steps.append(m))
    assert steps == []  # refused before loading a single series


@pytest.fixture(scope="module")
def brats_style_nnunet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BraTS-style nnU-Net v2 results folder (channels FLAIR, T1, T1ce, T2; labels NCR, ED, ET) that nnU-Net
    trains here for 1 epoch of 2 iterations on planted blobs (``tests/segment/nnunet_tiny.py``)."""
    pytest.importorskip("nnunetv2", reason="nnunetv2 is installed by `make install` (see Makefile)")
    from neurorad.image.volume import Volume
    from neurorad.segment.dataset import write_dataset
    from neurorad.segment.planted import planted_cases

    raw = tmp_path_factory.mktemp("raw")
    cases = []
    for cid, (img,), lab in planted_cases(6, seed=3, shape=(24, 24, 24), classes=3):
        d = np.asarray(img.data, np.float32)
        chans = [Volume(d * w + b, img.affine.copy()) for w, b in ((1.0, 0.0), (-0.5, 2.0), (0.8, 1.0), (0.3, 0.5))]
        cases.append((cid, chans, lab))
    write_dataset(raw / "Dataset902_BratsStyle", cases, ["FLAIR", "T1", "T1ce", "T2"],
                  {0: "background", 1: "NCR", 2: "ED", 3: "ET"})
    work = tmp_path_factory.mktemp("nnunet")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, str(HERE.parent / "segment" / "nnunet_tiny.py"), str(raw), "902", str(work)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return Path(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_site_nnunet_model_as_glioma_engine(brats_style_nnunet) -> None:
    """``nnunet:FOLDER`` as the glioma engine: nnU-Net's own predictor gets the sequences in ITS channel order
    (FLAIR, T1, T1ce, T2), and its arg-max, mapped NCR->1, ED->2, ET->3 inside the brain, is the class map
    (before the components rule, which is switched off here)."""
    from neurorad.segment.glioma_classical import GliomaParams
    from neurorad.segment.glioma_learned import learned_segmenter, segment_glioma_learned
    from neurorad.segment.planted import grid, random_scene, render_scene

    shape, aff = grid((28, 26, 22), (1.5, 1.5, 1.5), axcodes_flip=(False, True, False))
    img, _ = render_scene(random_scene(np.random.default_rng(4), 30.0), shape, aff, seed=2)
    d = np.asarray(img.data, np.float32)
    seqs = {"flair": img.with_data(d), "t1": img.with_data(-0.5 * d + 2.0), "t1c": img.with_data(0.8 * d + 1.0),
            "t2": img.with_data(0.3 * d + 0.5)}
    brain = np.ones(shape, bool)
    brain[:3] = False
    engine = f"nnunet:{brats_style_nnunet}"
    seg = segment_glioma_learned(seqs, brain, engine, GliomaParams(min_component_ml=0.0,
                                                                    min_fraction_of_largest=0.0))
    model = learned_segmenter(engine)
    assert type(model).__name__ == "NnUNetSegmenter"
    masked = [seqs[s].with_data(np.where(brain, np.asarray(seqs[s].data), 0.0).astype(np.float32))
              for s in ("flair", "t1", "t1c", "t2")]
    own = np.argmax(np.asarray(model.predict(masked).probabilities.data), axis=-1)
    want = np.array([0, 1, 2, 3], np.uint8)[own] * brain
    assert seg.classes.shape == shape
    assert (seg.classes == want).all()


@pytest.mark.slow
def test_training_cases_and_entry_point_give_a_model_the_workflow_runs(tmp_path, monkeypatch) -> None:
    """The starter's training data (``neurorad.workflows.glioma.train``): four skull-stripped sequences on one
    2 mm grid whose tumour regions have the contrasts the phantom gave them (oracle: the radiological
    definitions: FLAIR bright where the hyperintensity is, T1c bright where it enhances), then the entry point
    (cut to seconds) leaves a model folder that the glioma engine runs as a site model by its folder."""
    from neurorad.segment.glioma_learned import segment_glioma_learned
    from neurorad.segment.registry import open_model
    from neurorad.workflows.glioma import train as glioma_train

    cases = list(glioma_train.glioma_cases(2))
    for _cid, chans, lab in cases:
        t1, t1c, _t2, flair = (np.asarray(c.data) for c in chans)
        y = np.asarray(lab.data)
        assert lab.spacing_mm == pytest.approx((2.0, 2.0, 2.0)) and set(np.unique(y)) <= {0, 1, 2, 3}
        assert all(c.spatial_shape == lab.spatial_shape and np.allclose(c.affine, lab.affine) for c in chans)
        brain = (flair > 0) | (t1 > 0)
        normal = brain & (y == 0)
        assert np.median(flair[y == 2]) > 1.15 * np.median(flair[normal])  # T2-FLAIR hyperintensity
        assert np.median(t1c[y == 3] / np.maximum(t1[y == 3], 1e-3)) > np.median(t1c[normal] / t1[normal])
        assert not (y[~brain] > 0).any()
    from neurorad.segment.dataset import write_dataset

    write_dataset(tmp_path / "run" / "dataset", cases, ["T1", "T1C", "T2", "FLAIR"],
                  dict(enumerate(glioma_train.LABEL_NAMES)))
    monkeypatch.setitem(glioma_train.CONFIG, "data", {**glioma_train.CONFIG["data"], "spacing_mm": [6.0, 6.0, 6.0],
                                                      "patch_size": [32, 32, 32], "val_fraction": 0.5})
    monkeypatch.setitem(glioma_train.CONFIG, "model", {**glioma_train.CONFIG["model"], "features": [4, 4, 8, 8, 8]})
    monkeypatch.setitem(glioma_train.CONFIG, "inference", {**glioma_train.CONFIG["inference"],
                                                           "patch_size": [32, 32, 32]})
    assert glioma_train.main(["--out", str(tmp_path / "run"), "--epochs", "1", "--iterations", "1"]) == 0
    folder = tmp_path / "run" / "run" / "model"
    card = open_model(folder).card
    assert card["name"] == "glioma-unet3d" and "SYNTHETIC" in card["training_data"]
    assert "neurorad.workflows.glioma.train" in card["validation"]["command"]
    _cid, chans, _lab = cases[0]
    seqs = dict(zip(("t1", "t1c", "t2", "flair"), chans, strict=True))
    brain = np.asarray(chans[3].data) > 0
    seg = segment_glioma_learned(seqs, brain, str(folder))
    assert seg.classes.shape == brain.shape and not seg.classes[~brain].any()
