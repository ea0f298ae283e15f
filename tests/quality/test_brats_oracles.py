"""Fusion against BraTS Toolkit ``Fusionator.fuse`` and lesion-wise metrics against brats-evaluation
(panoptica). Both pin numpy < 2, so they run in the oracle environment ``.venv-brats`` (conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.evaluate.lesions import brats_lesionwise
from neurorad.quality import fusion
from tests.quality._oracle import run_oracle

pytestmark = pytest.mark.slow


def _candidates(seed: int, n: int = 5, shape=(30, 28, 26)):
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    out = []
    for _ in range(n):
        c = np.array(shape) / 2 + rng.normal(0, 1.5, 3)
        r = rng.uniform(6, 10)
        m = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r
        m ^= rng.random(shape) < 0.01  # speckle so that votes differ voxel by voxel
        out.append(m.astype(np.uint8))
    return out


@pytest.mark.parametrize("method", ["mav", "simple"])
def test_fusion_matches_brats_toolkit(oracle_python, tmp_path, method):
    cands = _candidates(11)
    for i, c in enumerate(cands):
        np.save(tmp_path / f"c{i}.npy", c)
    out = run_oracle(oracle_python, f"""
        import json, glob, numpy as np, SimpleITK as sitk
        from brats_toolkit.fusionator import Fusionator
        paths = []
        for i, f in enumerate(sorted(glob.glob("c*.npy"))):
            p = f"c{{i}}.nii.gz"; sitk.WriteImage(sitk.GetImageFromArray(np.load(f)), p); paths.append(p)
        Fusionator(verbose=False).fuse(paths, "fused/out.nii.gz", method="{method}")
        arr = sitk.GetArrayFromImage(sitk.ReadImage("fused/out.nii.gz"))
        np.save("fused.npy", arr)
        print(json.dumps({{"sum": int(arr.sum())}}))
    """, tmp_path)
    ref = np.load(tmp_path / "fused.npy") != 0
    ours = fusion.fuse(cands, method)
    assert out["sum"] > 0
    assert np.array_equal(ours, ref)


def _lesion_maps(seed: int, shape=(48, 48, 40)):
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for _ in range(7):
        c = rng.integers(5, np.array(shape) - 8)
        s = rng.integers(2, 6, 3)
        truth[c[0]:c[0] + s[0], c[1]:c[1] + s[1], c[2]:c[2] + s[2]] = 1
        if rng.random() < 0.75:  # detected, shifted a little
            d = rng.integers(-1, 2, 3)
            p0 = np.clip(c + d, 0, None)
            pred[p0[0]:p0[0] + s[0], p0[1]:p0[1] + s[1] + 1, p0[2]:p0[2] + s[2]] = 1
    for _ in range(2):  # false positives
        c = rng.integers(2, np.array(shape) - 4)
        pred[c[0]:c[0] + 2, c[1]:c[1] + 3, c[2]:c[2] + 2] = 1
    return pred, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lesionwise_matches_brats_evaluation(oracle_python, tmp_path, seed):
    pred, truth = _lesion_maps(seed)
    np.save(tmp_path / "pred.npy", pred * 2)  # label 2 = the "snfh" group of the glioma config
    np.save(tmp_path / "ref.npy", truth * 2)
    ref = run_oracle(oracle_python, """
        import json, warnings, numpy as np
        warnings.filterwarnings("ignore")
        from importlib.resources import files
        from panoptica import Panoptica_Evaluator
        ev = Panoptica_Evaluator.load_from_config(str(files("brats_evaluation").joinpath("configs", "config_gli.yaml")))
        r = ev.evaluate(np.load("pred.npy").astype(np.uint8), np.load("ref.npy").astype(np.uint8))["snfh"].to_dict(True)
        print(json.dumps({k: float(r[k]) for k in ("tp", "fp", "fn", "prec", "rec", "rq", "sq_dsc", "sq_hd95")}))
    """, tmp_path)
    ours = brats_lesionwise(pred, truth)
    assert (ours["tp"], ours["fp"], ours["fn"]) == (ref["tp"], ref["fp"], ref["fn"])
    assert ours["precision"] == pytest.approx(ref["prec"])
    assert ours["recall"] == pytest.approx(ref["rec"])
    assert ours["f1"] == pytest.approx(ref["rq"])
    assert ours["sq_dsc"] == pytest.approx(ref["sq_dsc"], rel=1e-9)
    assert ours["sq_hd95_mm"] == pytest.approx(ref["sq_hd95"], rel=1e-6)
