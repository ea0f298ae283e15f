"""Small planted-task phantoms for testing that a network learns (seconds on a CPU).

A smooth random "tissue" background with noise and a few brighter ellipsoids (label 1, the
planted target), optionally a darker ellipsoid class (label 2). The geometry is defined in
world millimetres, so the same scene can be sampled on any grid (different spacing,
orientation or field of view) and the truth of each sampling is known exactly: this is how the
tests check that a model trained on one grid predicts on another with its output on the input
grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from neurorad.image.volume import Volume


@dataclass(frozen=True)
class Blob:
    centre_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    label: int


def random_scene(rng: np.random.Generator, extent_mm: float = 48.0, n_blobs: int = 3, classes: int = 1,
                 radius_mm: tuple[float, float] = (4.0, 8.0)) -> list[Blob]:
    """Blobs inside a cube of side ``extent_mm`` centred on the world origin."""
    blobs = []
    half = extent_mm / 2 - radius_mm[1] - 2
    for i in range(n_blobs):
        c = tuple(float(v) for v in rng.uniform(-half, half, 3))
        r = tuple(float(v) for v in rng.uniform(*radius_mm, 3))
        blobs.append(Blob(c, r, 1 + (i % classes)))  # type: ignore[arg-type]
    return blobs


def grid(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float],
         axcodes_flip: tuple[bool, bool, bool] = (False, False, False)) -> tuple[tuple[int, int, int], np.ndarray]:
    """A grid centred on the world origin; ``axcodes_flip`` flips axes (e.g. LPS-like storage)."""
    aff = np.diag([*(-s if f else s for s, f in zip(spacing_mm, axcodes_flip, strict=True)), 1.0])
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return shape, aff


def render_scene(blobs: list[Blob], shape: tuple[int, int, int], affine: np.ndarray, seed: int = 0,
                 contrast: float = 1.5, noise: float = 0.25) -> tuple[Volume, Volume]:
    """Image and truth labels of ``blobs`` sampled on the grid ``(shape, affine)``."""
    rng = np.random.default_rng(seed)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)
    labels = np.zeros(len(xyz), np.uint8)
    for b in blobs:
        d = ((xyz - np.asarray(b.centre_mm, np.float32)) / np.asarray(b.radii_mm, np.float32)) ** 2
        labels[d.sum(1) <= 1.0] = b.label
    labels = labels.reshape(shape)
    # smooth world-space background: low-frequency cosines of the world coordinates
    k = rng.normal(0, 1.0 / 30.0, (3, 3))
    bg = sum(np.cos(xyz @ k[i] + rng.uniform(0, np.pi)) for i in range(3)).reshape(shape) * 0.3
    img = 1.0 + bg.astype(np.float32)
    img = np.where(labels == 1, img + contrast, img)
    img = np.where(labels == 2, img - contrast, img)
    img = ndimage.gaussian_filter(img, 0.5) + rng.normal(0, noise, shape).astype(np.float32)
    return Volume(img.astype(np.float32), affine, {"contrast": "t1"}), Volume(labels, affine.copy(), {})


def planted_cases(n: int, seed: int = 0, shape: tuple[int, int, int] = (32, 32, 32),
                  spacing_mm: tuple[float, float, float] = (1.5, 1.5, 1.5), classes: int = 1,
                  n_blobs: int = 3) -> list[tuple[str, list[Volume], Volume]]:
    """``n`` cases ``(case_id, [image], label)`` ready for :func:`neurorad.segment.dataset.write_dataset`."""
    rng = np.random.default_rng(seed)
    extent = float(min(s * sp for s, sp in zip(shape, spacing_mm, strict=True)))
    out = []
    for i in range(n):
        blobs = random_scene(rng, extent, n_blobs, classes)
        img, lab = render_scene(blobs, *grid(shape, spacing_mm), seed=int(rng.integers(1 << 31)))
        out.append((f"case_{i:03d}", [img], lab))
    return out
