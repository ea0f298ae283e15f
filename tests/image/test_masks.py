"""The one Dice coefficient: analytic cases."""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.image.masks import dice


def test_dice_analytic() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True  # 8 voxels
    b[1:3] = True  # 8 voxels, 4 shared
    assert dice(a, b) == pytest.approx(2 * 4 / 16)
    assert dice(a, a.astype(np.int16) * 7) == 1.0  # any non-zero value is inside
    empty = np.zeros((4, 4))
    assert dice(empty, empty) == 1.0 and dice(empty, empty, empty=0.0) == 0.0
    assert dice(a, empty) == 0.0
    with pytest.raises(ValueError, match="shape"):
        dice(a, np.zeros((3, 4)))
