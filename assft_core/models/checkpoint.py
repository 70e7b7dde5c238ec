"""Loading weights from local checkpoint files into a built backbone, with a load report.

Layouts understood (all read with `torch.load(weights_only=True)`, never from the network):
- a plain state_dict, or one nested under "state_dict" / "model" / "net" (any depth), with or
  without DataParallel/DDP `module.` prefixes;
- MONAI's self-supervised Swin UNETR `model_swinvit.pt`: {"state_dict": {"module.patch_embed…",
  "module.layers1.0.blocks…"}}, loaded through `SwinUNETR.load_from` (still in MONAI 1.6.1);
- MONAI's `ssl_pretrained_weights.pth`: {"model": {"encoder.patch_embed…", "encoder.layers1.0.0…"}},
  loaded through `monai.networks.nets.swin_unetr.filter_swinunetr` + `copy_model_state`.
Neither self-supervised layout holds a class head: the head stays at its initialisation and the
report says so (no ASD at round 0, METHOD.md §2).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.networks.nets.swin_unetr import filter_swinunetr
from monai.networks.utils import copy_model_state
from torch import nn

from assft_core.errors import ModelError
from assft_core.models.registry import Backbone

_NUMPY_SAFE = [
    np._core.multiarray.scalar,  # type: ignore[attr-defined]
    np.dtype,
    *(getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")),
]
_NEST_KEYS = ("state_dict", "model", "net", "network_weights")  # the last: nnU-Net v2 checkpoints


@dataclass
class LoadReport:
    """What a checkpoint load did, key by key (printable).

    Attributes:
        checkpoint: the file read.
        layout: "state_dict", "swinvit_ssl", "ssl_pretrained", "torchscript" or "none" (no file).
        matched: network keys copied from the checkpoint.
        missing: network keys the checkpoint lacks (left at their initialisation).
        unexpected: checkpoint keys the network has no place for (ignored).
        reinitialised: head keys whose shape differs (another class count): left at initialisation.
        notes: plain-language consequences (no head, no embedding ...).
    """

    checkpoint: str
    layout: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def few(keys: list[str]) -> str:
            return "" if not keys else ": " + ", ".join(keys[:5]) + (" …" if len(keys) > 5 else "")

        lines = [
            f"checkpoint {self.checkpoint} (layout: {self.layout})",
            f"  matched {len(self.matched)} keys",
            f"  missing {len(self.missing)}{few(self.missing)}",
            f"  unexpected {len(self.unexpected)}{few(self.unexpected)}",
            f"  re-initialised {len(self.reinitialised)}{few(self.reinitialised)}",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def read_checkpoint(path: Path) -> object:
    """The object stored in a local checkpoint file, on the CPU, tensors only (`weights_only`).

    Raises:
        ModelError: naming the file when it is missing or not a tensors-only PyTorch file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found; check the model card's 'checkpoint' field.")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "numpy" not in str(exc):
                raise
            # nnU-Net v2 checkpoints log numpy scalars beside the weights: allow those types only.
            with torch.serialization.safe_globals(_NUMPY_SAFE):
                return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelError(
            f"{path}: not a loadable PyTorch weights file ({str(exc).splitlines()[0]}). Save it with "
            "torch.save(model.state_dict(), path); pickled Python objects are refused for safety."
        ) from None


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor state_dict inside a checkpoint object, with `module.` prefixes stripped.

    Descends through "state_dict" / "model" / "net" wrappers; other entries (optimizer, epoch)
    are ignored.

    Raises:
        ModelError: when no tensor state_dict is found (names the file and the top-level keys).
    """
    seen = obj
    while isinstance(seen, Mapping) and not _is_tensor_dict(seen):
        inner = next((seen[k] for k in _NEST_KEYS if k in seen and isinstance(seen[k], Mapping)), None)
        if inner is None:
            break
        seen = inner
    if not isinstance(seen, Mapping) or not any(isinstance(v, torch.Tensor) for v in seen.values()):
        top = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise ModelError(
            f"{path}: no state_dict found (top level: {top}); expected tensors at the top level or under "
            f"one of {list(_NEST_KEYS)}."
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in seen.items():
        if isinstance(value, torch.Tensor):
            k = str(key)
            while k.startswith("module."):
                k = k[len("module."):]
            out[k] = value
    return out


def _channel_error(path: Path, key: str, ckpt_channels: int, in_channels: int) -> ModelError:
    return ModelError(
        f"{path}: the checkpoint takes {ckpt_channels} input channel(s) (key {key!r}) but the model card / "
        f"dataset has {in_channels}. Use a dataset with {ckpt_channels} channel(s), or a checkpoint trained "
        f"for {in_channels}; input layers are never silently re-initialised."
    )


def _detect_layout(obj: object, backbone: Backbone) -> str:
    if backbone.name == "swin_unetr" and isinstance(obj, Mapping):
        sd = obj.get("state_dict")
        if isinstance(sd, Mapping) and "module.patch_embed.proj.weight" in sd and any(
            str(k).startswith("module.layers1.0.") for k in sd
        ):
            return "swinvit_ssl"
        model = obj.get("model")
        if isinstance(model, Mapping) and "encoder.patch_embed.proj.weight" in model:
            return "ssl_pretrained"
    return "state_dict"


def load_weights(network: nn.Module, backbone: Backbone, path: Path, in_channels: int) -> LoadReport:
    """Load the checkpoint at `path` into `network` (in place) and report what happened.

    Args:
        network: the backbone built for the card's in_channels and classes.
        backbone: its registry entry (head prefixes).
        path: local checkpoint file.
        in_channels: C of the card.

    Returns:
        The load report.

    Raises:
        ModelError: unreadable file; different input channel count; a non-head shape mismatch
            (backbone_kwargs do not match the checkpoint); no key matched at all.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    layout = _detect_layout(obj, backbone)
    if layout == "swinvit_ssl":
        report = _load_swinvit_ssl(network, obj, path, in_channels)  # type: ignore[arg-type]
    elif layout == "ssl_pretrained":
        report = _load_ssl_pretrained(network, obj, path, in_channels)  # type: ignore[arg-type]
    else:
        report = _load_state_dict(network, backbone, unwrap_state_dict(obj, path), path, in_channels)
    if not report.matched:
        raise ModelError(
            f"{path}: no weight of the checkpoint fits backbone {backbone.name!r} (first keys: "
            f"{report.unexpected[:3]}); check 'backbone' and 'backbone_kwargs' in the model card."
        )
    return report


