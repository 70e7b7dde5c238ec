"""Tiny networks and volumes for the model tests (32³ windows, a few channels)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
import torch
from torch import nn

from assft_core.models.registry import Backbone, register_backbone


class PatchNet(nn.Module):
    """Norm layers whose inputs depend only on the window's own voxels (for exactness tests).

    `norm0` sees the image itself; `down` is a 2×2×2 stride-2 convolution (no overlap between
    output positions), so `norm1`'s input at position k depends only on voxels [2k, 2k+2):
    computed window by window or over the whole volume, it is the same number.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            OrderedDict(
                norm0=nn.BatchNorm3d(in_channels),
                down=nn.Conv3d(in_channels, 3, kernel_size=2, stride=2),
                norm1=nn.BatchNorm3d(3),
            )
        )
        self.head = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv3d(3, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(x))


@register_backbone("patchnet_test")
class PatchNetBackbone(Backbone):
    def build(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        return PatchNet(in_channels, out_channels)

    def encoder_norm_layers(self, network: nn.Module) -> list[str]:
        return ["enc.norm0", "enc.norm1"]

    def encoder_stages(self, network: nn.Module) -> list[str]:
        return ["enc.down"]

    def head_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        return ("head.",)

    def total_stride(self, network: nn.Module) -> int:
        return 2


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)
