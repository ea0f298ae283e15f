"""``neurorad evaluate seg|ensemble|readers`` end to end on small NIfTI files, and bad input."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurorad.evaluate.case import METRIC_COLUMNS
from neurorad.evaluate.segmentation import segmentation_metrics

AFF = np.diag([0.9, 1.1, 2.0, 1.0])


def _save(arr, path: Path, affine=AFF, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr).astype(dtype), affine), str(path))


def _cli(*args) -> SimpleNamespace:
    """Run ``neurorad -q ARGS`` in-process through the real entry point (exit code + stderr)."""
    from neurorad.cli import main

    err = io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["neurorad", "-q", *map(str, args)]), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return SimpleNamespace(returncode=code, stderr=err.getvalue())


def _ball(shape, c, r):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    rng = np.random.default_rng(0)
    shape = (30, 28, 20)
    truths, preds = {}, {}
    for i in range(4):
        t = _ball(shape, (15, 14, 10), 5) | _ball(shape, (5, 5, 5), 2)
        p = _ball(shape, (15 + i % 2, 14, 10), 5 - 0.5 * i)
        if i == 3:
            p |= _ball(shape, (24, 22, 15), 2)
        truths[f"case{i}"], preds[f"case{i}"] = t, p
        _save(t, root / "truth" / f"case{i}.nii.gz")
        _save(p, root / "pred" / f"case{i}.nii.gz")
        prob = np.clip(np.where(p, 0.8, 0.1) + rng.normal(0, 0.05, shape), 0, 1)
        _save(prob, root / "prob" / f"case{i}.nii.gz", dtype=np.float32)
        _save(np.ones(shape), root / "brain" / f"case{i}.nii.gz")
        img = 50 + 100 * t + rng.normal(0, 5 + i, shape)
        img[:3] = rng.normal(0, 2, (3, *shape[1:]))
        _save(img, root / "img" / f"case{i}.nii.gz", dtype=np.float32)
    pd.DataFrame({"case": [f"case{i}" for i in range(4)], "site": ["A", "A", "B", "B"]}).to_csv(root / "sites.csv",
                                                                                               index=False)
    return root, truths, preds


def test_seg_end_to_end(data, tmp_path):
    root, truths, preds = data
    out = tmp_path / "out"
    r = _cli("evaluate", "seg", "--pred", root / "pred", "--truth", root / "truth", "--prob", root / "prob",
             "--brain", root / "brain", "--site-table", root / "sites.csv", "--images", root / "img", "--brats",
             "--out", out)
    assert r.returncode == 0, r.stderr
    m = pd.read_csv(out / "metrics.csv")
    assert list(m.columns[:1]) == ["case"] and list(m.columns[2:2 + 11]) == list(METRIC_COLUMNS[:11])
    assert len(m) == 4
    ref = segmentation_metrics(preds["case2"], truths["case2"], (0.9, 1.1, 2.0))
    row = m[m.case == "case2"].iloc[0]
    assert row["dice"] == pytest.approx(ref["dice"], rel=1e-5)
    assert row["hd95_mm"] == pytest.approx(ref["hd95_mm"], rel=1e-5)
    assert row["n_true_lesions"] == 2
    assert "ece_pct" in m and "brats_f1" in m and "auroc" in m
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    # the quality table holds each case's metrics (recomputed here from the same image) ...
    from statsmodels.stats.multitest import multipletests

    from neurorad.quality.image_metrics import image_quality_metrics

    q = pd.read_csv(out / "quality.csv").set_index("case")
    assert sorted(q.index) == [f"case{i}" for i in range(4)]
    direct = image_quality_metrics(nib.load(root / "img" / "case2.nii.gz").get_fdata(dtype=np.float32))
    for name, value in direct.items():
        assert q.loc["case2", name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    # ... and the correlation table's q-values are the BH adjustment of its p-values (statsmodels)
    corr = pd.read_csv(out / "quality_correlation.csv")
    ok = corr["p"].notna()
    assert ok.sum() > 0
    np.testing.assert_allclose(corr.loc[ok, "q"], multipletests(corr.loc[ok, "p"], method="fdr_bh")[1], atol=2e-6)


def test_seg_manifest(data, tmp_path):
    root, _, _ = data
    man = tmp_path / "m.csv"
    pd.DataFrame({"case": ["a", "b"], "pred": [root / "pred/case0.nii.gz", root / "pred/case1.nii.gz"],
                  "truth": [root / "truth/case0.nii.gz", root / "truth/case1.nii.gz"]}).to_csv(man, index=False)
    r = _cli("evaluate", "seg", "--pred", man, "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert list(pd.read_csv(tmp_path / "o" / "metrics.csv")["case"]) == ["a", "b"]


def test_seg_bad_inputs(data, tmp_path):
    root, truths, _ = data
    bad = tmp_path / "bad"
    _save(truths["case0"], bad / "aff" / "case0.nii.gz", affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    r = _cli("evaluate", "seg", "--pred", root / "pred", "--truth", bad / "aff", "--out", tmp_path / "o1")
    assert r.returncode != 0 and "affine" in r.stderr and "case0.nii.gz" in r.stderr
    assert not (tmp_path / "o1" / "metrics.csv").exists()
    _save(truths["case0"][:, :, :10], bad / "shape" / "case0.nii.gz")
    r = _cli("evaluate", "seg", "--pred", root / "pred", "--truth", bad / "shape", "--out", tmp_path / "o2")
    assert r.returncode != 0 and "shape" in r.stderr
    _save(truths["case0"] * 3, bad / "lab" / "case0.nii.gz")
    r = _cli("evaluate", "seg", "--pred", root / "pred", "--truth", bad / "lab", "--out", tmp_path / "o3")
    assert r.returncode != 0 and "binary" in r.stderr
    _save(np.full(truths["case0"].shape, 1.5), bad / "prob" / "case0.nii.gz", dtype=np.float32)
    man = tmp_path / "m.csv"
    pd.DataFrame({"case": ["a"], "pred": [root / "pred/case0.nii.gz"], "truth": [root / "truth/case0.nii.gz"],
                  "prob": [bad / "prob" / "case0.nii.gz"]}).to_csv(man, index=False)
    r = _cli("evaluate", "seg", "--pred", man, "--out", tmp_path / "o4")
    assert r.returncode != 0 and "[0, 1]" in r.stderr
    assert not (tmp_path / "o4").exists() or not any((tmp_path / "o4").iterdir())


def test_ensemble_and_readers(data, tmp_path):
    root, truths, preds = data
    cands = []
    for k in range(3):
        for c, p in preds.items():
            q = p.copy()
            if k == 2 and c == "case1":
                q[:] = False  # an empty candidate must raise an alarm
            _save(q, tmp_path / f"cand{k}" / f"{c}.nii.gz")
        cands += ["--candidates", tmp_path / f"cand{k}"]
    # the form: --candidates DIR DIR DIR
    r = _cli("evaluate", "ensemble", "--candidates", *cands[1::2], "--truth", root / "truth", "--out", tmp_path / "ens")
    assert r.returncode == 0, r.stderr
    a = pd.read_csv(tmp_path / "ens" / "alarms.csv")
    assert a.iloc[0]["case"] == "case1" and a.iloc[0]["alarms"] >= 1
    # the three candidates of case0 agree, so the fused mask is exactly that mask
    fused = nib.load(tmp_path / "ens" / "fused" / "case0.nii.gz").get_fdata() > 0
    assert np.array_equal(fused, preds["case0"])
    r = _cli("evaluate", "ensemble", *cands, "--out", tmp_path / "ens2")  # repeated option, no truth
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "ens2" / "alarms.csv").iloc[0]["case"] == "case1"
    rng = np.random.default_rng(1)
    rows = []
    for case in range(20):
        truth = int(rng.random() < 0.5)
        for rd in "ABC":
            for phase in ("1", "2"):
                call = truth if rng.random() < (0.7 if phase == "1" else 0.9) else 1 - truth
                rows.append({"case": case, "patient": case, "reader": rd, "phase": phase, "truth": truth,
                             "call": call, "rating": call})
    pd.DataFrame(rows).query("phase == '2'").drop(columns="phase").to_csv(tmp_path / "reads.csv", index=False)
    r = _cli("evaluate", "readers", "--table", tmp_path / "reads.csv", "--out", tmp_path / "rd")
    assert r.returncode == 0, r.stderr
    st = pd.read_csv(tmp_path / "rd" / "reader_stats.csv")
    assert "fleiss_kappa" in set(st["statistic"])
    pd.DataFrame(rows).to_csv(tmp_path / "reads2.csv", index=False)
    r = _cli("evaluate", "readers", "--table", tmp_path / "reads2.csv", "--out", tmp_path / "rd2")
    assert r.returncode == 0, r.stderr
    stats2 = pd.read_csv(tmp_path / "rd2" / "reader_stats.csv")["statistic"]
    assert any(s.startswith("phase_odds_ratio") for s in stats2)


def test_seg_protocol_summary(data, tmp_path):
    from neurorad.evaluate.case import evaluate_case, protocol_summary

    root, truths, preds = data
    out = tmp_path / "out"
    r = _cli("evaluate", "seg", "--pred", root / "pred", "--truth", root / "truth", "--protocol", "cmb",
             "--connectivity", "6", "--out", out)
    assert r.returncode == 0, r.stderr
    s = pd.read_csv(out / "protocol_summary.csv").iloc[0]
    assert s["protocol"] == "cmb" and s["connectivity"] == 6
    rows, res = zip(*(evaluate_case(preds[c], truths[c], (0.9, 1.1, 2.0), connectivity=6, pred_truth_coverage=0.4)
                      for c in sorted(truths)), strict=True)
    ref = protocol_summary(rows, res)
    for k in ("pixel_dice", "lesion_precision_data", "lesion_recall_data", "patient_fnr"):
        assert s[k] == pytest.approx(ref[k], rel=1e-5, nan_ok=True)
    bad = _cli("evaluate", "seg", "--pred", root / "pred", "--truth", root / "truth", "--protocol", "x", "--out", out)
    assert bad.returncode == 2 and "protocol" in bad.stderr
