"""Inference crops to the non-constant region (nnU-Net's crop to the non-zero box) and pastes back.

Oracle: the same inference without the crop (``crop=False``). With a point-wise network (1x1 convs)
every window gives the same value at a voxel, so inside the box cropped and uncropped agree to float
precision; with a real (3x3 conv) network they agree up to the sliding window's edge effects. Outside
the box the background class has probability exactly 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurorad.segment.inference import InferenceSpec, foreground_box, predict_array
from neurorad.segment.networks import ArchSpec, build_network


def _volume(shape=(40, 36, 30), box=((10, 25), (8, 20), (12, 22)), channels=1, seed=0):
    """Zero background, random 'head' in ``box``, then z-scored (background becomes a negative constant)."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((channels, *shape), np.float32)
    sl = tuple(slice(a, b) for a, b in box)
    arr[(slice(None), *sl)] = rng.uniform(0.5, 2.0, (channels, *[b - a for a, b in box]))
    return (arr - arr.mean()) / arr.std(), sl


def _pointwise(dims: int, in_ch: int):
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    torch.manual_seed(0)
    return torch.nn.Sequential(conv(in_ch, 4, 1), torch.nn.Tanh(), conv(4, 2, 1)).eval()


def test_foreground_box_covers_the_object_with_margin_and_window():
    arr, sl = _volume()
    box = foreground_box(arr, roi=(8, 8, 8), margin=2)
    assert box == (slice(8, 27), slice(6, 22), slice(10, 24))
    big = foreground_box(arr, roi=(30, 8, 8), margin=0)  # grown to the window in axis 0, centred
    assert big[0].stop - big[0].start == 30 and big[0].start <= 10 and big[0].stop >= 25
    assert foreground_box(np.ones((1, 5, 5, 5), np.float32), (4, 4, 4)) is None  # constant: nothing to crop
    assert foreground_box(arr, roi=(40, 36, 30)) is None  # the box is the whole array


@pytest.mark.parametrize("arch", [ArchSpec("unet3d", 1, 2, (4,) * 5, 1), ArchSpec("unet2d", 1, 2, (4,) * 5, 1),
                                  ArchSpec("unet25d", 1, 2, (4,) * 5, 3)], ids=["3d", "2d", "2.5d"])
def test_crop_equals_uncropped_inside_and_is_background_outside(arch):
    arr, _ = _volume()
    net = _pointwise(arch.spatial_dims, arch.in_channels * arch.slices)
    roi = (16, 16, 16) if arch.spatial_dims == 3 else (24, 24)
    inf = InferenceSpec(roi, 0.5, False, 8)
    with torch.no_grad():
        full = predict_array(net, arr, arch, inf, crop=False)
        got = predict_array(net, arr, arch, inf)
    box = foreground_box(arr, roi)
    assert box is not None and all(b.stop - b.start < n for b, n in zip(box, arr.shape[1:], strict=True))
    inside = (slice(None), *box)
    np.testing.assert_allclose(got[inside], full[inside], atol=1e-5)
    outside = np.ones(arr.shape[1:], bool)
    outside[box] = False
    assert np.all(got[0][outside] == 1.0) and np.all(got[1][outside] == 0.0)
    assert not np.allclose(full[0][outside], 1.0)  # the uncropped net does say something there: the test can fail


def test_crop_with_a_real_network_differs_only_by_window_edge_effects():
    arch = ArchSpec("unet3d", 1, 2, (4, 4, 8, 8, 8), 1)
    torch.manual_seed(0)
    net = build_network(arch).eval()
    arr, sl = _volume((64, 48, 48), ((20, 40), (14, 34), (14, 34)))
    inf = InferenceSpec((32, 32, 32), 0.5, False, 2)
    with torch.no_grad():
        full = predict_array(net, arr, arch, inf, crop=False)
        got = predict_array(net, arr, arch, inf)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-5)
    diff = np.abs(got[1][sl] - full[1][sl])
    assert float(np.median(diff)) < 0.05 and float(diff.max()) < 0.5
