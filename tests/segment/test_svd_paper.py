"""The WMH and microbleed papers' preprocessing: exact geometry of the 384 x 384 grid, inverse mapping,
normalisations and slice sampling."""

from __future__ import annotations

import numpy as np
import pytest

from neurorad.image.volume import Volume
from neurorad.segment.svd_paper import (
    balanced_slices,
    from_paper_grid,
    swi_paper_normalise,
    three_slice_input,
    to_paper_grid,
    wmh_paper_normalise,
)


def _vol(shape, spacing=(0.9, 0.9, 1.2)) -> Volume:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = (-80.0, -100.0, -60.0)
    g = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"), -1)
    data = np.sin(g[..., 0] / 17.0) + np.cos(g[..., 1] / 23.0) + g[..., 2] / 10.0
    return Volume(data.astype(np.float32), aff)


@pytest.mark.parametrize(("shape", "square", "mode"), [
    ((200, 240, 5), "pad", "resize"),   # padded to 240, bilinear up to 384
    ((420, 400, 4), "pad", "crop"),     # padded to 420, centre-cropped to 384
    ((200, 240, 5), "crop", "resize"),  # cropped to 200 (shortest side), resized
    ((384, 384, 3), "pad", "none"),
])
def test_paper_grid_is_exact_in_world_space(shape, square, mode) -> None:
    vol = _vol(shape)
    net, g = to_paper_grid(vol, square=square)
    assert net.spatial_shape == (384, 384, shape[2]) and g.mode == mode
    # every network pixel sits, in world space, where the native image has the value it holds
    rng = np.random.default_rng(0)
    for _ in range(20):
        u, v, k = int(rng.integers(40, 344)), int(rng.integers(40, 344)), int(rng.integers(0, shape[2]))
        ijk = vol.world_to_voxel(net.voxel_to_world(np.array([u, v, k])))[0]
        if np.all((ijk[:2] >= 0) & (ijk[:2] <= np.array(shape[:2]) - 1)):
            from scipy import ndimage

            ref = ndimage.map_coordinates(vol.data, ijk[:, None], order=1)[0]
            assert net.data[u, v, k] == pytest.approx(ref, abs=2e-3)
        else:
            assert net.data[u, v, k] == 0.0  # zero padding
    back = from_paper_grid(net.data, g)
    assert back.shape == shape
    inside = np.zeros(shape, bool)
    inside[20:-20, 20:-20] = True
    if square == "pad" and mode != "crop":
        assert np.abs(back - vol.data)[inside].max() < 0.02  # smooth image: bilinear round trip
    if mode == "crop":
        c = g.crop0
        i0, j0 = c - g.offset_ij[0], c - g.offset_ij[1]
        assert np.array_equal(back[i0:i0 + 384, max(j0, 0):j0 + 384], vol.data[i0:i0 + 384, max(j0, 0):j0 + 384])
    lab = (vol.data > 1.0).astype(np.uint8)
    net_lab, _ = to_paper_grid(vol, lab, square=square, order=0)
    assert set(np.unique(net_lab.data)) <= {0, 1}


def test_wmh_normalisation_is_a_global_zscore() -> None:
    a = np.random.default_rng(1).normal(5, 3, (10, 10, 10))
    z = wmh_paper_normalise(a)
    assert z.mean() == pytest.approx(0, abs=1e-5) and z.std() == pytest.approx(1, abs=1e-4)


def test_swi_normalisation_aligns_the_wm_peak_and_drops_rare_bins() -> None:
    rng = np.random.default_rng(2)
    wm = np.zeros((60, 60, 60), bool)
    wm[10:50, 10:50, 10:50] = True
    for scale in (1.0, 700.0):
        a = np.where(wm, rng.normal(0.8, 0.02, wm.shape), rng.normal(0.95, 0.02, wm.shape))
        a[0, 0, 0] = 50.0  # one outlier voxel: a bin of frequency 1/216000 < 1e-4, dropped
        y, info = swi_paper_normalise(a * scale, wm)
        assert info["wm_peak"] == pytest.approx(0.8 * scale, rel=0.02)
        assert info["window_hi"] < 2.0 * scale  # the outlier did not set the window
        assert y.min() == 0.0 and y.max() == 1.0 and y[0, 0, 0] == 1.0
        assert np.median(y[wm]) < np.median(y[~wm])
    y1, _ = swi_paper_normalise(a, wm)
    y2, _ = swi_paper_normalise(a * 3.0, wm)
    assert np.allclose(y1, y2, atol=1e-5)  # scanner scaling removed


def test_three_slice_input_and_balanced_sampling() -> None:
    st = np.arange(4 * 4 * 5, dtype=float).reshape(4, 4, 5)
    x = three_slice_input(st, 0)
    assert x.shape == (3, 4, 4) and np.array_equal(x[0], st[:, :, 0]) and np.array_equal(x[2], st[:, :, 1])
    lab = np.zeros((4, 4, 10), bool)
    lab[1, 1, [2, 5, 6]] = True
    pos, neg = balanced_slices(lab, np.random.default_rng(0))
    assert pos.tolist() == [2, 5, 6] and len(neg) == 3 and not set(neg) & set(pos)
