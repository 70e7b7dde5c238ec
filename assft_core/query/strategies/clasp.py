"""`clasp_pe`: class-stratified scheduled power predictive entropy (ASSFT, METHOD.md §3).

After Lüth et al., nnActive `class_power_pe66_exp`, applied to whole cases.
"""

from __future__ import annotations

import math

import numpy as np

from assft_core.config import QueryConfig
from assft_core.query.strategies.base import Choice, SelectionContext, register_strategy


def power_beta(round_index: int, planned_rounds: int, cfg: QueryConfig) -> float:
    """β of power noising: exponential from `clasp_beta_start` at round 0 to `clasp_beta_end` at
    round T − 1, held after (a single planned round uses the start value)."""
    frac = min(1.0, round_index / (planned_rounds - 1)) if planned_rounds > 1 else 0.0
    return cfg.clasp_beta_start * (cfg.clasp_beta_end / cfg.clasp_beta_start) ** frac


def class_slots(budget: int, n_classes: int, cfg: QueryConfig, rng: np.random.Generator) -> list[int]:
    """Which score fills each pick: `floor(f · b)` foreground class slots (1..K−1, seeded random class
    order, cycled), then 0 (overall entropy) for the rest."""
    n_fg = math.floor(cfg.clasp_fg_fraction * budget) if n_classes > 0 else 0
    order = rng.permutation(np.arange(1, n_classes + 1)) if n_classes > 0 else np.zeros(0, dtype=int)
    return [int(order[s % n_classes]) for s in range(n_fg)] + [0] * (budget - n_fg)


@register_strategy("clasp_pe", needs_head=True,
                   plain="Picks uncertain scans class by class, with a random share that shrinks round by round.")
def clasp_pe(ctx: SelectionContext, budget: int, rng: np.random.Generator) -> list[Choice]:
    """CLASP-PE: class-stratified power predictive entropy with a scheduled β (nnActive)."""
    cfg = ctx.cfg
    n_classes = ctx.class_entropy.shape[1]
    beta = power_beta(ctx.pool.round_index, ctx.pool.planned_rounds, cfg)
    slots = class_slots(budget, n_classes, cfg, rng)
    # One noised ranking per score (overall, then each class), drawn once: the power-noised order.
    with np.errstate(divide="ignore"):
        raw = np.column_stack([ctx.mean_entropy, ctx.class_entropy])
        noised = np.log(np.nan_to_num(raw, nan=0.0)) + rng.gumbel(0.0, 1.0 / beta, size=raw.shape)
    allowed = list(ctx.candidates)
    choices: list[Choice] = []
    for k in slots:
        col = k
        present = np.isfinite(noised[allowed, k]) if k > 0 else np.ones(len(allowed), bool)
        if not present.any():  # no remaining case shows this class: the slot goes to overall entropy
            col = 0
        i = ctx.best(noised[:, col], np.array(allowed))
        what = f"class {k} entropy" if col == k and k > 0 else "overall mean entropy"
        note = "" if col == k else f" (no remaining case predicts class {k})"
        choices.append(Choice(i, float(raw[i, col]), f"{what}, power-noised (β={beta:.3g}){note}"))
        allowed.remove(i)
    return choices
