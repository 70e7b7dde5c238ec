"""The round's query step wired to the registered strategies over the round's stored scores.

Strategies only read the ScoreTable the scoring job stored for the round (no model here), so a
proposal or a swap is instant and reproducible: the generator is seeded from the project seed,
the round and the number of picks already excluded (ASSFT, METHOD.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from assft_core.errors import StateError
from assft_core.session import rounds
from assft_core.session.project import Project, list_cases
from assft_core.session.rounds import ProposeFn, Query, RoundPool


def strategy_proposer(project: Project, strategy: str | None = None) -> ProposeFn:
    """A `ProposeFn` running `strategy` (default: the project's) over the current round's scores.

    Raises:
        StateError: when the round has no stored score table, or the strategy is unknown.
    """
    from assft_core.query.strategies import PoolState, get_strategy
    from assft_core.query.table import ScoreTable

    name = strategy or project.config.strategy
    chosen = get_strategy(name)
    info = rounds.current_round(project)
    if info.score_table is None:
        raise StateError(
            f"round {info.idx} has no stored scores; allowed next step: {rounds.NEXT_STEP[info.state]}."
        )
    scores = ScoreTable.load(project.resolve(info.score_table))

    def propose(pool: RoundPool, n_new: int) -> list[Mapping[str, Any]]:
        state = PoolState(
            pool_ids=tuple(pool.pool_ids),
            labelled_ids=tuple(pool.labelled),
            fixed_ids=tuple(pool.fixed),
            excluded_ids=tuple(pool.excluded),
            round_index=pool.round,
            planned_rounds=pool.planned_rounds,
        )
        rng = np.random.default_rng([project.config.seed, pool.round, len(pool.excluded)])
        return [p.to_dict() for p in chosen.select(scores, state, n_new, rng, project.config.query)]

    return propose


def propose_round(project: Project, strategy: str | None = None, budget: int | None = None) -> list[Query]:
    """Propose picks for the current round until `budget` (default: the project's) are live.

    Raises:
        StateError: when the round is not `scored` / `proposed`, or has no stored scores.
    """
    name = strategy or project.config.strategy
    # The state first: a later round's approved picks must not read as "live picks" here.
    rounds.check_state(project, {rounds.RoundState.SCORED, rounds.RoundState.PROPOSED}, "propose picks")
    pool = rounds.round_pool(project)
    wanted = (project.config.budget if budget is None else budget) - len(pool.fixed)
    if wanted <= 0:
        raise StateError(
            f"round {pool.round} already has {len(pool.fixed)} live pick(s) for a budget of "
            f"{project.config.budget if budget is None else budget}; approve, reject or swap them."
        )
    picks = strategy_proposer(project, name)(pool, wanted)
    return rounds.propose(project, picks, name)


def swap_pick(project: Project, case_id: str, strategy: str | None = None) -> list[Query]:
    """Swap a pick for the strategy's next best case, the other picks fixed (METHOD.md §3).

    Raises:
        StateError: as `rounds.swap` and `strategy_proposer`.
    """
    name = strategy or project.config.strategy
    return rounds.swap(project, case_id, strategy_proposer(project, name), name)


@dataclass(frozen=True)
class PickContext:
    """What a reviewer needs to know about one pick beside its scores.

    Attributes:
        query: the pick as stored.
        site: the case's site ("" when the case is unknown).
        nearest_id: the case its diversity was measured against: the nearest labelled or already
            picked case in the embedding when it was picked (None while there was none).
        nearest_kind: "labelled" or "picked" (an earlier pick of this round); None with no case.
    """

    query: Query
    site: str
    nearest_id: str | None
    nearest_kind: str | None


def pick_contexts(project: Project, picks: list[Query]) -> list[PickContext]:
    """Each pick with its site and the case its diversity was measured against (METHOD.md §1).

    Picks stored before the nearest case of S was recorded name the nearest labelled case.
    """
    sites = {c.case_id: c.site for c in list_cases(project, usable_only=False)}
    out = []
    for q in picks:
        e = q.explanation
        nearest, kind = e.get("nearest_id"), e.get("nearest_kind")
        if nearest is None and e.get("nearest_labelled_id"):
            nearest, kind = e["nearest_labelled_id"], "labelled"
        out.append(PickContext(q, sites.get(q.case_id, ""), nearest, kind))
    return out


def next_in_line(project: Project, strategy: str | None = None, count: int = 3) -> list[dict[str, Any]]:
    """The strategy's next `count` cases after the live picks, with their scores (read-only).

    What "Propose more" would add, in order (the live picks fixed, the same seeded generator), and
    the first of them is what a swap usually brings in.

    Returns:
        Pick dicts (`Pick.to_dict()`: case_id, score, criterion, ...) plus "site"; [] before the
        round is scored or when no candidate is left.

    Raises:
        StateError: as `strategy_proposer` (no stored scores, unknown strategy, missing head).
    """
    info = rounds.current_round(project)
    if info.state not in (rounds.RoundState.SCORED, rounds.RoundState.PROPOSED) or count <= 0:
        return []
    pool = rounds.round_pool(project)
    if not pool.candidates:
        return []
    sites = {c.case_id: c.site for c in list_cases(project, usable_only=False)}
    picks = strategy_proposer(project, strategy)(pool, min(count, len(pool.candidates)))
    return [{**p, "site": sites.get(str(p["case_id"]), "")} for p in picks]
