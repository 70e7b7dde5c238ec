"""assft_core.query: scoring pass, DKD, ASD, the strategy registry and baselines (METHOD.md §0–§3).

The names below are re-exported lazily (PEP 562): importing this package imports none of its
submodules, so no import cycle runs through it and threads may import any submodule first (the
dashboard's sessions are threads).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "score_cases": "assft_core.query.scoring",
    "Pick": "assft_core.query.strategies.base",
    "PoolState": "assft_core.query.strategies.base",
    "get_strategy": "assft_core.query.strategies.base",
    "list_strategies": "assft_core.query.strategies.base",
    "register_strategy": "assft_core.query.strategies.base",
    "swap": "assft_core.query.strategies.base",
    "ScoreTable": "assft_core.query.table",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """`assft_core.query.<name>` for the re-exported names (imported on first use)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'assft_core.query' has no attribute {name!r}")
