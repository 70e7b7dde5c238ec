"""Score-ranking baselines: `random`, `entropy`, `fg_entropy` (ASSFT, METHOD.md §3)."""

from __future__ import annotations

import numpy as np

from assft_core.query.strategies.base import Choice, SelectionContext, register_strategy


@register_strategy("random", plain="Draws scans at random: the baseline that ignores every score.")
def random_pick(ctx: SelectionContext, budget: int, rng: np.random.Generator) -> list[Choice]:
    """Random: uniform draw without replacement (seeded)."""
    chosen = rng.choice(ctx.candidates, size=budget, replace=False)
    return [Choice(int(i), float("nan"), "uniform random draw (seeded)") for i in chosen]


@register_strategy("entropy", needs_head=True, plain="Picks the scans where the model is least sure over the whole image.")
def entropy(ctx: SelectionContext, budget: int, rng: np.random.Generator) -> list[Choice]:
    """Entropy: highest mean voxel entropy over the whole volume."""
    order = ctx.ranked(ctx.mean_entropy, ctx.candidates, budget)
    return [Choice(i, float(ctx.mean_entropy[i]), "mean entropy over the whole volume") for i in order]


@register_strategy("fg_entropy", needs_head=True,
                   plain="Picks the scans where the model is least sure of the anatomy's outline.")
def fg_entropy(ctx: SelectionContext, budget: int, rng: np.random.Generator) -> list[Choice]:
    """Foreground entropy: highest ASD (entropy inside the predicted anatomy only)."""
    order = ctx.ranked(ctx.asd, ctx.candidates, budget)
    return [Choice(i, float(ctx.asd[i]), "ASD (entropy inside the predicted anatomy)") for i in order]
