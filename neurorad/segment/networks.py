"""Network architectures of the published systems, built from MONAI parts (PyTorch).

=============  ===========  ==================================================================
architecture   dims         paper / source
=============  ===========  ==================================================================
``unet2d``     2D slices    WMH 2D U-Net (Shan et al., PAPERS.md B): 4 poolings, BN, bilinear
                            upsampling, channels 16-32-64-128-256 (MONAI ``BasicUNet`` with
                            ``upsample="nontrainable"``).
``unet25d``    2.5D         microbleed U-Net (PAPERS.md C): k adjacent slices as channels, the
                            middle slice's mask out; same body as ``unet2d``.
``unet3d``     3D           3D U-Net (Cicek et al., MICCAI 2016) as MONAI ``BasicUNet``.
``dynunet``    3D           nnU-Net's self-configuring U-Net body (Isensee et al., Nat Methods
                            2021) as MONAI ``DynUNet``.
``densevnet``  3D           Dense V-Net (Gibson et al., IEEE TMI 2018; the skull-stripping
                            paper, PAPERS.md E): strided first convolution, three dense
                            feature stacks at 1/2, 1/4, 1/8 resolution, skip convolutions
                            upsampled and concatenated, no spatial priors.
=============  ===========  ==================================================================

:func:`build_network` takes an :class:`ArchSpec` (stored in every model card) so a model
folder rebuilds exactly the network it was trained with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

ARCHITECTURES = ("unet2d", "unet25d", "unet3d", "dynunet", "densevnet")


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild a network (JSON-serialisable; lives in the model card)."""

    architecture: str = "unet3d"
    in_channels: int = 1  # number of contrasts (times ``slices`` for 2.5D, see :attr:`net_in_channels`)
    out_channels: int = 2  # classes, background included
    features: tuple[int, ...] = (16, 32, 64, 128, 256)
    slices: int = 1  # 2.5D: adjacent slices given as channels (odd)
    dropout: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.architecture == "unet25d" and (self.slices < 3 or self.slices % 2 == 0):
            raise ValueError("unet25d needs an odd number of slices >= 3")
        if self.architecture != "unet25d" and self.slices != 1:
            raise ValueError(f"{self.architecture} takes one slice per contrast (slices = 1)")
        if self.architecture in ("unet2d", "unet25d", "unet3d") and len(self.features) != 5:
            raise ValueError(f"{self.architecture} needs 5 feature sizes (encoder levels), got {len(self.features)}")
        if self.architecture == "dynunet" and len(self.features) < 3:
            raise ValueError("dynunet needs at least 3 feature sizes")
        if self.architecture == "densevnet" and len(self.features) != 3:
            raise ValueError("densevnet needs 3 feature sizes (growth rates of its dense stacks)")

    @property
    def spatial_dims(self) -> int:
        return 2 if self.architecture in ("unet2d", "unet25d") else 3

    @property
    def net_in_channels(self) -> int:
        return self.in_channels * self.slices

    @property
    def divisor(self) -> int:
        """Patch sides must be multiples of this (2 ** number of poolings)."""
        if self.architecture == "dynunet":
            return 2 ** (len(self.features) - 1)
        if self.architecture == "densevnet":
            return 8
        return 16

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchSpec:
        d = dict(d)
        d["features"] = tuple(int(x) for x in d.get("features", ()))
        return cls(**d)


