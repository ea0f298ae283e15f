"""Test-time mirroring over chosen axes (``InferenceSpec.mirror_axes``; the MS learned engine's
``LearnedParams.mirror_axes``, tried left-right in session 50).

Oracle: mirroring is by definition the mean of the network's probabilities on the image and on its mirror images,
each mirrored back. With one sliding window covering the whole array those are plain forward passes, computed here
by hand; a network that is not itself symmetric (a one-sided convolution) makes every pass differ, so a wrong
axis, a missing pass or a flip not undone changes the result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurorad.errors import InputError
from neurorad.segment.inference import InferenceSpec, _flips, predict_array
from neurorad.segment.ms_learned import LearnedParams
from neurorad.segment.networks import ArchSpec


def _one_sided() -> torch.nn.Module:
    """Logits (0, value of the voxel one step further along axis 0 + a ramp along axis 1): mirror-asymmetric on
    axes 0 and 1, symmetric on axis 2."""

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shifted = torch.nn.functional.pad(x[:, :, 1:], (0, 0, 0, 0, 0, 1))
            ramp = torch.linspace(-1.0, 1.0, x.shape[3]).view(1, 1, 1, -1, 1)
            return torch.cat([torch.zeros_like(x), 3.0 * shifted + ramp], 1)

    return Net().eval()


def _passes(net: torch.nn.Module, arr: np.ndarray, flips: list[tuple[int, ...]]) -> np.ndarray:
    out = []
    for f in flips:  # f: spatial axes of the array [i, j, k]
        x = torch.from_numpy(np.flip(arr, [1 + a for a in f]).copy())[None]
        with torch.no_grad():
            p = torch.softmax(net(x), 1)[0].numpy()
        out.append(np.flip(p, [1 + a for a in f]))
    return np.mean(out, 0)


def test_mirroring_averages_the_passes_over_exactly_the_axes_asked_for() -> None:
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 1, (1, 12, 10, 8)).astype(np.float32)
    arch = ArchSpec("unet3d", 1, 2, (4,) * 5, 1)
    net = _one_sided()
    whole = (12, 10, 8)  # one window: every pass is one forward of the whole array

    def run(tta: bool, axes: tuple[int, ...] | None) -> np.ndarray:
        return predict_array(net, arr, arch, InferenceSpec(whole, 0.0, tta, 1, axes), crop=False)

    plain = run(False, (0,))
    assert np.allclose(plain, _passes(net, arr, [()]), atol=1e-6)
    left_right = run(True, (0,))
    assert np.allclose(left_right, _passes(net, arr, [(), (0,)]), atol=1e-6)
    assert not np.allclose(left_right, plain, atol=1e-3)  # the network is not symmetric: the pass counts
    two = run(True, (0, 1))
    assert np.allclose(two, _passes(net, arr, [(), (0,), (1,), (0, 1)]), atol=1e-6)
    every = run(True, None)  # nnU-Net's mirroring: all eight
    assert np.allclose(every, _passes(net, arr, [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]),
                       atol=1e-6)
    assert np.allclose(run(True, (2,)), plain, atol=1e-6)  # the network is symmetric along axis 2


def test_flips_and_the_spec_round_trip() -> None:
    assert _flips(3, False, (0,)) == [()]
    assert _flips(3, True, (0,)) == [(), (2,)]
    assert len(_flips(3, True, None)) == 8 and len(_flips(2, True, None)) == 4
    assert _flips(2, True, (0, 2)) == [(), (2,)]  # a 2D network has no third spatial axis to mirror
    spec = InferenceSpec((64, 64, 64), 0.25, True, 1, (0,))
    assert spec.to_dict()["mirror_axes"] == [0] and InferenceSpec.from_dict(spec.to_dict()) == spec
    old = InferenceSpec((64, 64, 64), 0.25, False, 1)
    assert "mirror_axes" not in old.to_dict() and InferenceSpec.from_dict(old.to_dict()) == old
    for bad in ((3,), (0, 0), (-1,)):
        with pytest.raises(InputError, match="mirror_axes"):
            InferenceSpec((64, 64, 64), 0.25, True, 1, bad)
    assert LearnedParams(mirror_axes=[1, 0]).mirror_axes == (1, 0)
    with pytest.raises(ValueError, match="mirror_axes"):
        LearnedParams(mirror_axes=(0, 3))
