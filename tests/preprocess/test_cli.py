"""The preprocess commands end to end through the real ``neurorad`` entry point (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from neurorad.image.nifti import load_nifti, save_nifti
from neurorad.image.volume import Volume
from neurorad.preprocess.transforms import AffineTransform, resample


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from neurorad.cli import main; main()", "--quiet", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def files(tmp_path_factory, colin_head, colin_brain_mask):
    d = tmp_path_factory.mktemp("cli")
    aff = colin_head.affine.copy()
    aff[:3, :3] *= 2
    small = Volume(colin_head.data[::2, ::2, ::2].copy(), aff)
    true = AffineTransform.from_euler((0, 0, 8.0), (6.0, -4.0, 3.0), center_mm=tuple(small.center_mm))
    moved = resample(small, small, true.inverse())
    save_nifti(small, d / "fixed.nii.gz")
    save_nifti(moved, d / "moving.nii.gz")
    save_nifti(small.with_data(colin_brain_mask[::2, ::2, ::2]), d / "mask.nii.gz")
    save_nifti(colin_head, d / "head.nii.gz")
    return d, true


def test_register_writes_image_and_transform(files):
    d, true = files
    r = _run("register", str(d / "fixed.nii.gz"), str(d / "moving.nii.gz"), "--out", str(d / "reg.nii.gz"),
             "--transform", str(d / "t.json"))
    assert r.returncode == 0, r.stderr
    t = AffineTransform.load(d / "t.json")
    pts = np.random.default_rng(0).normal(scale=40, size=(200, 3))
    assert np.linalg.norm(t.apply(pts) - true.apply(pts), axis=1).mean() < 1.0
    assert load_nifti(d / "reg.nii.gz").same_grid(load_nifti(d / "fixed.nii.gz"))
    assert json.loads((d / "reg.json").read_text())["backend"] == "elastix"


def test_normalize_and_bias_correct(files):
    d, _ = files
    r = _run("normalize", str(d / "fixed.nii.gz"), "--out", str(d / "z.nii.gz"), "--method", "zscore",
             "--mask", str(d / "mask.nii.gz"))
    assert r.returncode == 0, r.stderr
    z = load_nifti(d / "z.nii.gz").data[load_nifti(d / "mask.nii.gz").data > 0]
    assert abs(z.mean()) < 1e-3 and abs(z.std() - 1) < 1e-3
    # N4 on the image times a known smooth multiplicative field (a ramp, x0.75 .. x1.33 across the
    # head): the corrected image must be closer to the unbiased one
    fixed = load_nifti(d / "fixed.nii.gz")
    inside = (load_nifti(d / "mask.nii.gz").data > 0) & (fixed.data > np.percentile(fixed.data, 50))
    ramp = np.linspace(-0.29, 0.29, fixed.data.shape[0])[:, None, None] * np.ones(fixed.data.shape)
    save_nifti(fixed.with_data((fixed.data * np.exp(ramp)).astype(np.float32)), d / "biased.nii.gz")
    r = _run("bias-correct", str(d / "biased.nii.gz"), "--out", str(d / "n4.nii.gz"), "--shrink", "2",
             "--iterations", "20,20")
    assert r.returncode == 0, r.stderr
    n4 = load_nifti(d / "n4.nii.gz")
    assert n4.same_grid(fixed)
    # the field N4 removed follows the ramp we applied (correlation) and the residual shrinks; with
    # these short settings (shrink 2, 20+20 iterations) it recovers about 40 % of the ramp's amplitude
    removed = np.log(load_nifti(d / "biased.nii.gz").data[inside]) - np.log(np.maximum(n4.data[inside], 1e-6))
    assert np.corrcoef(removed, ramp[inside])[0, 1] > 0.9
    before = np.std(ramp[inside])
    after = np.std(np.log(np.maximum(n4.data[inside], 1e-6)) - np.log(fixed.data[inside]))
    assert after < 0.8 * before, (after, before)


def test_brain_extract_deepbet(files, colin_brain_mask):
    d, _ = files
    r = _run("brain-extract", str(d / "head.nii.gz"), "--out", str(d / "bm.nii.gz"), "--brain", str(d / "b.nii.gz"))
    assert r.returncode == 0, r.stderr
    m = load_nifti(d / "bm.nii.gz").data > 0
    assert 2 * (m & colin_brain_mask).sum() / (m.sum() + colin_brain_mask.sum()) > 0.93
    side = json.loads((d / "bm.json").read_text())
    assert side["engine"] == "deepbet" and len(side["weights_sha256"]) == 64


def test_bad_input_gives_clear_error_and_no_output(files, tmp_path):
    d, _ = files
    r = _run("brain-extract", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "m.nii.gz"))
    assert r.returncode != 0 and "missing.nii.gz" in r.stderr and "not found" in r.stderr
    assert not (tmp_path / "m.nii.gz").exists()
    r = _run("normalize", str(d / "fixed.nii.gz"), "--out", str(tmp_path / "x.nii.gz"), "--method", "magic")
    assert r.returncode != 0 and "unknown method" in r.stderr
    r = _run("brain-extract", str(d / "fixed.nii.gz"), "--out", str(tmp_path / "m.nii.gz"), "--engine", "fsl")
    assert r.returncode != 0 and "unknown engine" in r.stderr
    # a registration that cannot succeed fails with exit code 3 and writes nothing
    noise = load_nifti(d / "fixed.nii.gz")
    save_nifti(noise.with_data(np.random.default_rng(0).uniform(0, 100, noise.spatial_shape).astype(np.float32)),
               tmp_path / "noise.nii.gz")
    r = _run("register", str(d / "fixed.nii.gz"), str(tmp_path / "noise.nii.gz"), "--out", str(tmp_path / "r.nii.gz"))
    assert r.returncode == 3 and "registration failed" in r.stderr
    assert not (tmp_path / "r.nii.gz").exists()
