"""The torch engines' fast forwards (channels-last with folded batch norms; bfloat16) give the
logits of the plain (contiguous, float32, unfolded) network."""

from __future__ import annotations

import copy

import pytest
import torch

from neurorad.errors import InputError
from neurorad.segment import engine
from neurorad.segment.engine import bf16_forward, bf16_supported, channels_last_forward, fold_batch_norm
from neurorad.segment.networks import ArchSpec, build_network


def _net_with_statistics(arch: str) -> tuple[torch.nn.Module, ArchSpec]:
    """A network whose batch norms hold non-trivial running statistics and affine parameters (a fresh
    one has mean 0 / variance 1, which folding would reproduce even if the fold were wrong)."""
    torch.manual_seed(0)
    spec = ArchSpec(arch, 1, 2, (4, 8, 8, 16, 16), 1)
    net = build_network(spec).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.2)
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return net, spec


@pytest.mark.parametrize("arch,size", [("unet2d", (32, 32)), ("unet3d", (32, 32, 32))])
def test_channels_last_forward_gives_the_same_logits(arch, size):
    net, _ = _net_with_statistics(arch)
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        ref = net(x)
        fast = channels_last_forward(copy.deepcopy(net))
        got = fast(x)
    assert float((got - ref).abs().max()) < 1e-4 * max(1.0, float(ref.abs().max()))


def test_fold_batch_norm_removes_every_batch_norm_of_the_unet():
    net, _ = _net_with_statistics("unet2d")
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    folded = copy.deepcopy(net)
    assert fold_batch_norm(folded) == n_bn > 0
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert fold_batch_norm(folded) == 0  # nothing left to fold


@pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bfloat16")
def test_bf16_forward_gives_float32_logits_close_to_the_float32_network():
    net, _ = _net_with_statistics("unet2d")
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = net(x)
        got = bf16_forward(copy.deepcopy(net))(x)
    assert got.dtype == torch.float32
    p_ref, p_got = torch.softmax(ref, 1), torch.softmax(got, 1)
    assert float((p_got - p_ref).abs().max()) < 0.05  # bfloat16 keeps 8 bits of mantissa
    assert float((p_got - p_ref).abs().max()) > 0  # and it really ran in reduced precision


def test_bf16_engine_is_refused_on_a_cpu_without_bfloat16(monkeypatch):
    monkeypatch.setattr(engine, "bf16_supported", lambda: False)
    net, _ = _net_with_statistics("unet2d")
    with pytest.raises(InputError, match="bfloat16"):
        engine.bf16_forward(net)
