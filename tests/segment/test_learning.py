"""The 2D, 2.5D and 3D networks learn a planted task and predict on another grid (world geometry checked)."""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.segment import Segmenter, load_segmenter
from neurorad.segment.planted import grid, random_scene, render_scene
from neurorad.segment.train import parse_config, train
from tests.segment.conftest import tiny_config


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask).mean(0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["unet2d", "unet25d", "unet3d"])
def test_network_learns_planted_task_and_predicts_on_another_grid(arch, planted_dataset, tmp_path):
    cfg = parse_config(tiny_config(planted_dataset, arch), tmp_path)
    res = train(cfg, tmp_path / "run")
    assert res.val_dice >= 0.8, f"{arch} reached validation Dice {res.val_dice:.3f}"
    seg = load_segmenter(res.model_dir)
    assert isinstance(seg, Segmenter)

    # a new scene on a grid unlike the training one: other spacing, shape, and flipped axes (LPS-like)
    rng = np.random.default_rng(123)
    blobs = random_scene(rng, extent_mm=44.0, n_blobs=2, radius_mm=(6.0, 8.0))
    shape, aff = grid((38, 30, 26), (1.2, 1.4, 1.8), axcodes_flip=(True, True, False))
    img, truth = render_scene(blobs, shape, aff, seed=5)
    out = seg.predict([img])
    assert out.probabilities.spatial_shape == shape
    assert np.allclose(out.probabilities.affine, aff)
    assert out.probabilities.shape[-1] == 2
    np.testing.assert_allclose(np.asarray(out.probabilities.data).sum(-1), 1.0, atol=1e-5)
    pred = out.label_map().data > 0
    d = _dice(pred, truth.data > 0)
    assert d >= 0.7, f"{arch}: Dice {d:.3f} on the new grid"
    # world geometry: the predicted blobs sit where the truth is, in RAS millimetres
    err = np.linalg.norm(_centroid_mm(pred, aff) - _centroid_mm(truth.data > 0, aff))
    assert err < 1.5, f"{arch}: centroid off by {err:.2f} mm"
    assert out.record["name"] == f"planted-{arch}" and len(out.record["weights_sha256"]) == 64
