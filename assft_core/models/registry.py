"""Backbone registry: a name -> how to build a MONAI network and where its encoder is.

Each backbone declares, besides its constructor, the parts the scoring pass and the checkpoint
loader need (ASSFT, METHOD.md §1): the encoder normalisation layers whose inputs carry the
statistics compared with the source, the encoder stages pooled into the embedding `z` (deepest
last), and the state-dict prefixes of the class head (re-initialised for a new class count).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from monai.networks.nets import SegResNet, SwinUNETR, UNet
from monai.networks.layers.simplelayers import SkipConnection
from torch import nn

from assft_core.errors import ModelError

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


class Backbone:
    """What the engine knows about one network family. Subclass and `@register_backbone(name)`.

    Attributes:
        name: registry name (set by `register_backbone`).
        default_kwargs: constructor defaults, overridden by the card's `backbone_kwargs`.
        channels_last_norms: True when the encoder norm layers see (B, D, H, W, C) inputs.
    """

    name: str = ""
    default_kwargs: dict[str, Any] = {}
    channels_last_norms: bool = False

    def build(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        """The network mapping (B, in_channels, *roi) to logits (B, out_channels, *roi)."""
        raise NotImplementedError

    def encoder_norm_layers(self, network: nn.Module) -> list[str]:
        """Module names of the encoder normalisation layers, shallow to deep (METHOD.md §1)."""
        raise NotImplementedError

    def encoder_stages(self, network: nn.Module) -> list[str]:
        """Module names whose (B, C, d, h, w) outputs are the encoder stages, deepest last."""
        raise NotImplementedError

    def head_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        """State-dict key prefixes of the class head (shapes that depend on the class count)."""
        raise NotImplementedError

    def total_stride(self, network: nn.Module) -> int:
        """The encoder's total downsampling factor; windows are split on multiples of it."""
        return 1

    def norms_channels_last(self, network: nn.Module) -> bool:
        """True when `network`'s encoder norm layers see (B, D, H, W, C) inputs (Swin UNETR)."""
        return self.channels_last_norms

    def feature_axes(self, network: nn.Module) -> tuple[int, int, int] | None:
        """For a network reading the spatial axes in another order (nnU-Net): feature axis j is
        this project's axis `feature_axes[j]`; None when the order is this project's (D, H, W)."""
        return None

    def make(self, in_channels: int, out_channels: int, kwargs: dict[str, Any]) -> nn.Module:
        """Build with `default_kwargs` overridden by `kwargs`.

        Raises:
            ModelError: when MONAI rejects the arguments (names the backbone and the arguments).
        """
        merged = {**self.default_kwargs, **kwargs}
        try:
            return self.build(in_channels, out_channels, **merged)
        except (TypeError, ValueError, AssertionError) as exc:
            raise ModelError(
                f"backbone {self.name!r} cannot be built with in_channels={in_channels}, "
                f"out_channels={out_channels}, backbone_kwargs={merged}: {exc}. Fix 'backbone_kwargs' in the model card."
            ) from None


_REGISTRY: dict[str, type[Backbone]] = {}


def register_backbone(name: str) -> Callable[[type[Backbone]], type[Backbone]]:
    """Class decorator registering a `Backbone` subclass under `name`."""

    def deco(cls: type[Backbone]) -> type[Backbone]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_backbone(name: str) -> Backbone:
    """The registered backbone `name`.

    Raises:
        ModelError: for an unknown name (lists the known ones).
    """
    registry = _registry()
    if name not in registry:
        raise ModelError(f"unknown backbone {name!r}; known: {sorted(registry)}. Fix 'backbone' in the model card.")
    return registry[name]()


# Foreign formats register their backbones ("monai_bundle", "nnunet") from their own modules, which
# import this one: loaded on the first lookup, never at import time (no import cycle, so threads may
# import the engine in any order; tests/engine/test_import_order.py).
_FORMAT_MODULES = ("assft_core.models.formats.monai_bundle", "assft_core.models.formats.nnunet_folder")


def _registry() -> dict[str, type[Backbone]]:
    """Every registered backbone, the foreign formats' included."""
    import importlib

    for module in _FORMAT_MODULES:
        importlib.import_module(module)
    return _REGISTRY


def norm_layers_under(network: nn.Module, prefixes: list[str]) -> list[str]:
    """Names of every normalisation module inside the modules named `prefixes`, in module order."""
    out = []
    for name, module in network.named_modules():
        if isinstance(module, NORM_TYPES) and any(name == p or name.startswith(p + ".") for p in prefixes):
            out.append(name)
    return out