def _load_state_dict(
    network: nn.Module, backbone: Backbone, state: dict[str, torch.Tensor], path: Path, in_channels: int
) -> LoadReport:
    own = network.state_dict()
    heads = backbone.head_prefixes(network)
    report = LoadReport(checkpoint=str(path), layout="state_dict")
    usable: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        target = own[key]
        if target.shape == value.shape:
            usable[key] = value
            report.matched.append(key)
        elif key.startswith(heads):
            report.reinitialised.append(key)
        elif (
            value.ndim == target.ndim >= 2
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
            and target.shape[1] == in_channels
        ):
            raise _channel_error(path, key, int(value.shape[1]), in_channels)
        else:
            raise ModelError(
                f"{path}: weight {key!r} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(target.shape)} in backbone {backbone.name!r}; fix 'backbone_kwargs' in the model card."
            )
    network.load_state_dict(usable, strict=False)
    report.missing = [k for k in own if k not in state]
    if report.reinitialised:
        report.notes.append(
            f"class head re-initialised ({len(report.reinitialised)} keys): the checkpoint was trained for "
            "another class count; ASD is unavailable until fine-tuning trains the head."
        )
    return report


def _load_swinvit_ssl(network: nn.Module, obj: Mapping, path: Path, in_channels: int) -> LoadReport:
    state = obj["state_dict"]
    w = state["module.patch_embed.proj.weight"]
    if int(w.shape[1]) != in_channels:
        raise _channel_error(path, "module.patch_embed.proj.weight", int(w.shape[1]), in_channels)
    own = network.state_dict()
    report = LoadReport(checkpoint=str(path), layout="swinvit_ssl")
    for key, value in state.items():
        # The SSL repository names the MLP layers fc1/fc2; MONAI's load_from maps them to linear1/2.
        target = "swinViT." + str(key)[len("module."):].replace(".mlp.fc1.", ".mlp.linear1.").replace(
            ".mlp.fc2.", ".mlp.linear2."
        )
        if target in own and own[target].shape == value.shape:
            report.matched.append(target)
        else:
            report.unexpected.append(str(key))
    try:
        network.load_from(obj)  # type: ignore[operator]
    except (KeyError, RuntimeError) as exc:
        raise ModelError(
            f"{path}: model_swinvit.pt layout does not fit this Swin UNETR ({exc}); check 'feature_size' and "
            "'depths' in the model card's backbone_kwargs."
        ) from None
    matched = set(report.matched)
    report.missing = [k for k in own if k not in matched]
    report.notes.append(_SSL_NOTE)
    return report


def _load_ssl_pretrained(network: nn.Module, obj: Mapping, path: Path, in_channels: int) -> LoadReport:
    src = obj["model"]
    w = src["encoder.patch_embed.proj.weight"]
    if int(w.shape[1]) != in_channels:
        raise _channel_error(path, "encoder.patch_embed.proj.weight", int(w.shape[1]), in_channels)
    own = network.state_dict()
    report = LoadReport(checkpoint=str(path), layout="ssl_pretrained")
    fitting: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        mapped = filter_swinunetr(str(key), value)
        if mapped is not None and mapped[0] in own and own[mapped[0]].shape == value.shape:
            fitting[str(key)] = value
        else:
            report.unexpected.append(str(key))
    # Only keys that land on a same-shaped weight are passed on: MONAI's filter path copies
    # whatever the filter returns, and a strict load would then fail on a stray key.
    _, updated, _ = copy_model_state(network, fitting, filter_func=filter_swinunetr, inplace=True)
    report.matched = sorted(set(updated))
    matched = set(report.matched)
    report.missing = [k for k in own if k not in matched]
    report.notes.append(_SSL_NOTE)
    return report


_SSL_NOTE = (
    "self-supervised Swin UNETR encoder weights only: the decoder and class head are untrained, so "
    "ASD is unavailable at round 0 and the query uses DKD alone."
)
