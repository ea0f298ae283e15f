"""FGSM against the analytic gradient of a voxel-wise logistic model; perturbations and bands."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from neurorad.evaluate import robustness
from neurorad.evaluate.segmentation import segmentation_metrics


class Logistic(torch.nn.Module):
    """logit = w * x + b per voxel (a 1x1x1 convolution): the analytic case."""

    def __init__(self, w: float, b: float):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(w)
            self.conv.bias.fill_(b)

    def forward(self, x):
        return self.conv(x)


def test_fgsm_equals_analytic_logistic_gradient():
    rng = np.random.default_rng(0)
    x = rng.random((1, 1, 6, 7, 5)).astype(np.float32)
    y = (rng.random(x.shape) < 0.5).astype(np.float32)
    w, b = -3.0, 1.2
    for eps in (0.0, 0.01, 0.4):
        adv = robustness.fgsm(Logistic(w, b), torch.from_numpy(x), torch.from_numpy(y), eps).numpy()
        # d/dx mean BCE(sigmoid(w x + b), y) = (sigmoid(w x + b) - y) * w / N
        grad = (1 / (1 + np.exp(-(w * x + b))) - y) * w
        np.testing.assert_allclose(adv, x + eps * np.sign(grad), atol=1e-6)
    clipped = robustness.fgsm(Logistic(w, b), torch.from_numpy(x), torch.from_numpy(y), 1.0, clip=(0, 1)).numpy()
    assert clipped.min() >= 0 and clipped.max() <= 1


def test_fgsm_sweep_degrades_and_bands():
    rng = np.random.default_rng(1)
    imgs, truths = [], []
    for _ in range(4):
        t = np.zeros((12, 12, 12), bool)
        t[3:9, 3:9, 3:9] = True
        imgs.append(np.clip(t * 0.8 + 0.1 + rng.normal(0, 0.05, t.shape), 0, 1))
        truths.append(t)
    model = Logistic(10.0, -5.0)  # threshold at x = 0.5
    df = robustness.fgsm_sweep(model, imgs, truths, partial(segmentation_metrics, spacing_mm=(1, 1, 1)),
                               epsilons=(0.0, 0.05, 0.6), clip=(0, 1))
    mean = df.groupby("level")["dice"].mean()
    assert mean[0.0] > 0.99 and mean[0.6] < 0.1 and mean[0.05] <= mean[0.0]
    band = robustness.confidence_band(df, "dice")
    assert len(band) == 3
    v = df[df.level == 0.05]["dice"].to_numpy()
    half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    row = band[band.level == 0.05].iloc[0]
    assert row["ci_high"] - row["mean"] == pytest.approx(half)
    assert robustness.EPSILONS == (0.0, 0.005, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def test_natural_perturbations():
    rng = np.random.default_rng(2)
    img = np.zeros((32, 32, 32))
    img[8:24, 8:24, 8:24] = 100.0
    n = robustness.gaussian_noise(img, 5.0, seed=rng)
    assert np.std(n - img) == pytest.approx(5.0, rel=0.03)
    r = robustness.rician_noise(np.zeros((40, 40, 40)), 2.0, seed=0)
    assert r.mean() == pytest.approx(2.0 * np.sqrt(np.pi / 2), rel=0.02)  # Rayleigh mean on zero signal
    bf = robustness.bias_field(img + 1, 0.3, seed=0)
    ratio = bf / (img + 1)
    assert np.abs(np.log(ratio)).max() == pytest.approx(0.3, abs=1e-9)
    bl = robustness.blur(img, 2.0, (1, 1, 2))
    assert bl.sum() == pytest.approx(img.sum(), rel=1e-6) and bl.max() < img.max() + 1e-9
    small = np.zeros((32, 32, 32))
    small[10:20, 10:20, 10:20] = 100.0
    g = robustness.ghosting(small, 0.5, period=4, axis=1)
    assert g.mean() == pytest.approx(small.mean(), rel=0.15)  # DC kept; magnitude adds a little
    assert g[15, 0:6, 15].max() > 1.0  # a ghost appears outside the object along the phase axis
    df = robustness.perturbation_sweep(lambda x: x > 50, [img], [img > 50], partial(segmentation_metrics),
                                       {"gaussian_noise": [0, 40], "blur": [0, 3]})
    assert isinstance(df, pd.DataFrame) and len(df) == 4
    assert df[(df.perturbation == "gaussian_noise") & (df.level == 40)]["dice"].iloc[0] < 1.0
