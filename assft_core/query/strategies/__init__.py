"""Query strategies behind one interface, registered by name (ASSFT, METHOD.md §3).

    from assft_core.query.strategies import get_strategy, PoolState
    picks = get_strategy("assft").select(scores, PoolState(pool_ids=ids), 2, np.random.default_rng(0), cfg)

The interface and registry live in `base`; the built-in strategies (`dkd`, `baselines`,
`geometry`, `clasp`) register themselves when the registry is first read (`base.BUILTIN_MODULES`).
The names below are re-exported lazily (PEP 562), so importing this package imports none of its
submodules and no import cycle runs through it (threads may import `base` or a strategy first).
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    """`assft_core.query.strategies.<name>` for the names of `base` (imported on first use)."""
    if name in __all__:
        return getattr(importlib.import_module("assft_core.query.strategies.base"), name)
    raise AttributeError(f"module 'assft_core.query.strategies' has no attribute {name!r}")
