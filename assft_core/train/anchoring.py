"""Weight-space retention: L2-SP toward f_0, WiSE-FT interpolation, and which parameters train.

ASSFT Studio retention recipes (METHOD.md §6; this project's addition, not the paper's):

- L2-SP (Li et al., ICML 2018): `loss += α_sp · Σ_θ ‖θ − θ_0‖²` over the pre-trained parameters
  (the head re-initialised for new classes excluded), pulling a few-label round back toward f_0.
- WiSE-FT (Wortsman et al., CVPR 2022): `θ = (1 − α_w) θ_0 + α_w θ_t`, parameters and floating
  buffers (BatchNorm statistics) alike.
- Partial fine-tuning: `decoder` trains everything but the encoder's non-norm weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from assft_core.config import Trainable
from assft_core.models.registry import NORM_TYPES


def _under(name: str, prefixes: Sequence[str]) -> bool:
    """True when `name` is a module / parameter named by, or inside, one of `prefixes`."""
    return any(name == p.rstrip(".") or name.startswith(p.rstrip(".") + ".") for p in prefixes)


@dataclass
class WeightAnchor:
    """θ_0 for L2-SP: a detached copy of f_0's pre-trained parameters.

    Attributes:
        parameters: parameter name -> θ_0 tensor (same shape and device as the network's).
    """

    parameters: dict[str, torch.Tensor]

    @classmethod
    def of(cls, network: nn.Module, head_prefixes: Sequence[str] = (), *, has_head: bool = True) -> WeightAnchor:
        """Anchor every parameter of `network` (f_0); the head's too when f_0 trained it for the
        target classes (`has_head`), else the head is left free.

        Raises:
            ValueError: when nothing is left to anchor.
        """
        params = {
            name: p.detach().clone()
            for name, p in network.named_parameters()
            if has_head or not _under(name, head_prefixes)
        }
        if not params:
            raise ValueError("no pre-trained parameter to anchor L2-SP to.")
        return cls(params)

    def penalty(self, network: nn.Module) -> torch.Tensor:
        """Σ ‖θ − θ_0‖² over the anchored parameters (a 0-dim tensor with gradient).

        Parameters of `network` that are not anchored, or whose shape changed, are skipped;
        LoRA-wrapped layers are matched by their base weight's name.
        """
        total: torch.Tensor | None = None
        for name, p in network.named_parameters():
            ref = self.parameters.get(name.replace(".base_layer", ""))
            if ref is None or ref.shape != p.shape:
                continue
            term = (p - ref.to(p.device)).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            device = next(network.parameters()).device
            return torch.zeros((), device=device)
        return total


def interpolate_weights(
    network: nn.Module, theta0: Mapping[str, torch.Tensor], alpha: float, *, keep: Sequence[str] = ()
) -> list[str]:
    """WiSE-FT in place: every floating entry of the state becomes (1 − α) θ_0 + α θ_t.

    Args:
        network: f_t, changed in place into the interpolated model.
        theta0: f_0's `state_dict()`.
        alpha: α_w in [0, 1]; 0 gives f_0 exactly, 1 leaves f_t.
        keep: module-name prefixes taken from θ_t as they are (a head f_0 lacks for the classes).

    Returns:
        State keys taken from θ_t unchanged (kept, missing in θ_0, other shape, or not floating).

    Raises:
        ValueError: `alpha` outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"the interpolation weight α_w must be in [0, 1], got {alpha}.")
    state = network.state_dict()
    untouched: list[str] = []
    for key, value in state.items():
        ref = theta0.get(key)
        if ref is None or ref.shape != value.shape or not value.is_floating_point() or _under(key, keep):
            untouched.append(key)
            continue
        ref = ref.to(value)
        if alpha == 0.0:
            value.copy_(ref)
        elif alpha != 1.0:
            value.copy_(torch.lerp(ref, value, alpha))
    return untouched


def trainable_parameters(network: nn.Module, mode: Trainable, encoder: Sequence[str]) -> set[str]:
    """Names of the parameters a run of `mode` may update.

    `all`: every parameter. `decoder`: all but the encoder's (modules under `encoder`), its
    normalisation layers' affine parameters excepted. `lora`: the LoRA adapters, the encoder's
    norms and everything outside the encoder (call after `lora.attach_lora`).

    Raises:
        ValueError: a partial mode without encoder module names (the backbone does not say where
            its encoder is).
    """
    mode = Trainable(mode)
    names = {name for name, _ in network.named_parameters()}
    if mode is Trainable.ALL:
        return names
    if not encoder:
        raise ValueError(
            f"partial fine-tuning ({mode.value}) needs the encoder's module names, and this backbone gives none. "
            "Fix: use recipe 'paper' or a registered backbone."
        )
    norms = {
        f"{mod_name}.{p_name}"
        for mod_name, module in network.named_modules()
        if isinstance(module, NORM_TYPES)
        for p_name, _ in module.named_parameters(recurse=False)
    }
    keep = set()
    for name in names:
        if not _under(name, encoder) or name in norms or (mode is Trainable.LORA and ".lora_" in name):
            keep.add(name)
    return keep
