"""Input checks shared by the evaluation functions: clear errors on bad input."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurorad.errors import InputError


def as_binary(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a bool array; raise :class:`InputError` unless its values are only {0, 1}.

    Bool arrays pass unchanged. Integer/float arrays must hold only 0 and 1 (a label map with
    other values, or a probability map, is refused rather than silently thresholded).
    """
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr
    if arr.size == 0:
        return arr.astype(bool)
    # one pass each for min/max is far cheaper than np.unique on 16M voxels
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > 1:
        raise InputError(f"{name} must be binary (0/1); found values in [{lo}, {hi}]")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite([lo, hi])):
            raise InputError(f"{name} holds NaN or inf")
        if hi > 0 and lo >= 0:
            nonint = np.count_nonzero((arr != 0) & (arr != 1))
            if nonint:
                raise InputError(f"{name} must be binary (0/1); {nonint} voxels hold fractional values")
    return arr != 0


def check_probability(prob: np.ndarray, name: str = "probability map") -> np.ndarray:
    """Return ``prob`` as float; raise :class:`InputError` when it holds NaN/inf or values outside [0, 1]."""
    arr = np.asarray(prob)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    if arr.size:
        lo, hi = float(arr.min()), float(arr.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError(f"{name} holds NaN or inf")
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"{name} must lie in [0, 1]; found values in [{lo:.4g}, {hi:.4g}]")
    return arr


def check_same_shape(*arrays: tuple[str, np.ndarray]) -> None:
    """Raise :class:`InputError` unless all named arrays share one shape."""
    shapes = {name: np.shape(a) for name, a in arrays if a is not None}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise InputError(f"shape mismatch: {desc}")


def check_spacing(spacing_mm: Sequence[float] | None, ndim: int) -> np.ndarray:
    """Spacing as a float array of length ``ndim`` (default 1 mm), positive and finite."""
    if spacing_mm is None:
        return np.ones(ndim)
    sp = np.asarray(spacing_mm, dtype=float).ravel()
    if sp.size != ndim or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"spacing_mm must be {ndim} positive numbers, got {list(sp)}")
    return sp