# --------------------------------------------------------------------------------------------
# Dense V-Net
# --------------------------------------------------------------------------------------------
class _DenseStack(nn.Module):
    """``n_layers`` BN-ReLU-Conv3x3x3 layers, each seeing all previous outputs (DenseNet)."""

    def __init__(self, in_ch: int, growth: int, n_layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        ch = in_ch
        for _ in range(n_layers):
            self.layers.append(nn.Sequential(
                nn.BatchNorm3d(ch), nn.ReLU(inplace=True), nn.Conv3d(ch, growth, 3, padding=1, bias=False),
                nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()))
            ch += growth
        self.out_channels = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class DenseVNet(nn.Module):
    """Dense V-Net (Gibson et al. 2018) without the spatial prior, as the skull-stripping paper.

    First convolution (5x5x5, stride 2) halves the resolution to save memory; three dense
    feature stacks (``layers`` deep, growth rates ``growth``) at 1/2, 1/4 and 1/8 resolution
    joined by strided convolutions; each stack's output passes a skip convolution, is upsampled
    to 1/2 resolution and concatenated; a final convolution gives the class logits, upsampled
    (trilinear) to the input size.
    """

    def __init__(self, in_channels: int, out_channels: int, growth: tuple[int, int, int] = (4, 8, 16),
                 layers: tuple[int, int, int] = (5, 10, 10), skip: tuple[int, int, int] = (12, 24, 24),
                 init_channels: int = 24, dropout: float = 0.0) -> None:
        super().__init__()
        self.init = nn.Sequential(nn.Conv3d(in_channels, init_channels, 5, stride=2, padding=2, bias=False),
                                  nn.BatchNorm3d(init_channels), nn.ReLU(inplace=True))
        self.stacks = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.skips = nn.ModuleList()
        ch = init_channels
        for i in range(3):
            stack = _DenseStack(ch, growth[i], layers[i], dropout)
            self.stacks.append(stack)
            self.skips.append(nn.Sequential(nn.BatchNorm3d(stack.out_channels), nn.ReLU(inplace=True),
                                            nn.Conv3d(stack.out_channels, skip[i], 3, padding=1, bias=False)))
            if i < 2:
                self.downs.append(nn.Sequential(nn.BatchNorm3d(stack.out_channels), nn.ReLU(inplace=True),
                                                nn.Conv3d(stack.out_channels, stack.out_channels, 3, stride=2,
                                                          padding=1, bias=False)))
                ch = stack.out_channels
        self.head = nn.Sequential(nn.BatchNorm3d(sum(skip)), nn.ReLU(inplace=True),
                                  nn.Conv3d(sum(skip), out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        h = self.init(x)
        half = h.shape[2:]
        outs = []
        for i, stack in enumerate(self.stacks):
            h = stack(h)
            s = self.skips[i](h)
            if s.shape[2:] != half:
                s = nn.functional.interpolate(s, size=half, mode="trilinear", align_corners=False)
            outs.append(s)
            if i < 2:
                h = self.downs[i](h)
        y = self.head(torch.cat(outs, 1))
        return nn.functional.interpolate(y, size=size, mode="trilinear", align_corners=False)


def build_network(spec: ArchSpec) -> nn.Module:
    """The ``torch.nn.Module`` described by ``spec`` (He-initialised convolutions, MONAI defaults)."""
    from monai.networks.nets import BasicUNet, DynUNet

    a = spec.architecture
    if a in ("unet2d", "unet25d", "unet3d"):
        f = tuple(spec.features)
        return BasicUNet(spatial_dims=spec.spatial_dims, in_channels=spec.net_in_channels,
                         out_channels=spec.out_channels, features=(*f, f[0]), dropout=spec.dropout,
                         upsample="nontrainable" if a != "unet3d" else spec.extra.get("upsample", "deconv"),
                         norm=("batch", {"affine": True}) if a != "unet3d" else ("instance", {"affine": True}))
    if a == "dynunet":
        n = len(spec.features)
        return DynUNet(spatial_dims=3, in_channels=spec.net_in_channels, out_channels=spec.out_channels,
                       kernel_size=[3] * n, strides=[1] + [2] * (n - 1), upsample_kernel_size=[2] * (n - 1),
                       filters=list(spec.features), dropout=spec.dropout or None, norm_name="instance",
                       res_block=bool(spec.extra.get("res_block", False)))
    if a == "densevnet":
        layers = tuple(spec.extra.get("layers", (5, 10, 10)))
        skip = tuple(spec.extra.get("skip", (12, 24, 24)))
        return DenseVNet(spec.net_in_channels, spec.out_channels, tuple(spec.features), layers, skip,  # type: ignore[arg-type]
                         int(spec.extra.get("init_channels", 24)), spec.dropout)
    raise ValueError(a)  # unreachable: ArchSpec validates


def count_parameters(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))
