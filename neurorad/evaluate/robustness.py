"""Robustness: FGSM adversarial attacks and natural perturbations, with per-patient metric curves.

* FGSM (Goodfellow, Shlens & Szegedy 2015): x_adv = x + epsilon * sign(grad_x L(f(x), y)) for any
  differentiable PyTorch segmentation model ``f`` returning logits of shape (B, C, ...): L is
  binary cross-entropy with logits for C = 1, cross-entropy for C > 1 (mean over voxels), or a
  loss you pass. ``clip`` (e.g. (0, 1)) bounds the perturbed intensities. Epsilons are in the
  model's input intensity units; :data:`EPSILONS` is the grid of the holistic-evaluation paper
  (inputs normalised to [0, 1]).
* Natural perturbations (numpy, on one volume): additive Gaussian noise, Rician noise
  sqrt((x + n1)^2 + n2^2), a smooth multiplicative bias field exp(sum of random low-order
  polynomial terms) with a given peak log-amplitude, Gaussian blur (sigma in mm), and ghosting
  (k-space lines every ``period``-th along the phase axis scaled, which replicates the image
  shifted by N / period, as MR ghosting does; cf. TorchIO ``RandomGhosting``).
* :func:`confidence_band`: per level, mean metric over patients with a 95 % t-interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, stats

EPSILONS = (0.0, 0.005, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def fgsm(model, x, y, epsilon: float, loss_fn: Callable | None = None, clip: tuple[float, float] | None = None):
    """One FGSM step on a batch ``x`` (torch tensor) with targets ``y``; returns the detached x_adv.

    ``y``: for C = 1, a float tensor shaped like the logits; for C > 1, class indices (B, ...).
    The model is put in eval mode and its parameters are not changed.
    """
    import torch

    model.eval()
    x_adv = x.detach().clone().requires_grad_(True)
    logits = model(x_adv)
    if loss_fn is None:
        if logits.shape[1] == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
        else:
            loss = torch.nn.functional.cross_entropy(logits, y.long())
    else:
        loss = loss_fn(logits, y)
    (grad,) = torch.autograd.grad(loss, x_adv)
    out = x.detach() + epsilon * grad.sign()
    if clip is not None:
        out = out.clamp(*clip)
    return out.detach()


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def gaussian_noise(img: np.ndarray, sigma: float, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Additive zero-mean Gaussian noise with standard deviation ``sigma`` (intensity units)."""
    return img + _rng(seed).normal(0.0, sigma, img.shape)


def rician_noise(img: np.ndarray, sigma: float, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Rician noise: magnitude of the image plus complex Gaussian noise of std ``sigma`` per channel."""
    r = _rng(seed)
    return np.sqrt((img + r.normal(0.0, sigma, img.shape)) ** 2 + r.normal(0.0, sigma, img.shape) ** 2)


def bias_field(img: np.ndarray, strength: float, order: int = 3, seed: int | np.random.Generator | None = 0):
    """Multiply by exp(p(x)) with p a random polynomial of ``order`` scaled so that max |p| = ``strength``."""
    r = _rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in img.shape], indexing="ij")
    p = np.zeros(img.shape)
    for i in range(order + 1):
        for j in range(order + 1 - i):
            for k in range(order + 1 - i - j):
                if i + j + k:
                    p += r.uniform(-1, 1) * grids[0] ** i * grids[1] ** j * grids[2] ** k
    m = np.abs(p).max()
    return img * np.exp(strength * p / m) if m > 0 else img.copy()


def blur(img: np.ndarray, sigma_mm: float, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma_mm`` in millimetres."""
    return ndimage.gaussian_filter(img, [sigma_mm / s for s in spacing_mm]) if sigma_mm > 0 else img.copy()


def ghosting(img: np.ndarray, intensity: float, period: int = 4, axis: int = 1) -> np.ndarray:
    """Ghosting: scale every ``period``-th k-space line along ``axis`` by (1 - intensity)."""
    if intensity == 0:
        return img.copy()
    k = np.fft.fftn(img)
    centre = [slice(None)] * img.ndim
    centre[axis] = 0
    dc_line = k[tuple(centre)].copy()
    sl = [slice(None)] * img.ndim
    sl[axis] = slice(0, None, period)
    k[tuple(sl)] *= 1.0 - intensity
    k[tuple(centre)] = dc_line  # keep the k-space centre line, as TorchIO does
    return np.abs(np.fft.ifftn(k))


PERTURBATIONS: dict[str, Callable[..., np.ndarray]] = {
    "gaussian_noise": gaussian_noise, "rician_noise": rician_noise, "bias_field": bias_field,
    "blur": blur, "ghosting": ghosting,
}


def confidence_band(df: pd.DataFrame, metric: str, level: str = "level", group: str | None = "perturbation",
                    confidence: float = 0.95) -> pd.DataFrame:
    """Mean of ``metric`` over patients per level (and group) with a t-based confidence interval."""
    keys = [group, level] if group else [level]
    rows = []
    for key, g in df.groupby(keys, sort=True):
        v = g[metric].to_numpy(float)
        v = v[np.isfinite(v)]
        n = v.size
        mean = float(v.mean()) if n else np.nan
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key, strict=True)), "n": n, "mean": mean,
                     "ci_low": mean - half, "ci_high": mean + half})
    return pd.DataFrame(rows)


def fgsm_sweep(
    model,
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    metrics_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    epsilons: Sequence[float] = EPSILONS,
    threshold: float = 0.5,
    clip: tuple[float, float] | None = None,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Per patient and epsilon: FGSM on the (1, 1, ...) input, threshold the sigmoid output, every metric.

    ``images[i]`` and ``truths[i]`` are 3D arrays; ``metrics_fn(pred_bool, truth_bool)`` returns the
    metrics (e.g. ``functools.partial(segmentation_metrics, spacing_mm=...)``). One-channel
    (sigmoid) models; a long table with columns case, perturbation="fgsm", level=epsilon, metrics.
    """
    import torch

    rows = []
    for i, (img, t) in enumerate(zip(images, truths, strict=True)):
        x = torch.from_numpy(np.asarray(img, np.float32))[None, None]
        y = torch.from_numpy(np.asarray(t, np.float32))[None, None]
        for eps in epsilons:
            xa = fgsm(model, x, y, eps, clip=clip)
            with torch.no_grad():
                prob = torch.sigmoid(model(xa))[0, 0].numpy()
            rows.append({"case": i, "perturbation": "fgsm", "level": eps,
                         **metrics_fn(prob >= threshold, np.asarray(t) != 0)})
        if progress:
            progress(1)
    return pd.DataFrame(rows)


def perturbation_sweep(
    predict: Callable[[np.ndarray], np.ndarray],
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    metrics_fn: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    levels: dict[str, Sequence[float]],
    seed: int = 0,
) -> pd.DataFrame:
    """Per patient, perturbation and level: perturb, ``predict`` (image -> binary mask), every metric."""
    rows = []
    rng = np.random.default_rng(seed)
    for i, (img, t) in enumerate(zip(images, truths, strict=True)):
        for name, lv in levels.items():
            fn = PERTURBATIONS[name]
            for lev in lv:
                if name in ("gaussian_noise", "rician_noise", "bias_field"):
                    xp = fn(np.asarray(img, float), lev, seed=rng)
                else:
                    xp = fn(np.asarray(img, float), lev)
                rows.append({"case": i, "perturbation": name, "level": lev,
                             **metrics_fn(np.asarray(predict(xp)) != 0, np.asarray(t) != 0)})
    return pd.DataFrame(rows)
