"""Embedding-space baselines: `coreset` (k-center greedy) and `kmeans_entropy` (ASSFT, METHOD.md §3)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import kmeans_plusplus

from assft_core.query.strategies.base import Choice, SelectionContext, register_strategy


@register_strategy("coreset", needs_embedding=True,
                   plain="Picks the scans least like any case already chosen, to cover the pool.")
def coreset(ctx: SelectionContext, budget: int, rng: np.random.Generator) -> list[Choice]:
    """Core-set: k-center greedy on z (farthest from S first); seeded random first pick when S is empty."""
    allowed = list(ctx.candidates)
    picked: list[int] = []
    choices: list[Choice] = []
    for _ in range(budget):
        div, _ = ctx.diversity(picked)
        if np.isnan(div).all():  # S empty: nothing to be far from
            i = int(rng.choice(allowed))
            choices.append(Choice(i, float("nan"), "first centre: seeded random (no labelled case yet)"))
        else:
            i = ctx.best(div, np.array(allowed))
            choices.append(Choice(i, float(div[i]), "DIV: cosine distance to the nearest case in S"))
        picked.append(i)
        allowed.remove(i)
    return choices


@register_strategy("kmeans_entropy", needs_head=True, needs_embedding=True,
                   plain="Picks scans spread over the pool, favouring those where the model is unsure.")
def kmeans_entropy(ctx: SelectionContext, budget: int, rng: np.random.Generator) -> list[Choice]:
    """k-means++ entropy: k-means++ seeding on z with ASD as sample weight (spread and uncertain)."""
    cand = ctx.candidates
    weight = np.nan_to_num(ctx.asd[cand]).clip(min=0.0)
    if weight.sum() <= 0:  # no uncertainty anywhere: plain k-means++ seeding
        weight = np.ones(len(cand))
    _, local = kmeans_plusplus(
        ctx.z[cand], n_clusters=budget, sample_weight=weight, random_state=int(rng.integers(2**31 - 1))
    )
    # Identical embeddings can make k-means++ repeat a centre; keep the first of each and fill the
    # rest by ASD, so exactly `budget` distinct cases come back.
    order = [int(cand[j]) for j in dict.fromkeys(int(j) for j in local)]
    if len(order) < budget:
        rest = np.array([i for i in cand if i not in order])
        order += ctx.ranked(ctx.asd, rest, budget - len(order))
    return [Choice(i, float(ctx.asd[i]), "k-means++ centre on z, weighted by ASD") for i in order]
