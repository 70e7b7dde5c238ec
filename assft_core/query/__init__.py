"""assft_core.query: scoring pass, DKD, ASD, the strategy registry and baselines (METHOD.md §0–§3)."""

from __future__ import annotations

from assft_core.query.scoring import score_cases
from assft_core.query.strategies import Pick, PoolState, get_strategy, list_strategies, register_strategy, swap
from assft_core.query.table import ScoreTable

__all__ = [
    "Pick",
    "PoolState",
    "ScoreTable",
    "get_strategy",
    "list_strategies",
    "register_strategy",
    "score_cases",
    "swap",
]
