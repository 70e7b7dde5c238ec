"""What `TrainConfig.bn_mode` does to each kind of normalisation layer (METHOD.md §5).

| layer | stored state | `train` | `frozen` |
|---|---|---|---|
| BatchNorm (1/2/3d, SyncBatchNorm) | running mean/var, affine | batch statistics; running statistics adapt; affine trained | eval mode: f_0's running statistics used and kept; affine not optimised |
| InstanceNorm, `track_running_stats=True` | running mean/var, affine (if any) | as BatchNorm | as BatchNorm |
| InstanceNorm (default), GroupNorm, LayerNorm | affine (if any) | each input's own statistics; affine trained | each input's own statistics (nothing stored to keep); affine not optimised |

`frozen` keeps whatever a normalisation layer stores. A network in which it would keep nothing
(no normalisation layer, or only layers without running statistics or affine parameters, such as
MONAI's default InstanceNorm) is refused with an error rather than run as if frozen. TorchScript
sub-modules are recognised by their original class name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from assft_core.config import BNMode
from assft_core.errors import StateError

_KINDS: tuple[tuple[str, tuple[type[nn.Module], ...]], ...] = (
    ("BatchNorm", (_BatchNorm,)),
    ("InstanceNorm", (_InstanceNorm,)),
    ("GroupNorm", (nn.GroupNorm,)),
    ("LayerNorm", (nn.LayerNorm,)),
)


def norm_kind(module: nn.Module) -> str | None:
    """"BatchNorm", "InstanceNorm", "GroupNorm", "LayerNorm", or None for any other module
    (a TorchScript module by its `original_name`)."""
    for kind, types in _KINDS:
        if isinstance(module, types):
            return kind
    name = str(getattr(module, "original_name", "")) if isinstance(module, nn.Module) else ""
    for kind, _types in _KINDS:
        if name.startswith(kind) or (kind == "BatchNorm" and name == "SyncBatchNorm"):
            return kind
    return None


def _has_running_stats(module: nn.Module) -> bool:
    return getattr(module, "running_mean", None) is not None and bool(getattr(module, "track_running_stats", True))


@dataclass
class NormReport:
    """What `prepare_normalisation` did.

    Attributes:
        mode: the bn_mode applied.
        layers: kind -> number of layers of that kind.
        eval_mode: kind -> layers switched to eval mode (running statistics kept).
        frozen_parameters: kind -> affine parameters left out of the optimiser.
    """

    mode: BNMode
    layers: dict[str, int] = field(default_factory=dict)
    eval_mode: dict[str, int] = field(default_factory=dict)
    frozen_parameters: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for people, e.g. "frozen: 12 BatchNorm (running statistics and affine kept)"."""
        if not self.layers:
            return f"{self.mode.value}: no normalisation layer"
        parts = []
        for kind, n in self.layers.items():
            kept = []
            if self.eval_mode.get(kind):
                kept.append(f"{self.eval_mode[kind]} with running statistics kept")
            if self.frozen_parameters.get(kind):
                kept.append(f"{self.frozen_parameters[kind]} affine parameters frozen")
            parts.append(f"{n} {kind}" + (f" ({', '.join(kept)})" if kept else ""))
        return f"{self.mode.value}: " + "; ".join(parts)


def _norm_layers(network: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for module in network.modules():
        kind = norm_kind(module)
        if kind is not None:
            yield kind, module


def keeps_something_frozen(network: nn.Module) -> bool:
    """True when `frozen` would keep something of `network`: a normalisation layer with running
    statistics or affine parameters (what `prepare_normalisation` refuses otherwise)."""
    return any(_has_running_stats(m) or any(True for _ in m.parameters(recurse=False)) for _k, m in _norm_layers(network))


def prepare_normalisation(network: nn.Module, mode: BNMode) -> tuple[list[nn.Parameter], NormReport]:
    """Put `network` in training mode with its normalisation layers as `mode` says (table above).

    Args:
        network: the network about to be trained (modified in place: train/eval flags).
        mode: `train` or `frozen`.

    Returns:
        (the parameters to optimise: every `requires_grad` parameter but the frozen affine ones,
        the report of what was done per layer kind).

    Raises:
        StateError: `frozen` on a network without normalisation layers, or whose normalisation
            layers store neither running statistics nor affine parameters (nothing to keep).
    """
    mode = BNMode(mode)
    network.train()
    report = NormReport(mode)
    layers = list(_norm_layers(network))
    for kind, _m in layers:
        report.layers[kind] = report.layers.get(kind, 0) + 1
    if mode is BNMode.TRAIN:
        return [p for p in network.parameters() if p.requires_grad], report
    frozen: set[int] = set()
    for kind, module in layers:
        if _has_running_stats(module):
            module.eval()
            report.eval_mode[kind] = report.eval_mode.get(kind, 0) + 1
        own = [p for p in module.parameters(recurse=False)]
        if own:
            frozen.update(id(p) for p in own)
            report.frozen_parameters[kind] = report.frozen_parameters.get(kind, 0) + len(own)
    if not report.eval_mode and not report.frozen_parameters:
        found = ", ".join(f"{n} {k}" for k, n in report.layers.items()) or "no normalisation layer"
        raise StateError(
            f"bn_mode 'frozen' keeps the running statistics and affine parameters of the network's normalisation "
            f"layers, but this network has {found} holding neither (statistics are computed from each input), so "
            "there is nothing to freeze. Fix: use bn_mode 'train' (which does the same here), or a model with "
            "BatchNorm or affine normalisation layers."
        )
    return [p for p in network.parameters() if p.requires_grad and id(p) not in frozen], report
