"""Fixtures of the preprocess tests: Colin27 head and brain mask, loaded once per session."""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.image.nifti import load_nifti
from neurorad.image.volume import Volume


@pytest.fixture(scope="session")
def colin_head(colin27_head_path) -> Volume:
    v = load_nifti(colin27_head_path)
    return v.with_data(np.asarray(v.data, dtype=np.float32))


@pytest.fixture(scope="session")
def colin_brain_mask(colin27_brain_path) -> np.ndarray:
    return np.asarray(load_nifti(colin27_brain_path).data) > 0


def smooth_bias_field(shape: tuple[int, int, int], strength: float = 0.4, seed: int = 0) -> np.ndarray:
    """A smooth multiplicative field exp(sum of low-order terms), mean ~1, range about e^{±strength}."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    c = rng.uniform(-1, 1, size=6)
    log_f = (c[0] * grids[0] + c[1] * grids[1] + c[2] * grids[2] + c[3] * grids[0] * grids[1]
             + c[4] * grids[2] ** 2 + c[5] * grids[1] ** 2)
    log_f = strength * log_f / np.abs(log_f).max()
    return np.exp(log_f).astype(np.float32)
