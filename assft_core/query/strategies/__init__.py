"""Query strategies behind one interface, registered by name (ASSFT, METHOD.md §3).

    from assft_core.query.strategies import get_strategy, PoolState
    picks = get_strategy("assft").select(scores, PoolState(pool_ids=ids), 2, np.random.default_rng(0), cfg)
"""

from __future__ import annotations

# Imported for registration; the order is the order `list_strategies` shows.
from assft_core.query.strategies import dkd  # noqa: F401  # isort: skip
from assft_core.query.strategies import baselines  # noqa: F401  # isort: skip
from assft_core.query.strategies import geometry  # noqa: F401  # isort: skip
from assft_core.query.strategies import clasp  # noqa: F401  # isort: skip
from assft_core.query.strategies.base import (
    Choice,
    Pick,
    PoolState,
    SelectionContext,
    Strategy,
    get_strategy,
    list_strategies,
    register_strategy,
    swap,
)

__all__ = [
    "Choice",
    "Pick",
    "PoolState",
    "SelectionContext",
    "Strategy",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "swap",
]
