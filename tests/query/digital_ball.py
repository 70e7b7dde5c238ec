"""The digital ball of METHOD.md §2 as an explicit kernel: the tests' reference for the ROI
dilation (the engine dilates by runs along W and never builds this kernel)."""

from __future__ import annotations

import torch


def ball_kernel(radius: int) -> torch.Tensor:
    """`{v : |v|² ≤ r²}` as a (2r+1,)*3 float32 kernel (r=2: 33 voxels)."""
    ax = torch.arange(-radius, radius + 1, dtype=torch.float32)
    zz, yy, xx = torch.meshgrid(ax, ax, ax, indexing="ij")
    return ((zz**2 + yy**2 + xx**2) <= radius**2).to(torch.float32)
