"""What a strategy benchmark runs: one `RunSpec` per (pool, strategy, seed, SSFT mode), the
references, and each seed's pool subset (ASSFT, METHOD.md §5).

Pure functions of the config, so a resumed benchmark plans exactly the runs it planned before.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from assft_core.bench.config import StrategyBenchConfig
from assft_core.config import SSFTMode

# Separates the subset draw from every other use of a seed (training, strategies).
_SUBSET_STREAM = 80


@dataclass(frozen=True, order=True)
class RunSpec:
    """One active-learning run with the oracle.

    Attributes:
        pool: "balanced" or "unbalanced".
        strategy: registered strategy name.
        seed: draws the pool subset, seeds training and the strategy.
        ssft_mode: SSFT mode of every round's training.
    """

    pool: str
    strategy: str
    seed: int
    ssft_mode: SSFTMode

    @property
    def run_id(self) -> str:
        """A folder-safe id, e.g. `unbalanced/assft/none/seed-0`."""
        return f"{self.pool}/{self.strategy}/{SSFTMode(self.ssft_mode).value}/seed-{self.seed}"


@dataclass(frozen=True, order=True)
class ReferenceSpec:
    """A ceiling run (all of the seed's pool labelled) or the floor (`f_0` as it is).

    The floor does not depend on the seed (`f_0` and the test set are fixed), so it is planned
    once per pool, with seed 0.
    """

    pool: str
    kind: str
    seed: int

    @property
    def run_id(self) -> str:
        """A folder-safe id, e.g. `unbalanced/ceiling/seed-1`."""
        return f"{self.pool}/{self.kind}/seed-{self.seed}"


def plan_runs(cfg: StrategyBenchConfig) -> list[RunSpec]:
    """Every run of `cfg`, each once: the comparison (every strategy at `cfg.ssft_mode`) and the
    ablation (`cfg.ablation_strategy` at every ablation mode); a run both need is planned once.

    Returns:
        Runs ordered by pool, then seed, then strategy with `random` first (the baseline every
        other strategy is compared to), so an interrupted benchmark has whole seeds, and random
        in each, to show.
    """
    specs = {RunSpec(p, s, seed, cfg.ssft_mode) for p in cfg.pools for s in cfg.strategies for seed in cfg.seeds}
    specs |= {RunSpec(p, cfg.ablation_strategy, seed, m) for p in cfg.pools for m in cfg.ablation_modes for seed in cfg.seeds}
    return sorted(specs, key=lambda r: (r.pool, r.seed, r.strategy != "random", r.strategy, SSFTMode(r.ssft_mode).value))


def plan_references(cfg: StrategyBenchConfig) -> list[ReferenceSpec]:
    """The floor of each pool (once) and its ceiling for each seed, as `cfg` asks."""
    refs = [ReferenceSpec(p, "floor", 0) for p in cfg.pools if cfg.floor]
    refs += [ReferenceSpec(p, "ceiling", seed) for p in cfg.pools for seed in cfg.seeds if cfg.ceiling]
    return refs


def comparison_runs(cfg: StrategyBenchConfig, runs: Sequence[RunSpec]) -> list[RunSpec]:
    """The runs of the strategy comparison (every strategy at the comparison's SSFT mode)."""
    return [r for r in runs if r.strategy in cfg.strategies and r.ssft_mode is cfg.ssft_mode]


def ablation_runs(cfg: StrategyBenchConfig, runs: Sequence[RunSpec]) -> list[RunSpec]:
    """The runs of the SSFT ablation (the fixed strategy at every ablation mode)."""
    return [r for r in runs if r.strategy == cfg.ablation_strategy and r.ssft_mode in cfg.ablation_modes]


def ablation_label(spec: RunSpec) -> str:
    """The name an ablation run goes by in its result file, e.g. `assft+ssft:selective`."""
    return f"{spec.strategy}+ssft:{SSFTMode(spec.ssft_mode).value}"


def pool_subset(pool_ids: Sequence[str], fraction: float, seed: int, pool: str) -> list[str]:
    """The seed's subset of the pool: `round(fraction · |U|)` cases (at least 1), sorted.

    The draw depends on (seed, pool name, the sorted ids) only, so every strategy of a seed sees
    the same subset, and a resumed benchmark draws it again identically.

    Args:
        pool_ids: U, every pool case id.
        fraction: share of the pool kept (METHOD.md §5: 0.8).
        seed: the benchmark seed.
        pool: the pool's name (so the two pools' draws are independent).

    Raises:
        ValueError: for an empty pool or a fraction outside (0, 1].
    """
    if not pool_ids:
        raise ValueError("the pool is empty: nothing to draw a subset from")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ids = sorted(pool_ids)
    n = max(1, int(round(fraction * len(ids))))
    rng = np.random.default_rng([seed, _SUBSET_STREAM, zlib.crc32(pool.encode())])
    chosen = rng.choice(len(ids), size=n, replace=False)
    return sorted(ids[i] for i in chosen)
