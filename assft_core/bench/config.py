"""Settings of the strategy benchmark and its three presets (ASSFT, METHOD.md §5).

A benchmark compares query strategies at equal budgets over several seeds on a balanced and an
unbalanced pool, with the same splits and the same training settings for every strategy, plus the
full-supervision ceiling and the `f_0` floor. A seed draws an 80% subset of the pool and seeds
training, so deterministic strategies get a spread too.

Presets (`PRESETS`):

- `tiny`: the tests' size (tiny demo corpus, 2 strategies, 1 seed, 1 round, a few steps).
- `default`: meant to finish within 25 minutes on an idle 2-core CPU: unbalanced pool (40 cases,
  32 per seed), strategies assft / random / coreset, 3 seeds, 2 rounds × 2 labels, 100 supervised
  steps a round (batch 2 × 64³), SSFT mode `none`; ceiling (200 steps) and floor.
- `recipes`: the headline of the retention recipes (METHOD.md §6): both pools (unbalanced first),
  assft / random / coreset / dkd, 3 seeds, 3 rounds × 2 labels (budgets 2, 4, 6), 100 supervised
  steps a round, SSFT `none`, with the default retention recipe (`--recipe paper` gives its
  step-matched control: the same runs without retention); ceiling trained 1200 steps on the whole
  seed subset (where test Dice stopped rising, docs/benchmarks.md); floor. Hours on this CPU: in
  pieces with `--only`, `--stop-after` and `--resume`.
- `full`: all eight strategies, both pools (unbalanced first: whole seeds of the pool active
  learning is for come first when a run is cut short), 3 seeds, 3 rounds × 2 labels (6 labels,
  METHOD.md §5's calibration point), the method's SSFT (`selective`, 200 + 100 steps a round)
  and the SSFT ablation over the five modes at `assft`; ceiling (900 steps) and floor. Hours on
  this CPU: run it on a GPU machine with `--workers`, or resumably in pieces (`--resume`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from assft_core.config import FinetuneConfig, SSFTMode, from_dict, to_dict
from assft_core.errors import AssftError

ALL_SSFT_MODES: tuple[SSFTMode, ...] = tuple(SSFTMode)

ALL_STRATEGIES = ("assft", "random", "entropy", "fg_entropy", "coreset", "dkd", "kmeans_entropy", "clasp_pe")


@dataclass(frozen=True)
class StrategyBenchConfig:
    """One strategy benchmark (saved as `config` in its result files).

    Attributes:
        name: preset name ("tiny", "default", "full") or "custom".
        pools: pool layouts measured ("balanced", "unbalanced").
        strategies: registered strategy names compared.
        seeds: one run per seed; the seed draws the pool subset and seeds training and strategies.
        rounds: T, query rounds per run (the curve has T + 1 points: 0, b, ..., T·b labels).
        budget: b, cases labelled per round.
        subset_fraction: fraction of the pool a seed draws (METHOD.md §5: 0.8).
        supervised_steps / ssft_steps: S and S_u per round (SSFTConfig); the ceiling trains
            `rounds × (S + S_u)` steps so it sees as many steps as a whole run.
        ssft_mode: the SSFT mode of the strategy comparison.
        ablation_modes: SSFT modes run at `ablation_strategy` (empty: no ablation).
        ablation_strategy: the fixed strategy of the SSFT ablation.
        corpus_size: demo corpus size ("full" 2 mm, or "tiny" 4 mm) when no dataset is given.
        batch_size / patch_size: training batch (patches) and crop (voxels).
        ceiling: train on all of the seed's pool (the full-supervision reference).
        floor: evaluate `f_0` as it is (needs a head for the target classes).
        recipe: the retention recipe of every strategy run (METHOD.md §6), e.g. "adabn+wise";
            "paper" is the method as published. The ceiling always trains with "paper" (all
            labels: nothing to retain).
        ceiling_train_steps: steps of the ceiling run; 0: as many as a whole run (`ceiling_steps`).
    """

    name: str = "custom"
    pools: tuple[str, ...] = ("unbalanced",)
    strategies: tuple[str, ...] = ("assft", "random", "coreset")
    seeds: tuple[int, ...] = (0, 1, 2)
    rounds: int = 2
    budget: int = 2
    subset_fraction: float = 0.8
    supervised_steps: int = 100
    ssft_steps: int = 0
    ssft_mode: SSFTMode = SSFTMode.NONE
    ablation_modes: tuple[SSFTMode, ...] = ()
    ablation_strategy: str = "assft"
    corpus_size: str = "full"
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    ceiling: bool = True
    floor: bool = True
    recipe: str = "paper"
    ceiling_train_steps: int = 0

    def __post_init__(self) -> None:
        # Values read back from JSON arrive as strings and lists: normalise them once here.
        try:
            object.__setattr__(self, "ssft_mode", SSFTMode(self.ssft_mode))
            object.__setattr__(self, "ablation_modes", tuple(SSFTMode(m) for m in self.ablation_modes))
        except ValueError as exc:
            raise AssftError(f"invalid benchmark settings: {exc}; SSFT modes: {[m.value for m in SSFTMode]}.") from None
        for name in ("pools", "strategies", "seeds", "patch_size"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        if not self.pools or any(p not in ("balanced", "unbalanced") for p in self.pools):
            problems.append(f"pools must be 'balanced' and/or 'unbalanced', got {list(self.pools)}")
        if not self.strategies:
            problems.append("at least one strategy is needed")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            problems.append(f"seeds must be distinct integers >= 0, got {list(self.seeds)}")
        if self.rounds < 1 or self.budget < 1:
            problems.append(f"rounds and budget must be >= 1, got {self.rounds} and {self.budget}")
        if not 0.0 < self.subset_fraction <= 1.0:
            problems.append(f"subset_fraction must be in (0, 1], got {self.subset_fraction}")
        if self.supervised_steps < 1 or self.ssft_steps < 0:
            problems.append("supervised_steps must be >= 1 and ssft_steps >= 0")
        try:
            object.__setattr__(self, "recipe", FinetuneConfig(recipe=self.recipe).label)
        except ValueError as exc:
            problems.append(str(exc).rstrip("."))
        if self.ceiling_train_steps < 0:
            problems.append("ceiling_train_steps must be >= 0")
        if problems:
            raise AssftError("invalid benchmark settings: " + "; ".join(problems) + ".")

    @property
    def ceiling_steps(self) -> int:
        """Steps of the ceiling run: `ceiling_train_steps`, else as many as a whole run's rounds together."""
        if self.ceiling_train_steps:
            return self.ceiling_train_steps
        ssft = 0 if self.ssft_mode is SSFTMode.NONE else self.ssft_steps
        return self.rounds * (self.supervised_steps + ssft)

    def with_ablation(self) -> StrategyBenchConfig:
        """This config plus the SSFT ablation over all five modes (`--ssft`)."""
        return dataclasses.replace(self, ablation_modes=ALL_SSFT_MODES)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (enums as values, tuples as lists)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> StrategyBenchConfig:
        """The inverse of `to_dict` (unknown keys raise ValueError)."""
        return from_dict(cls, data)


