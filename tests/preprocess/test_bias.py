"""N4 removes a known multiplicative bias field from real anatomy (Colin27).

Oracle: the white-matter coefficient of variation (WM = eroded band of the clean image's
70-95th brain percentiles) before and after correction; the clean image's own CoV is the floor.
2 mm data with shrink 2 is the same fitting grid as 1 mm with the default shrink 4.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from neurorad.errors import InputError
from neurorad.image.volume import Volume
from neurorad.preprocess.bias import n4_bias_correct

from .conftest import smooth_bias_field


@pytest.fixture(scope="module")
def case(colin_head, colin_brain_mask):
    aff = colin_head.affine.copy()
    aff[:3, :3] *= 2
    clean = Volume(colin_head.data[::2, ::2, ::2].copy(), aff)
    brain = colin_brain_mask[::2, ::2, ::2]
    lo, hi = np.percentile(clean.data[brain], [70, 95])
    wm = ndi.binary_erosion(brain & (clean.data > lo) & (clean.data < hi))
    field = smooth_bias_field(clean.spatial_shape, 0.6, seed=0)
    return clean, clean.with_data(clean.data * field), wm, field


def _cov(x: np.ndarray, m: np.ndarray) -> float:
    return float(x[m].std() / x[m].mean())


def test_n4_halves_white_matter_cov(case):
    clean, biased, wm, field = case
    corrected, est = n4_bias_correct(biased, shrink_factor=2, return_field=True)
    before, after = _cov(biased.data, wm), _cov(corrected.data, wm)
    print(f"WM CoV clean {_cov(clean.data, wm):.4f}, biased {before:.4f}, corrected {after:.4f}")
    assert after <= 0.5 * before
    assert corrected.same_grid(biased) and corrected.data.dtype == np.float32
    assert est.same_grid(biased) and np.all(est.data > 0)


def test_bad_input(case):
    clean = case[0]
    with pytest.raises(InputError, match="shrink"):
        n4_bias_correct(clean, shrink_factor=0)
    with pytest.raises(InputError, match="empty"):
        n4_bias_correct(clean, mask=clean.with_data(np.zeros(clean.spatial_shape, bool)))
