"""Source statistics (μ_src, σ²_src) of the encoder normalisation layers (ASSFT, METHOD.md §1).

Order of preference: (a) a statistics file beside the checkpoint, computed by THIS scoring code
over whole source volumes (`compute_source_stats`, `assft stats`); (b) BatchNorm running
statistics of f_0; (c) none. `floored_source_var` applies the σ²_src floor in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from assft_core.config import InferenceConfig, QueryConfig
from assft_core.errors import ModelError
from assft_core.models.outputs import NormMoments
from assft_core.fsutil import atomic_write

if TYPE_CHECKING:
    from assft_core.models.loaded import LoadedModel

SourceStats = dict[str, tuple[torch.Tensor, torch.Tensor]]
STATS_FILE = "source_stats.pt"
STATS_FORMAT = "assft-source-stats/1"


def pooled_moments(per_case: Iterable[dict[str, NormMoments]]) -> dict[str, NormMoments]:
    """Sum Σx, Σx² and n per layer over cases: the moments of all source voxels together."""
    total: dict[str, NormMoments] = {}
    for moments in per_case:
        for name, m in moments.items():
            if name in total:
                t = total[name]
                total[name] = NormMoments(sum=t.sum + m.sum, sumsq=t.sumsq + m.sumsq, n=t.n + m.n)
            else:
                total[name] = NormMoments(sum=m.sum.clone(), sumsq=m.sumsq.clone(), n=m.n)
    return total


def compute_source_stats(
    loaded: LoadedModel, images: Iterable[torch.Tensor], cfg: InferenceConfig
) -> SourceStats:
    """Per encoder norm layer, μ_src and σ²_src over every voxel of the given source volumes.

    Uses the same scoring pass as the query (one case at a time, exact window moments), pooling
    Σx, Σx², n over cases, so a source case scored later has KL ≈ 0 against these statistics.

    Args:
        loaded: the model f_0.
        images: source volumes, each (C, D, H, W), preprocessed like the target data.
        cfg: sliding-window settings (n_tta is irrelevant: hooks see the un-flipped pass).

    Returns:
        layer -> (μ_src (C,), σ²_src (C,)) float64, unfloored.

    Raises:
        ModelError: when no image is given or the model has no hookable encoder norm layers.
    """
    if not loaded.encoder_norm_layers():
        raise ModelError(
            f"backbone {loaded.card.backbone!r} exposes no encoder normalisation layers; source statistics "
            "cannot be computed for it."
        )
    per_case = (loaded.scoring_pass(img, cfg).norm_moments for img in images)
    total = pooled_moments(per_case)
    if not total:
        raise ModelError("no source image was given; `assft stats` needs at least one source case.")
    return {name: (m.mean, m.var) for name, m in total.items()}


def save_source_stats(stats: SourceStats, path: Path, meta: dict[str, object] | None = None) -> Path:
    """Write statistics to `path` (temp file, then rename).

    Args:
        stats: layer -> (μ (C,), σ² (C,)).
        path: target file (e.g. model_dir / "source_stats.pt").
        meta: JSON-like provenance (cases used, dataset, fingerprint).
    """
    path = Path(path)
    payload = {
        "format": STATS_FORMAT,
        "layers": {k: {"mean": m.double().cpu(), "var": v.double().cpu()} for k, (m, v) in stats.items()},
        "meta": dict(meta or {}),
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_source_stats(path: Path) -> SourceStats:
    """Read a statistics file written by `save_source_stats`.

    Raises:
        ModelError: naming the file when it is missing, not in this format, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: source-statistics file not found; run `assft stats` or remove 'source_stats' from the card.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise ModelError(f"{path}: unreadable source-statistics file ({exc}); rerun `assft stats`.") from None
    if not isinstance(payload, dict) or payload.get("format") != STATS_FORMAT or not isinstance(payload.get("layers"), dict):
        raise ModelError(f"{path}: not an ASSFT source-statistics file ({STATS_FORMAT}); rerun `assft stats`.")
    out: SourceStats = {}
    for name, entry in payload["layers"].items():
        mean, var = entry.get("mean"), entry.get("var")
        if not (isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor) and mean.shape == var.shape and mean.ndim == 1):
            raise ModelError(f"{path}: layer {name!r} lacks (C,) 'mean' and 'var' tensors; rerun `assft stats`.")
        out[name] = (mean.double(), var.double())
    return out


def batchnorm_source_stats(network: nn.Module, norm_layers: Iterable[str]) -> SourceStats:
    """Running statistics of the BatchNorm layers among `norm_layers` (METHOD.md §1, choice b).

    Returns:
        layer -> (running_mean (C,), running_var (C,)) float64; empty when none tracks them.
    """
    modules = dict(network.named_modules())
    out: SourceStats = {}
    for name in norm_layers:
        m = modules[name]
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None:
            out[name] = (m.running_mean.detach().double().cpu().clone(), m.running_var.detach().double().cpu().clone())
    return out


def variance_floor(var: torch.Tensor, cfg: QueryConfig) -> float:
    """φ_s = max(var_floor_abs, var_floor_rel · median over channels of σ²_src) (METHOD.md §1).

    Args:
        var: (C,) source variances of one layer.
        cfg: query settings (`var_floor_abs`, `var_floor_rel`).
    """
    return max(cfg.var_floor_abs, cfg.var_floor_rel * float(var.double().quantile(0.5)))


def floored_source_var(var: torch.Tensor, cfg: QueryConfig) -> torch.Tensor:
    """σ²_src floored at φ_s (`variance_floor`, METHOD.md §1).

    Args:
        var: (C,) source variances of one layer.
        cfg: query settings (`var_floor_abs`, `var_floor_rel`).

    Returns:
        (C,) floored variances, same dtype.
    """
    return var.clamp_min(variance_floor(var, cfg))
