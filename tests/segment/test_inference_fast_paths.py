"""The torch engine's channels-last forward gives the logits of the plain (contiguous) network."""

from __future__ import annotations

import pytest
import torch

from neurorad.segment.engine import channels_last_forward
from neurorad.segment.networks import ArchSpec, build_network


@pytest.mark.parametrize("arch,size", [("unet2d", (32, 32)), ("unet3d", (32, 32, 32))])
def test_channels_last_forward_gives_the_same_logits(arch, size):
    torch.manual_seed(0)
    spec = ArchSpec(arch, 1, 2, (4, 8, 8, 16, 16), 1)
    net = build_network(spec).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        ref = net(x)
        fast = channels_last_forward(build_network(spec).eval().requires_grad_(False))
        fast.module.load_state_dict(net.state_dict())
        got = fast(x)
    assert float((got - ref).abs().max()) < 1e-5
