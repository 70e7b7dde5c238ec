"""Input adapters for foreign networks: a fixed per-channel affine and an axis order, as hooks.

A network from another framework may expect inputs this project's preprocessing does not produce
directly (`assft_core.data.preprocess` maps intensities to [0, 1]: a CT HU window or MRI
percentiles) and may read the volume's axes in another order (nnU-Net's SimpleITK reader gives
(z, y, x) arrays; this project's grid is RAS (x, y, z)). `attach_input_adapter` registers a
forward pre-hook that maps the (B, C, D, H, W) input to what the network was trained on,
`x_net = permute(scale[c] · x + shift[c])`, and a forward hook that permutes the logits back. The
network's module names and state-dict keys stay its own, so its checkpoint loads, exports and is
hooked by the scoring pass unchanged (hooked features are in the network's axis order:
`ScoringObserver(feature_axes=...)` maps them back).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from assft_core.errors import ModelError

Axes = tuple[int, int, int]


def inverse_axes(axes: Sequence[int]) -> Axes:
    """The permutation undoing `axes` (network axis j reads this project's axis `axes[j]`)."""
    inv = [0, 0, 0]
    for j, a in enumerate(axes):
        inv[int(a)] = j
    return tuple(inv)  # type: ignore[return-value]


class _PreHook:
    """Picklable / deep-copyable forward pre-hook: affine per channel, then axis permutation."""

    def __init__(self, scale: Sequence[float] | None, shift: Sequence[float] | None, axes: Axes | None) -> None:
        self.scale = None if scale is None else [float(s) for s in scale]
        self.shift = None if shift is None else [float(s) for s in shift]
        self.axes = axes

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        if self.scale is not None and self.shift is not None:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            x = x * x.new_tensor(self.scale).view(shape) + x.new_tensor(self.shift).view(shape)
        if self.axes is not None:
            x = x.permute(0, 1, *(2 + a for a in self.axes))
        return (x, *args[1:])


class _PostHook:
    """Forward hook permuting the (B, K, ...) logits back to this project's axis order."""

    def __init__(self, axes: Axes) -> None:
        self.inv = inverse_axes(axes)

    def __call__(self, module: nn.Module, args: object, output: torch.Tensor) -> torch.Tensor:
        if isinstance(output, (list, tuple)):  # deep supervision: every resolution
            return type(output)(o.permute(0, 1, *(2 + a for a in self.inv)) for o in output)
        return output.permute(0, 1, *(2 + a for a in self.inv))


def attach_input_adapter(
    network: nn.Module,
    scale: Sequence[float] | None = None,
    shift: Sequence[float] | None = None,
    axes: Sequence[int] | None = None,
) -> nn.Module:
    """Make `network` take this project's (B, C, D, H, W) inputs; returns the same module.

    Args:
        network: the foreign network (its own forward and state-dict keys are untouched).
        scale: (C,) per-channel factor applied to the [0, 1]-normalised input, or None.
        shift: (C,) per-channel offset added after `scale`, or None.
        axes: network spatial axis j reads this project's axis `axes[j]`; None or (0, 1, 2) for
            the same order. Logits are permuted back, so callers always see (B, K, D, H, W).

    Raises:
        ModelError: when `scale` and `shift` differ in length or `axes` is not a permutation of 0..2.
    """
    if (scale is None) != (shift is None) or (scale is not None and len(scale) != len(shift or ())):
        raise ModelError(f"input adapter: 'input_scale' {scale} and 'input_shift' {shift} must both be (C,) lists.")
    perm: Axes | None = None
    if axes is not None:
        if sorted(int(a) for a in axes) != [0, 1, 2]:
            raise ModelError(f"input adapter: 'axes' {list(axes)} must be a permutation of [0, 1, 2].")
        perm = tuple(int(a) for a in axes)  # type: ignore[assignment]
        if perm == (0, 1, 2):
            perm = None
    if scale is None and perm is None:
        return network
    network.register_forward_pre_hook(_PreHook(scale, shift, perm))
    if perm is not None:
        network.register_forward_hook(_PostHook(perm))
    network._assft_axes = perm  # type: ignore[attr-defined]  # read by the scoring pass
    return network


def network_axes(network: nn.Module) -> Axes | None:
    """The axis permutation attached by `attach_input_adapter` (None: this project's order)."""
    return getattr(network, "_assft_axes", None)
