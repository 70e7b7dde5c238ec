"""A model ready for the engine: network + card + load report + source statistics.

`load_model` builds the card's backbone, loads its checkpoint (local files only) and the source
statistics in METHOD.md §1 order; `LoadedModel.scoring_pass` is the ONE forward pass per case and
model that gives every query metric its inputs (ASSFT, METHOD.md §0).
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from assft_core.config import InferenceConfig
from assft_core.errors import ModelError
from assft_core.models.card import CARD_FILE, ModelCard
from assft_core.models.checkpoint import LoadReport, load_weights
from assft_core.models.hooks import ScoringObserver, WindowPartition
from assft_core.models.inference import predict_probs, resolve_device, softmax_device
from assft_core.models.outputs import ForwardOutputs
from assft_core.models.registry import Backbone, get_backbone
from assft_core.models.source_stats import SourceStats, batchnorm_source_stats, load_source_stats
from assft_core.fsutil import atomic_write

SourceOrigin = Literal["file", "batchnorm", "none"]


@dataclass
class LoadedModel:
    """A loaded model and everything the scoring pass and the query need to know about it.

    Attributes:
        network: the network in eval mode on its device.
        card: its model card.
        report: what the checkpoint load did.
        source_stats: encoder norm layer -> (μ_src (C,), σ²_src (C,)) float64, unfloored; or None.
        source_stats_origin: "file" (statistics file), "batchnorm" (running statistics of f_0) or
            "none" (KG ≡ 1: the checkpoint holds no source knowledge).
        has_head: the checkpoint trained a head for the card's classes (else ASD is unavailable).
        has_embedding: the scoring pass yields z (false for a TorchScript model returning logits only).
        model_dir: the folder the card was read from (None for a model built in memory).
    """

    network: nn.Module
    card: ModelCard
    report: LoadReport
    source_stats: SourceStats | None
    source_stats_origin: SourceOrigin
    has_head: bool
    has_embedding: bool
    model_dir: Path | None = None

    @property
    def backbone(self) -> Backbone:
        """The registry entry of the card's backbone."""
        return get_backbone(self.card.backbone)

    @property
    def is_torchscript(self) -> bool:
        return self.card.backbone == "torchscript"

    def encoder_norm_layers(self) -> list[str]:
        """Names of the hooked encoder normalisation layers (empty for TorchScript)."""
        return [] if self.is_torchscript else self.backbone.encoder_norm_layers(self.network)

    def infer(self, image: torch.Tensor, cfg: InferenceConfig) -> torch.Tensor:
        """(K, D, H, W) float32 softmax of `image` (C, D, H, W); same as `predict_probs`."""
        return predict_probs(self.network, image, cfg)

    def scoring_pass(
        self, image: torch.Tensor, cfg: InferenceConfig, embedding_stages: str = "deepest"
    ) -> ForwardOutputs:
        """One sliding-window pass giving softmax, embedding z and exact encoder-norm input moments.

        Args:
            image: (C, D, H, W) preprocessed volume.
            cfg: sliding-window settings (TTA flips average the softmax; hooks see the
                un-flipped pass only).
            embedding_stages: "deepest" (GAP of the deepest encoder stage) or "all" (pooled
                stages concatenated), METHOD.md §1.

        Returns:
            ForwardOutputs: `probs` (K, D, H, W) float32 or None without a trained head;
            `embedding` (E,) L2-normalised or None; `norm_moments` per encoder norm layer.

        Raises:
            ModelError: for an image with the wrong channel count or an unknown `embedding_stages`.
        """
        if image.ndim != 4 or image.shape[0] != self.card.in_channels:
            raise ModelError(
                f"the model takes (C={self.card.in_channels}, D, H, W) images; got {tuple(image.shape)}."
            )
        if embedding_stages not in ("deepest", "all"):
            raise ModelError(f"embedding_stages={embedding_stages!r}; use 'deepest' or 'all'.")
        if self.is_torchscript:
            norms: list[str] = []
            stages: list[str] = []
            stride = 1
        else:
            backbone = self.backbone
            norms = backbone.encoder_norm_layers(self.network)
            all_stages = backbone.encoder_stages(self.network)
            stages = all_stages if embedding_stages == "all" else all_stages[-1:]
            stride = backbone.total_stride(self.network)
        partition = WindowPartition.build(image.shape[1:], cfg.roi_size, cfg.overlap, stride)
        with ScoringObserver(
            self.network,
            partition,
            norms,
            stages,
            channels_last_norms=not self.is_torchscript and self.backbone.norms_channels_last(self.network),
            embedding_from_output=self.is_torchscript,
            feature_axes=None if self.is_torchscript else self.backbone.feature_axes(self.network),
        ) as obs:
            # The softmax stays on the GPU the pass runs on (when it fits): the metrics read it there.
            out_device = softmax_device(self.network, cfg, self.card.out_channels, tuple(image.shape[1:]))
            probs = predict_probs(self.network, image, cfg, observer=obs, output_device=out_device)
        return ForwardOutputs(
            probs=probs if self.has_head else None,
            embedding=obs.embedding() if self.has_embedding else None,
            norm_moments=obs.norm_moments(),
        )


