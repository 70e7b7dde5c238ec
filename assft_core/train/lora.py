"""LoRA adapters on the encoder for a training run, merged back into plain weights after it.

ASSFT Studio retention recipe `lora` (METHOD.md §6; this project's addition): low-rank adapters
(Hu et al., ICLR 2022) on every Conv3d / Linear of the encoder, through `peft`; f_0's encoder
weights stay fixed while the run trains, and `merge_lora` folds `W + (α/r)·B·A` into each layer
(computed here: peft 0.18 mis-shapes the delta of a 1×1×1 Conv3d) and removes the wrappers, so the saved model is the same plain network the card describes
(export, prediction and the next round need nothing of peft). The adapters' B starts at zero, so
attaching them does not change the network's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from assft_core.errors import ModelError

_TARGET_TYPES = (nn.Conv3d, nn.Linear)


def lora_targets(network: nn.Module, encoder: Sequence[str]) -> list[str]:
    """Module names of every Conv3d / Linear under the encoder modules `encoder`."""
    prefixes = [p.rstrip(".") for p in encoder]
    return [
        name
        for name, m in network.named_modules()
        if isinstance(m, _TARGET_TYPES)
        and getattr(m, "groups", 1) == 1  # grouped convolutions: a low-rank delta would not be block-diagonal
        and any(name == p or name.startswith(p + ".") for p in prefixes)
    ]


def has_lora(network: nn.Module) -> bool:
    """True when LoRA adapters are attached to `network`."""
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in network.modules())


def attach_lora(network: nn.Module, encoder: Sequence[str], rank: int, alpha: int) -> list[str]:
    """Wrap every encoder Conv3d / Linear of `network` in a LoRA layer (in place), rank `rank`,
    scaling `alpha`; the wrapped layers' own weights are frozen, every other parameter is left
    as it was (`anchoring.trainable_parameters` decides what trains).

    Returns:
        The wrapped module names.

    Raises:
        ModelError: no Conv3d / Linear in the encoder, or `rank` < 1.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ModelError(f"LoRA rank must be >= 1, got {rank}. Fix: set TrainConfig.lora_rank.")
    targets = lora_targets(network, encoder)
    if not targets:
        raise ModelError(
            "recipe 'lora' found no Conv3d or Linear layer in the encoder to adapt. Fix: use recipe 'decoder' or 'paper'."
        )
    grads = {name: p.requires_grad for name, p in network.named_parameters()}
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0), network)
    # peft freezes every parameter it did not add; give back what the caller had, bar the wrapped weights.
    for name, p in network.named_parameters():
        if ".lora_" in name:
            p.requires_grad_(True)
        elif ".base_layer." not in name:
            p.requires_grad_(grads.get(name, True))
        else:
            p.requires_grad_(False)
    return targets


def merge_lora(network: nn.Module) -> int:
    """Fold every LoRA adapter into its layer's weight and put the plain layer back (in place).

    The merged network has the state-dict keys of the network before `attach_lora`, and every
    parameter trainable again.

    Returns:
        Layers merged (0 when none was attached).
    """
    from peft.tuners.lora import LoraLayer

    wrapped = [(name, m) for name, m in network.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in wrapped:
        base = layer.get_base_layer()
        with torch.no_grad():
            for adapter in layer.lora_A:
                a = layer.lora_A[adapter].weight  # (r, in, *kernel) conv, or (r, in) linear
                b = layer.lora_B[adapter].weight.flatten(1)  # (out, r): B is pointwise
                base.weight += torch.einsum("or,r...->o...", b, a).to(base.weight) * layer.scaling[adapter]
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, base)
    for p in network.parameters():
        p.requires_grad_(True)
    return len(wrapped)
