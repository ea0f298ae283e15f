"""Overlap of binary masks: the one Dice coefficient of the project.

Dice (1945) / Sorensen (1948): ``2 |A ∩ B| / (|A| + |B|)`` of two masks of the same shape (any
non-zero value counts as inside). Two empty masks agree perfectly by the usual convention
(``empty=1.0``); the BraTS Toolkit's fusion weights score them 0 (``empty=0.0``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["dice"]


def dice(a: np.ndarray, b: np.ndarray, empty: float = 1.0) -> float:
    """Dice coefficient of masks ``a`` and ``b`` (same shape); ``empty`` when both are empty."""
    a = np.asarray(a) != 0
    b = np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    s = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / s if s else float(empty)