def load_model(model_dir_or_card: Path, *, device: str = "auto") -> LoadedModel:
    """Load a model from its folder (holding `model_card.json`) or its card file.

    Source statistics, METHOD.md §1 order: the card's statistics file; else BatchNorm running
    statistics of the encoder norm layers; else none.

    Args:
        model_dir_or_card: model folder or card JSON path.
        device: "auto", "cpu" or "cuda[:i]".

    Raises:
        ModelError: bad card, missing/unreadable checkpoint, channel mismatch, unfit weights,
            or a statistics file that does not fit the network.
    """
    path = Path(model_dir_or_card)
    card = ModelCard.load(path)
    folder = path if path.is_dir() else path.parent
    ckpt = card.resolve(folder, card.checkpoint)
    dev = resolve_device(device)
    if card.backbone == "torchscript":
        return _load_torchscript(card, ckpt, folder, dev)
    backbone = get_backbone(card.backbone)
    network = backbone.make(card.in_channels, card.out_channels, card.backbone_kwargs)
    report = load_weights(network, backbone, ckpt, card.in_channels)
    network.to(dev).eval()
    if card.backbone == "swin_unetr" and importlib.util.find_spec("einops") is None:
        report.notes.append("the einops package is missing: MONAI's Swin UNETR cannot run a forward pass; pip install einops.")
    heads = backbone.head_prefixes(network)
    head_keys = [k for k in network.state_dict() if k.startswith(heads)] if heads else []
    matched = set(report.matched)
    # A network whose head is not named (a foreign class without a layout) has one for the card's
    # classes when every weight loaded.
    has_head = all(k in matched for k in head_keys) if head_keys else not heads and not report.missing
    stats, origin = _source_stats(card, folder, network, backbone, report)
    has_embedding = bool(backbone.encoder_stages(network))
    return LoadedModel(network, card, report, stats, origin, has_head, has_embedding, folder)


def wrap_network(network: nn.Module, card: ModelCard) -> LoadedModel:
    """A `LoadedModel` for a network already in memory (e.g. f_t after a round of fine-tuning).

    The head is taken as trained; source statistics are its BatchNorm running statistics when
    present (KG always uses f_0's, loaded with `load_model`).

    Raises:
        ModelError: for a TorchScript card (load it with `load_model`) or an unknown backbone.
    """
    if card.backbone == "torchscript":
        raise ModelError("wrap_network: a TorchScript model is loaded from its file with load_model.")
    backbone = get_backbone(card.backbone)
    report = LoadReport(checkpoint="(in memory)", layout="none")
    stats, origin = _source_stats(card, None, network, backbone, report)
    return LoadedModel(network, card, report, stats, origin, True, True, None)


def _source_stats(
    card: ModelCard, folder: Path | None, network: nn.Module, backbone: Backbone, report: LoadReport
) -> tuple[SourceStats | None, SourceOrigin]:
    norms = backbone.encoder_norm_layers(network)
    if card.source_stats and folder is not None:
        stats = load_source_stats(card.resolve(folder, card.source_stats))
        unknown = sorted(set(stats) - set(norms))
        if unknown:
            raise ModelError(
                f"{card.resolve(folder, card.source_stats)}: layers {unknown[:3]} are not encoder norm layers of "
                f"backbone {card.backbone!r}; recompute it with `assft stats` for this model."
            )
        report.notes.append(f"source statistics: file {card.source_stats} ({len(stats)} layers).")
        return stats, "file"
    bn = batchnorm_source_stats(network, norms)
    if bn:
        report.notes.append(
            "source statistics: BatchNorm running statistics of the checkpoint (second choice: they average "
            "augmented training crops, so even source-like cases get KG > 0). Run `assft stats` on source data "
            "you own for exact ones."
        )
        return bn, "batchnorm"
    report.notes.append(
        "no source statistics: this checkpoint holds no source knowledge (no statistics file, no BatchNorm "
        "running statistics), so KG ≡ 1 and DKD is diversity only. Run `assft stats` on source data you own."
    )
    return None, "none"


