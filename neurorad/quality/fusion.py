"""Fusion of candidate segmentations: weighted majority vote and SIMPLE.

* Weighted majority vote (binary): a voxel is foreground when the summed weight of the candidates
  voting for it is >= half the total weight (ties go to foreground), as BraTS Toolkit's
  ``Fusionator`` does. Label maps (:func:`majority_vote_labels`): each label is voted on its own
  and labels are written from the highest to the lowest, so a lower label overwrites a higher one
  where both win (BraTS Toolkit ``_mav`` order).
* SIMPLE (Langerak et al. 2010, "Label fusion in atlas-based segmentation using a selective and
  iterative method for performance level estimation", IEEE TMI 29:2000), in BraTS Toolkit's form:
  start from the majority vote; repeat: weight every remaining candidate by (Dice to the estimate
  + 1)^2, drop candidates with weight <= ``drop_fraction`` x the largest weight, re-estimate by
  weighted vote; stop when the estimate's voxel count changes by < ``stop_voxels`` or after
  ``iterations`` rounds. (BraTS Toolkit increments an unused ``tau`` each round; its drop
  threshold stays ``t`` = 0.05, which is what we implement.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurorad.errors import InputError
from neurorad.image.masks import dice


def _stack(candidates: Sequence[np.ndarray]) -> list[np.ndarray]:
    if len(candidates) == 0:
        raise InputError("no candidate segmentations to fuse")
    arrs = [np.asarray(c) for c in candidates]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise InputError(f"candidate segmentations differ in shape: {sorted(shapes)}")
    return arrs


def _weights(n: int, weights: Sequence[float] | None) -> np.ndarray:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (n,) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise InputError(f"need {n} non-negative finite weights, got {weights}")
    return w


def majority_vote(candidates: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted majority vote of binary masks (foreground where votes >= half the total weight)."""
    arrs = _stack(candidates)
    w = _weights(len(arrs), weights)
    if len(arrs) == 1:
        return arrs[0].astype(bool)
    votes = np.zeros(arrs[0].shape, dtype=np.float64)
    for a, wi in zip(arrs, w, strict=True):
        if a.dtype != np.bool_ and (a.min() < 0 or a.max() > 1):
            raise InputError("majority_vote needs binary candidates; use majority_vote_labels for label maps")
        votes += wi * (a != 0)
    return votes >= w.sum() / 2.0


def majority_vote_labels(
    candidates: Sequence[np.ndarray], weights: Sequence[float] | None = None, labels: Sequence[int] | None = None
) -> np.ndarray:
    """Weighted majority vote of label maps, label by label (see module docstring for the order)."""
    arrs = _stack(candidates)
    w = _weights(len(arrs), weights)
    if labels is None:
        labels = np.unique(np.concatenate([np.unique(a) for a in arrs]))
    out = np.zeros(arrs[0].shape, dtype=np.int32)
    for lab in sorted((int(x) for x in labels if int(x) != 0), reverse=True):
        votes = np.zeros(arrs[0].shape, dtype=np.float64)
        for a, wi in zip(arrs, w, strict=True):
            votes += wi * (a == lab)
        out[votes >= w.sum() / 2.0] = lab
    return out


def simple_fusion(
    candidates: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    drop_fraction: float = 0.05,
    stop_voxels: int = 25,
    iterations: int = 25,
) -> np.ndarray:
    """SIMPLE fusion of binary masks (module docstring); returns a bool mask."""
    arrs = [np.asarray(a) != 0 for a in _stack(candidates)]
    estimate = majority_vote(arrs, weights)
    conv = int(estimate.sum())
    for _ in range(iterations):
        w = np.array([(dice(c, estimate, empty=0.0) + 1.0) ** 2 for c in arrs])
        keep = w > drop_fraction * w.max()
        arrs = [c for c, k in zip(arrs, keep, strict=True) if k]
        w = w[keep]
        estimate = majority_vote(arrs, w)
        if abs(conv - int(estimate.sum())) < stop_voxels:
            break
        conv = int(estimate.sum())
    return estimate


def fuse(candidates: Sequence[np.ndarray], method: str = "mav", weights: Sequence[float] | None = None) -> np.ndarray:
    """Fuse binary candidates with ``method`` = ``"mav"`` (majority vote) or ``"simple"``."""
    if method == "mav":
        return majority_vote(candidates, weights)
    if method == "simple":
        return simple_fusion(candidates, weights)
    raise ValueError(f"fusion method must be 'mav' or 'simple', got {method!r}")