PRESETS: dict[str, StrategyBenchConfig] = {
    "tiny": StrategyBenchConfig(
        name="tiny",
        pools=("unbalanced",),
        strategies=("assft", "random"),
        seeds=(0,),
        rounds=1,
        budget=1,
        supervised_steps=2,
        corpus_size="tiny",
        batch_size=1,
        patch_size=(16, 16, 16),
    ),
    "default": StrategyBenchConfig(name="default", supervised_steps=100),
    "recipes": StrategyBenchConfig(
        name="recipes",
        pools=("unbalanced", "balanced"),
        strategies=("assft", "random", "coreset", "dkd"),
        rounds=3,
        supervised_steps=100,
        recipe=FinetuneConfig().label,  # the project default (config.DEFAULT_RECIPE)
        ceiling_train_steps=1200,
    ),
    "full": StrategyBenchConfig(
        name="full",
        pools=("unbalanced", "balanced"),
        strategies=ALL_STRATEGIES,
        rounds=3,
        supervised_steps=200,
        ssft_steps=100,
        ssft_mode=SSFTMode.SELECTIVE,
        ablation_modes=ALL_SSFT_MODES,
    ),
}


def preset(name: str) -> StrategyBenchConfig:
    """The preset called `name`.

    Raises:
        AssftError: naming the presets when `name` is unknown.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise AssftError(f"unknown benchmark config {name!r}; use one of {sorted(PRESETS)}.") from None