def _load_torchscript(card: ModelCard, ckpt: Path, folder: Path, dev: torch.device) -> LoadedModel:
    if not ckpt.is_file():
        raise ModelError(f"{ckpt}: TorchScript file not found; check the model card's 'checkpoint' field.")
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; users still ship it
            warnings.simplefilter("ignore", DeprecationWarning)
            network = torch.jit.load(str(ckpt), map_location=dev)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"{ckpt}: not a TorchScript model ({str(exc).splitlines()[0]}); save it with torch.jit.save.") from None
    network.eval()
    report = LoadReport(checkpoint=str(ckpt), layout="torchscript")
    embedding_module = card.backbone_kwargs.get("embedding_module")
    if embedding_module:
        network = _ScriptedWithEmbedding(network, str(embedding_module), ckpt)
    probe = torch.zeros(1, card.in_channels, *card.roi_size, device=dev)
    try:
        with torch.no_grad():
            out = network(probe)
    except RuntimeError as exc:
        raise ModelError(
            f"{ckpt}: the scripted model fails on a (1, {card.in_channels}, {', '.join(map(str, card.roi_size))}) "
            f"input ({str(exc).splitlines()[0]}); check 'in_channels' and 'roi_size' in the card."
        ) from None
    logits = out[0] if isinstance(out, (tuple, list)) else out
    if embedding_module and (len(out) < 2 or out[1].ndim != 2):
        raise ModelError(
            f"{ckpt}: submodule {embedding_module!r} does not give (B, E, d, h, w) features for a "
            f"(1, {card.in_channels}, {', '.join(map(str, card.roi_size))}) input; name another one in "
            "backbone_kwargs.embedding_module."
        )
    if not isinstance(logits, torch.Tensor) or logits.ndim != 5 or logits.shape[1] != card.out_channels:
        raise ModelError(
            f"{ckpt}: the scripted model must return logits (B, K={card.out_channels}, D, H, W) or "
            "(logits, embedding); fix the model or the card's classes."
        )
    has_embedding = isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor)
    if not has_embedding:
        report.notes.append(
            "TorchScript model returns logits only (no embedding): only output-based strategies "
            "(entropy, fg_entropy, random) can run; return (logits, embedding), or name an encoder submodule in "
            "backbone_kwargs.embedding_module, to enable diversity."
        )
    elif embedding_module:
        report.notes.append(
            f"TorchScript embedding from submodule {embedding_module!r} (pooled features; one extra pass through it per window)."
        )
    report.notes.append("TorchScript: no hookable encoder, so no source statistics: KG ≡ 1.")
    return LoadedModel(network, card, report, None, "none", True, has_embedding, folder)


class _ScriptedWithEmbedding(nn.Module):
    """A logits-only TorchScript model plus its named encoder submodule as the embedding route.

    ScriptModules take no Python forward hooks, so the submodule the card names
    (`backbone_kwargs.embedding_module`, e.g. "encoder": it must map the (B, C, *roi) input to
    (B, E, d, h, w) features) is called on each window beside the full model, and its output is
    average-pooled into the (B, E) embedding: `forward` returns `(logits, embedding)`. This costs a
    second pass through that submodule per window.
    """

    def __init__(self, scripted: nn.Module, name: str, ckpt: Path) -> None:
        super().__init__()
        self.scripted = scripted
        sub: nn.Module | None = scripted
        for part in name.split("."):
            sub = getattr(sub, part, None)
            if not isinstance(sub, nn.Module):
                raise ModelError(
                    f"{ckpt}: the scripted model has no submodule {name!r}; fix backbone_kwargs.embedding_module in "
                    "the model card (a submodule mapping the input to (B, E, d, h, w) features)."
                )
        self.embedder = sub

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.scripted(x)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        features = self.embedder(x)
        if isinstance(features, (tuple, list)):
            features = features[-1]
        return logits, features.flatten(2).mean(2)


def save_model(network: nn.Module, card: ModelCard, model_dir: Path) -> Path:
    """Write `network`'s state_dict (as `card.checkpoint`) and the card into `model_dir`, atomically.

    Each file is written to a temporary name then renamed; the card is written last, so a folder
    with a card always has its weights. An existing model in `model_dir` is replaced (model
    folders belong to the engine, never to the user's data).

    Returns:
        The model folder.

    Raises:
        ModelError: when `card.checkpoint` is an absolute path (a saved model is self-contained).
    """
    model_dir = Path(model_dir)
    if Path(card.checkpoint).is_absolute():
        raise ModelError(f"save_model: card.checkpoint {card.checkpoint!r} must be a file name inside the model folder.")
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    target = model_dir / card.checkpoint
    atomic_write(target, lambda tmp: torch.save(state, tmp))
    card.save(model_dir / CARD_FILE)
    return model_dir


__all__ = ["LoadedModel", "load_model", "save_model", "wrap_network"]
