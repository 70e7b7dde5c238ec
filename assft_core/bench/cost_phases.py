"""Cost of every phase of a round: time (median) and peak memory, against plain inference.

Phases (ASSFT, METHOD.md §0–§5): `inference` (plain sliding-window softmax, the unit of the
ratios), `scoring` (the hooked scoring pass plus every metric, `cost.measure_scoring_cost`),
`train_step` (one fine-tuning optimiser step), `umap` (the 2D embedding: first fit in the process,
a refit, and a cache hit) and `pages` (each dashboard page run under `streamlit.testing`'s
AppTest on a project). Memory: `memory.PeakMemory` (sampled resident set on the CPU, allocator
peak on CUDA).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assft_core.bench.memory import PeakMemory
from assft_core.bench.timing import timed
from assft_core.config import InferenceConfig, QueryConfig, TrainConfig
from assft_core.data.records import PreprocessedCase
from assft_core.errors import DataError
from assft_core.models.loaded import LoadedModel


@dataclass
class PhaseCost:
    """The cost of one phase.

    Attributes:
        phase: the phase's name.
        unit: what one timing is ("case", "step", "fit", "page load").
        median_s: median seconds per unit.
        times_s: every timing, in order.
        peak_mib: peak memory the phase added, MiB (None when unmeasurable).
        memory_method: how memory was measured ("rss_sampled", "cuda_max_allocated", ...).
        ratio_to_inference: `median_s` / plain inference's median seconds per case, where the
            comparison means something (None elsewhere).
        details: phase-specific numbers (e.g. UMAP's first fit and cache hit).
    """

    phase: str
    unit: str
    median_s: float
    times_s: list[float]
    peak_mib: float | None
    memory_method: str
    ratio_to_inference: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def _device(model: LoadedModel) -> torch.device:
    return next(model.network.parameters()).device


def measure_inference(
    model: LoadedModel, cases: Sequence[PreprocessedCase], infer_cfg: InferenceConfig, *, repeats: int = 3,
    clock: str = "wall",
) -> PhaseCost:
    """Plain sliding-window softmax (`predict_probs`) per case: the reference of every ratio.

    One untimed warm-up on the first case, then `repeats` timings per case on `clock` ("wall" or
    "cpu", `bench.timing`).

    Raises:
        ValueError: when `cases` is empty.
    """
    from assft_core.models.inference import predict_probs

    if not cases:
        raise ValueError("no cases to measure")
    device = _device(model)
    images = [torch.from_numpy(np.ascontiguousarray(c.image, dtype=np.float32)) for c in cases]
    predict_probs(model.network, images[0], infer_cfg)
    times: list[float] = []
    with PeakMemory(device) as mem:
        for image in images:
            times += [timed(lambda: predict_probs(model.network, image, infer_cfg), device, clock) for _ in range(repeats)]
    return PhaseCost(
        "inference", "case", statistics.median(times), times, mem.peak_mib, mem.method, 1.0,
        {"n_cases": len(cases), "shape": list(cases[0].image.shape), "roi_size": list(infer_cfg.roi_size)},
    )


def measure_scoring(
    model: LoadedModel,
    cases: Sequence[PreprocessedCase],
    infer_cfg: InferenceConfig,
    query_cfg: QueryConfig,
    *,
    repeats: int = 3,
    clock: str = "wall",
) -> PhaseCost:
    """The scoring pass plus every metric per case (`cost.measure_scoring_cost`, which times plain
    inference alongside, in rotating order); memory of one uncached `score_cases` over the cases.

    Raises:
        ValueError: when `cases` is empty.
    """
    from assft_core.bench.cost import measure_scoring_cost
    from assft_core.query.scoring import score_cases

    result = measure_scoring_cost(model, cases, infer_cfg, query_cfg, repeats=repeats, clock=clock)
    with tempfile.TemporaryDirectory(prefix="assft-cost-") as tmp, PeakMemory(_device(model)) as mem:
        score_cases(model, cases, model_tag="cost", cfg=query_cfg, infer_cfg=infer_cfg, out_dir=Path(tmp), cache_key=None)
    return PhaseCost(
        "scoring", "case", result.scoring_s, [], mem.peak_mib, mem.method, result.ratio,
        {"plain_s": result.plain_s, "pass_s": result.pass_s, "pass_ratio": result.pass_ratio,
         "paired_ratio": result.paired_ratio, "paired_pass_ratio": result.paired_pass_ratio,
         "goal_ratio": result.goal_ratio, "meets_goal": result.meets_goal, "repeats": result.repeats,
         "n_cases": result.n_cases},
    )


def measure_train_step(
    model: LoadedModel, cases: Sequence[PreprocessedCase], train_cfg: TrainConfig, *, steps: int = 5
) -> PhaseCost:
    """Median time of one fine-tuning optimiser step (`train.trainer.train`) on labelled cases.

    Runs `steps + 1` steps on a copy of the network in a temporary folder; the first step (lazy
    allocations, autotuning) is left out of the median. Step times are the differences of the
    trainer's cumulative elapsed times, so checkpoint writes at the end are not counted.

    Raises:
        DataError: when a case has no label.
    """
    import copy
    import dataclasses

    from assft_core.train.data import TrainData, TrainSample
    from assft_core.train.trainer import train

    unlabelled = [c.case_id for c in cases if c.label is None]
    if unlabelled:
        raise DataError(f"cases {unlabelled[:3]} have no label; the fine-tuning step needs labelled cases.")
    samples = [TrainSample(c.case_id, c.image, np.asarray(c.label, dtype=np.uint8)) for c in cases]
    network = copy.deepcopy(model.network)
    cfg = dataclasses.replace(train_cfg, steps=steps + 1, checkpoint_every=steps + 1, device=str(_device(model)))
    with tempfile.TemporaryDirectory(prefix="assft-cost-") as tmp, PeakMemory(_device(model)) as mem:
        result = train(cfg, network, TrainData(samples), run_dir=Path(tmp))
    elapsed = [e.elapsed_s for e in result.history]
    times = list(np.diff(elapsed)) if len(elapsed) > 1 else elapsed
    return PhaseCost(
        "train_step", "step", statistics.median(times), [float(t) for t in times], mem.peak_mib, mem.method, None,
        {"batch_size": cfg.batch_size, "patch_size": list(cfg.patch_size), "first_step_s": elapsed[0] if elapsed else None},
    )


def measure_umap(n_points: int, dim: int, *, seed: int = 0) -> PhaseCost:
    """UMAP of `n_points` random unit vectors of size `dim` (`viz.embedding.embed_2d`).

    Three timings: the first fit in this process (numba compilation included, unless another
    fit ran before in it), a refit of other points (compiled), and a cache hit of the first
    points. `median_s` is the refit, what a dashboard pays per new embedding after start-up.

    Raises:
        ValueError: when `n_points` < 8 (below that `embed_2d` uses PCA, not UMAP).
    """
    from assft_core.viz.embedding import MIN_CASES_FOR_UMAP, embed_2d

    if n_points < MIN_CASES_FOR_UMAP:
        raise ValueError(f"UMAP needs at least {MIN_CASES_FOR_UMAP} points, got {n_points}")
    rng = np.random.default_rng(seed)

    def points() -> np.ndarray:
        z = rng.normal(size=(n_points, dim)).astype(np.float32)
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    first, second = points(), points()
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="assft-umap-") as tmp, PeakMemory(cpu) as mem:
        cache = Path(tmp)
        first_s = timed(lambda: embed_2d(first, cache_dir=cache), cpu)
        refit_s = timed(lambda: embed_2d(second), cpu)
        cached_s = timed(lambda: embed_2d(first, cache_dir=cache), cpu)
    return PhaseCost(
        "umap", "fit", refit_s, [first_s, refit_s, cached_s], mem.peak_mib, mem.method, None,
        {"n_points": n_points, "dim": dim, "first_fit_s": first_s, "refit_s": refit_s, "cached_s": cached_s},
    )


def measure_pages(project_dir: Path, *, repeats: int = 3, timeout_s: float = 120.0) -> PhaseCost:
    """Run time of each dashboard page under AppTest on the project (`dashboard.time_pages`: a
    first run of each page, kept apart in the details, then `repeats` fresh runs).

    Raises:
        StateError: when `project_dir` is not a project, or there is no dashboard checkout.
    """
    from assft_core.bench.dashboard import dashboard_pages, time_pages
    from assft_core.session.project import open_project

    open_project(project_dir)  # fails with the fix when it is not a project
    with PeakMemory(torch.device("cpu")) as mem:
        per_page = time_pages(project_dir, dashboard_pages(), repeats=repeats, timeout_s=timeout_s)
    # A page load here is AppTest's wall time (as this phase always measured); the script's
    # own seconds (`assft bench dashboard`'s number) are in the details.
    all_times = [t for page in per_page.values() for t in page["wall"]["times_s"]]
    first = {name: page["wall"]["first_s"] for name, page in per_page.items()}
    return PhaseCost(
        "pages", "page load", statistics.median(all_times), all_times, mem.peak_mib, mem.method, None,
        {"project": str(project_dir), "first_load_s": next(iter(first.values()), None), "first_run_s": first,
         "pages": {name: {"median_s": page["wall"]["median_s"], "times_s": page["wall"]["times_s"],
                          "script_median_s": page["median_s"], "exceptions": page["exceptions"]}
                   for name, page in per_page.items()}},
    )
