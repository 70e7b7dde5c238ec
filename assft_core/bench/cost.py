"""Cost benchmark of the scoring pass: how much one hooked pass + every metric costs over plain
sliding-window inference of the same model on the same cases (goal ≤ 1.3×; METHOD.md §0).

Without `--model`/`--data` it builds a tiny random-weights MONAI UNet and synthetic cases, so the
measurement runs anywhere (it then measures the hooks' overhead, not a real model's accuracy).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from assft_core.bench.timing import timed
from assft_core.config import InferenceConfig, QueryConfig
from assft_core.data.records import PreprocessedCase
from assft_core.models.card import ModelCard
from assft_core.models.checkpoint import LoadReport
from assft_core.models.inference import predict_probs, resolve_device
from assft_core.models.loaded import LoadedModel
from assft_core.models.registry import get_backbone
from assft_core.models.source_stats import batchnorm_source_stats
from assft_core.query.metrics import layer_kl, roi_uncertainty

GOAL_RATIO = 1.3


@dataclass
class ScoringCost:
    """Result of `measure_scoring_cost` (seconds per case, medians over cases and repeats).

    Attributes:
        plain_s: median time of `predict_probs` (plain sliding-window softmax).
        pass_s: median time of `LoadedModel.scoring_pass` (hooks: moments, embedding, softmax).
        scoring_s: median time of the scoring pass plus every metric (KL per layer, ASD, entropies, c).
        ratio: `scoring_s / plain_s`, the headline number (goal ≤ 1.3).
        pass_ratio: `pass_s / plain_s` (the hooks alone).
        paired_ratio / paired_pass_ratio: medians over every (case, repeat) of the scoring (or
            pass) time over the plain time measured beside it in the same rotation: the machine's
            speed drifts less between neighbouring timings than over a whole run, so these move
            less from run to run on a shared machine.
        n_cases / repeats: how many cases and timings per case.
        shape: (C, D, H, W) of the first case.
        device: where the model ran.
        roi_size / n_tta: the sliding-window settings used.
        goal_ratio: the target (1.3).
    """

    plain_s: float
    pass_s: float
    scoring_s: float
    ratio: float
    pass_ratio: float
    paired_ratio: float
    paired_pass_ratio: float
    n_cases: int
    repeats: int
    shape: list[int]
    device: str
    roi_size: list[int]
    n_tta: int
    goal_ratio: float = GOAL_RATIO

    @property
    def meets_goal(self) -> bool:
        """True when the full scoring costs at most `goal_ratio` × plain inference."""
        return self.ratio <= self.goal_ratio


def tiny_model(in_channels: int = 1, n_classes: int = 3, *, seed: int = 0, device: str = "cpu") -> LoadedModel:
    """A random-weights MONAI UNet (channels 8-16-32, BatchNorm) wrapped as a `LoadedModel`.

    Source statistics are its BatchNorm running statistics (origin "batchnorm"), so every term
    of the scoring pass is exercised. For benchmarks and tests; it predicts nothing meaningful.
    """
    torch.manual_seed(seed)
    kwargs = {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1, "norm": "batch"}
    backbone = get_backbone("unet")
    network = backbone.make(in_channels, n_classes, kwargs).to(resolve_device(device)).eval()
    card = ModelCard(
        backbone="unet",
        in_channels=in_channels,
        classes={k: ("background" if k == 0 else f"class{k}") for k in range(n_classes)},
        roi_size=(32, 32, 32),
        backbone_kwargs=kwargs,
        notes="random weights (cost benchmark / tests)",
    )
    stats = batchnorm_source_stats(network, backbone.encoder_norm_layers(network))
    report = LoadReport(checkpoint="", layout="none")
    return LoadedModel(network, card, report, stats or None, "batchnorm" if stats else "none", True, True)


def synthetic_cases(
    n: int, shape: tuple[int, int, int] = (48, 48, 48), *, in_channels: int = 1, seed: int = 0
) -> Iterator[PreprocessedCase]:
    """`n` random-blob volumes (C, D, H, W) on a 2 mm grid, generated one at a time."""
    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for i in range(n):
        image = rng.normal(0.0, 1.0, (in_channels, *shape)).astype(np.float32)
        yield PreprocessedCase(
            case_id=f"synthetic{i:03d}",
            image=image,
            label=None,
            affine=affine,
            spacing_mm=(2.0, 2.0, 2.0),
            native_shape=shape,
            native_affine=affine,
            content_hash=f"synthetic-{seed}-{i}",
        )


def measure_scoring_cost(
    model: LoadedModel,
    cases: Iterable[PreprocessedCase],
    infer_cfg: InferenceConfig,
    cfg: QueryConfig,
    *,
    repeats: int = 3,
    clock: str = "wall",
) -> ScoringCost:
    """Median per-case time of plain inference, the scoring pass, and scoring + metrics.

    The three are timed in rotating order on the same image so caches and clock drift hit each
    alike; one untimed warm-up of each runs first. CUDA work is synchronised before each reading.

    Args:
        model: the model to measure.
        cases: cases to run (each is used `repeats` times).
        infer_cfg: sliding-window settings (same for both paths).
        cfg: query settings (the metrics computed after the pass).
        repeats: timings per case and path.
        clock: "wall" or "cpu" (this process's CPU time; `bench.timing`).

    Returns:
        The `ScoringCost` (seconds on `clock`).

    Raises:
        ValueError: when `cases` is empty, `repeats` < 1, or the clock is unknown or "cpu" on CUDA.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    device = next(model.network.parameters()).device
    source = model.source_stats or {}

    def plain(image: torch.Tensor) -> None:
        predict_probs(model.network, image, infer_cfg)

    def hooked(image: torch.Tensor) -> None:
        model.scoring_pass(image, infer_cfg, embedding_stages=cfg.embedding_stages)

    def full(image: torch.Tensor) -> None:
        out = model.scoring_pass(image, infer_cfg, embedding_stages=cfg.embedding_stages)
        for name, (mu, var) in source.items():
            layer_kl(out.norm_moments[name], mu, var, cfg)
        if out.probs is not None:
            roi_uncertainty(out.probs.to(device), cfg)

    paths = [plain, hooked, full]
    times: dict[str, list[float]] = {f.__name__: [] for f in paths}
    pairs: list[tuple[float, float]] = []
    shape: list[int] = []
    n_cases = 0
    for case in cases:
        image = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))
        if not shape:
            shape = list(image.shape)
            for f in paths:  # warm-up: allocator, cuDNN autotuning, lazy imports
                f(image)
        for r in range(repeats):
            taken = {f.__name__: _timed(f, image, device, clock) for f in paths[r % 3 :] + paths[: r % 3]}
            for name, seconds in taken.items():
                times[name].append(seconds)
            pairs.append((taken["full"] / taken["plain"], taken["hooked"] / taken["plain"]))
        n_cases += 1
    if n_cases == 0:
        raise ValueError("no cases to measure")
    plain_s = statistics.median(times["plain"])
    pass_s = statistics.median(times["hooked"])
    scoring_s = statistics.median(times["full"])
    return ScoringCost(
        plain_s=plain_s,
        pass_s=pass_s,
        scoring_s=scoring_s,
        ratio=scoring_s / plain_s,
        pass_ratio=pass_s / plain_s,
        paired_ratio=statistics.median(full for full, _ in pairs),
        paired_pass_ratio=statistics.median(hooked for _, hooked in pairs),
        n_cases=n_cases,
        repeats=repeats,
        shape=shape,
        device=str(device),
        roi_size=list(infer_cfg.roi_size),
        n_tta=infer_cfg.n_tta,
    )


def _timed(path: Callable[[torch.Tensor], None], image: torch.Tensor, device: torch.device, clock: str) -> float:
    """Seconds of one path on one image (`bench.timing.timed`)."""
    return timed(lambda: path(image), device, clock)
