"""The round's query step wired to the registered strategies over the round's stored scores.

Strategies only read the ScoreTable the scoring job stored for the round (no model here), so a
proposal or a swap is instant and reproducible: the generator is seeded from the project seed,
the round and the number of picks already excluded (ASSFT, METHOD.md §3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from assft_core.errors import StateError
from assft_core.session import rounds
from assft_core.session.project import Project
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
