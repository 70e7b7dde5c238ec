"""The ASSFT query and DKD alone: greedy, δ recomputed after every pick (ASSFT, METHOD.md §1, §3)."""

from __future__ import annotations

import numpy as np

from assft_core.query.strategies.base import Choice, SelectionContext, register_strategy


def _greedy(ctx: SelectionContext, budget: int, base: np.ndarray, criterion: str) -> list[Choice]:
    """Pick `budget` cases one at a time by `δ(x|S) · base(x)`, S growing with each pick."""
    allowed = list(ctx.candidates)
    picked: list[int] = []
    choices: list[Choice] = []
    for _ in range(budget):
        _, delta = ctx.diversity(picked)
        score = delta * base
        i = ctx.best(score, np.array(allowed))
        choices.append(Choice(i, float(score[i]), criterion))
        picked.append(i)
        allowed.remove(i)
    return choices


@register_strategy(
    "assft", plain="Picks scans unlike the images the model learned from and where it is unsure of its outline, "
    "each one different from the cases already chosen.",
)
def assft(ctx: SelectionContext, budget: int, rng: np.random.Generator) -> list[Choice]:
    """ASSFT: δ(x|S) · (λ k̂ + (1 − λ) â), greedy with δ recomputed after each pick."""
    lam = ctx.cfg.lam
    return _greedy(ctx, budget, lam * ctx.k_hat + (1.0 - lam) * ctx.a_hat, "δ · (λ k̂ + (1 − λ) â)")


@register_strategy(
    "dkd", plain="Picks scans unlike the images the model learned from, each one different from the cases "
    "already chosen.",
)
def dkd(ctx: SelectionContext, budget: int, rng: np.random.Generator) -> list[Choice]:
    """DKD alone: k̂ · δ(x|S), greedy with δ recomputed after each pick."""
    return _greedy(ctx, budget, ctx.k_hat, "DKD = k̂ · δ")