def _unet_encoder(network: UNet) -> tuple[list[str], str]:
    """(down-path module names, bottom module name) of a MONAI UNet.

    MONAI nests UNet as Sequential(down, SkipConnection(Sequential(down, SkipConnection(...), up)), up),
    the innermost SkipConnection holding the bottom unit.
    """
    downs: list[str] = []
    prefix, seq = "model", network.model
    while True:
        downs.append(f"{prefix}.0")
        skip = seq[1]
        assert isinstance(skip, SkipConnection)
        sub = skip.submodule
        if isinstance(sub, nn.Sequential) and len(sub) == 3 and isinstance(sub[1], SkipConnection):
            prefix, seq = f"{prefix}.1.submodule", sub
            continue
        return downs, f"{prefix}.1.submodule"


@register_backbone("unet")
class UNetBackbone(Backbone):
    """MONAI UNet with BatchNorm; encoder = the down path and the bottom unit (METHOD.md §1)."""

    default_kwargs = {"channels": (8, 16, 32, 64), "strides": (2, 2, 2), "num_res_units": 2, "norm": "batch"}

    def build(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kwargs)

    def encoder_norm_layers(self, network: nn.Module) -> list[str]:
        downs, bottom = _unet_encoder(network)  # type: ignore[arg-type]
        return norm_layers_under(network, [*downs, bottom])

    def encoder_stages(self, network: nn.Module) -> list[str]:
        downs, bottom = _unet_encoder(network)  # type: ignore[arg-type]
        return [*downs, bottom]

    def head_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        return ("model.2.",)  # the outermost up block: every shape in it has K channels

    def total_stride(self, network: nn.Module) -> int:
        stride = 1
        for s in network.strides:  # type: ignore[union-attr]
            stride *= int(s) if isinstance(s, int) else int(max(s))
        return stride


@register_backbone("segresnet")
class SegResNetBackbone(Backbone):
    """MONAI SegResNet (instance norm by default here); encoder = `down_layers`."""

    default_kwargs = {"init_filters": 8, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1), "norm": "instance"}

    def build(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kwargs)

    def encoder_norm_layers(self, network: nn.Module) -> list[str]:
        return norm_layers_under(network, [f"down_layers.{i}" for i in range(len(network.down_layers))])

    def encoder_stages(self, network: nn.Module) -> list[str]:
        return [f"down_layers.{i}" for i in range(len(network.down_layers))]

    def head_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        return ("conv_final.",)

    def total_stride(self, network: nn.Module) -> int:
        return 2 ** (len(network.down_layers) - 1)


@register_backbone("swin_unetr")
class SwinUNETRBackbone(Backbone):
    """MONAI Swin UNETR. Encoder norms: the first LayerNorm (`norm1`) of every block of each Swin
    stage, i.e. the normalisation each transformer block applies to its input; their inputs are
    channels-last (B, D, H, W, C). Stages: the four Swin stages' outputs (deepest: 1/32 of the ROI).
    """

    default_kwargs = {"feature_size": 12}
    channels_last_norms = True

    def build(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        return SwinUNETR(in_channels=in_channels, out_channels=out_channels, spatial_dims=3, **kwargs)

    def encoder_norm_layers(self, network: nn.Module) -> list[str]:
        return [n for n, m in network.named_modules() if n.startswith("swinViT.layers") and n.endswith(".norm1")]

    def encoder_stages(self, network: nn.Module) -> list[str]:
        return [f"swinViT.layers{i}.0" for i in range(1, 5)]  # BasicLayer inside each ModuleList

    def head_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        return ("out.",)

    def total_stride(self, network: nn.Module) -> int:
        return 32


@register_backbone("torchscript")
class TorchScriptBackbone(Backbone):
    """A scripted model (`torch.jit.save`), loaded from its file rather than built.

    It returns logits (B, K, *roi) or `(logits, embedding)` with (B, E); `backbone_kwargs.embedding_module`
    names a submodule whose pooled output is the embedding (`loaded._ScriptedWithEmbedding`). Scripted modules expose no
    hookable encoder, so no normalisation statistics (KG ≡ 1) and, without the embedding output,
    no `z` either: then only output-based strategies run.
    """

    def build(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        raise ModelError("a 'torchscript' model is loaded from its scripted file, not built; use load_model.")

    def encoder_norm_layers(self, network: nn.Module) -> list[str]:
        return []

    def encoder_stages(self, network: nn.Module) -> list[str]:
        return []

    def head_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        return ()

