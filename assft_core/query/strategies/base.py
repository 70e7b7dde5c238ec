"""Strategy interface, registry, pool state and the explained `Pick` (ASSFT, METHOD.md §3).

A strategy is a function registered by name that orders candidate cases from a `SelectionContext`
(stored scores only, no model). `select` wraps every strategy the same way: it checks the request,
handles the edge cases (budget 0, empty pool, budget beyond the pool), and explains every pick with
the same fields (KG and k̂, ASD and â, DIV and δ against S at the time of the pick, the nearest
labelled case), so strategies differ only in the order they choose.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from assft_core.config import QueryConfig
from assft_core.errors import StateError
from assft_core.query.metrics import cosine_distance_to_set, percentile_rank
from assft_core.query.table import NO_EMBEDDING, NO_HEAD, ScoreTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolState:
    """Where a round stands, as a strategy sees it (METHOD.md §3).

    Attributes:
        pool_ids: U, every queryable case (never test cases).
        labelled_ids: L ⊂ U.
        fixed_ids: picks approved this round: in S from the start, never returned again.
        excluded_ids: picks rejected this round: never returned again this round.
        round_index: t, 0 for the first round.
        planned_rounds: T, the project's planned number of rounds (schedules).
    """

    pool_ids: tuple[str, ...]
    labelled_ids: tuple[str, ...] = ()
    fixed_ids: tuple[str, ...] = ()
    excluded_ids: tuple[str, ...] = ()
    round_index: int = 0
    planned_rounds: int = 5

    def __post_init__(self) -> None:
        for name in ("pool_ids", "labelled_ids", "fixed_ids", "excluded_ids"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        outside = set(self.labelled_ids) | set(self.fixed_ids) | set(self.excluded_ids)
        outside -= set(self.pool_ids)
        if outside:
            raise StateError(f"case(s) {sorted(outside)[:5]} are labelled, fixed or excluded but not in the pool")

    @property
    def unlabelled_ids(self) -> tuple[str, ...]:
        """U \\ L, in pool order."""
        labelled = set(self.labelled_ids)
        return tuple(c for c in self.pool_ids if c not in labelled)

    @property
    def candidate_ids(self) -> tuple[str, ...]:
        """Cases a strategy may return: U \\ L minus fixed and excluded ones, in pool order."""
        taken = set(self.labelled_ids) | set(self.fixed_ids) | set(self.excluded_ids)
        return tuple(c for c in self.pool_ids if c not in taken)


@dataclass
class Pick:
    """One proposed case with its explanation (METHOD.md §3).

    Attributes:
        case_id: the case.
        rank: 1-based position in this proposal.
        score: the strategy's score for the pick (NaN for `random`).
        strategy: the strategy's registered name.
        criterion: what `score` is, in plain words.
        kg / kg_rank: KG and k̂, its percentile rank in U \\ L (k̂ ≡ 1 without source statistics).
        asd / asd_rank: ASD and â (NaN and 1 without a head).
        div / delta: DIV(x|S) and δ at the time of the pick (NaN and 1 while S is empty or
            without an embedding).
        nearest_labelled_id: the labelled case nearest in z (None without labels or embedding).
        nearest_id / nearest_kind: the case of S nearest in z when the pick was made, the one its
            DIV was measured against, and "labelled" or "picked" (an earlier pick of this round);
            None while S is empty or without an embedding.
        unavailable: plain-words notes on terms this model could not compute.
        note: anything else the user should know (e.g. the budget exceeded the pool).
    """

    case_id: str
    rank: int
    score: float
    strategy: str
    criterion: str
    kg: float
    kg_rank: float
    asd: float
    asd_rank: float
    div: float
    delta: float
    nearest_labelled_id: str | None
    unavailable: list[str] = field(default_factory=list)
    note: str | None = None
    nearest_id: str | None = None
    nearest_kind: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (NaN becomes None)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


class SelectionContext:
    """Stored scores arranged for one `select` call; arrays are indexed over U \\ L ("unl").

    Args:
        scores: the model's score table (must hold every pool case).
        pool: the pool state.
        cfg: query settings.
        rng: draws the tie-break order (one permutation), so equal scores resolve by seed.
    """

    def __init__(self, scores: ScoreTable, pool: PoolState, cfg: QueryConfig, rng: np.random.Generator) -> None:
        self.scores = scores
        self.pool = pool
        self.cfg = cfg
        self.unl_ids = list(pool.unlabelled_ids)
        rows = scores.indices(self.unl_ids)
        lab_rows = scores.indices(list(pool.labelled_ids))
        index = {c: i for i, c in enumerate(self.unl_ids)}
        self.candidates = np.array([index[c] for c in pool.candidate_ids], dtype=np.int64)
        # An approved pick labelled meanwhile is in S through L already.
        self.fixed = np.array([index[c] for c in pool.fixed_ids if c in index], dtype=np.int64)
        self.has_kg = scores.availability.source_stats
        self.has_asd = scores.availability.head
        self.has_z = scores.availability.embedding
        self.kg = scores.knowledge_gap(list(pool.pool_ids))[rows] if len(rows) else np.zeros(0)
        self.k_hat = percentile_rank(self.kg) if self.has_kg else np.ones(len(rows))
        self.asd = scores.column("asd")[rows]
        self.a_hat = percentile_rank(np.nan_to_num(self.asd)) if self.has_asd else np.ones(len(rows))
        self.mean_entropy = scores.column("mean_entropy")[rows]
        self.class_entropy = scores.class_entropy[rows]
        emb = scores.embeddings
        self.z = emb[rows] if emb is not None else None
        self.z_labelled = emb[lab_rows] if emb is not None else None
        self.tiebreak = rng.permutation(len(rows))

    @property
    def n(self) -> int:
        """|U \\ L|."""
        return len(self.unl_ids)

    def diversity(self, selected: list[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """DIV(x|S) and δ(x|S) for every x in U \\ L, with S = L ∪ fixed ∪ `selected` (METHOD.md §1).

        Args:
            selected: unl indices picked so far this call.

        Returns:
            (n,) DIV (NaN while S is empty or without z) and (n,) δ = DIV / max DIV over U \\ L
            (≡ 1 while S is empty, without z, or when every DIV is 0: no diversity information).
        """
        set_rows = np.concatenate([self.fixed, np.asarray(selected, dtype=np.int64)])
        if self.z is None or (len(set_rows) == 0 and len(self.z_labelled) == 0):
            return np.full(self.n, np.nan), np.ones(self.n)
        z_set = np.concatenate([self.z_labelled, self.z[set_rows]])
        div, _ = cosine_distance_to_set(self.z, z_set)
        top = div.max()
        return div, (div / top if top > 0 else np.ones(self.n))

    def nearest_labelled(self, i: int) -> str | None:
        """Id of the labelled case nearest to unl case `i` in z (None without labels or z)."""
        if self.z is None or not len(self.pool.labelled_ids):
            return None
        _, nearest = cosine_distance_to_set(self.z[i : i + 1], self.z_labelled)
        return self.pool.labelled_ids[int(nearest[0])]

    def nearest_in_set(self, i: int, selected: list[int]) -> tuple[str | None, str | None]:
        """The case of S = L ∪ fixed ∪ `selected` nearest to unl case `i` in z, and its kind.

        Returns:
            (id, "labelled" | "picked"), or (None, None) while S is empty or without z.
        """
        picked = [int(j) for j in np.concatenate([self.fixed, np.asarray(selected, dtype=np.int64)])]
        n_lab = len(self.pool.labelled_ids)
        if self.z is None or (n_lab == 0 and not picked):
            return None, None
        z_set = np.concatenate([self.z_labelled, self.z[picked]]) if picked else self.z_labelled
        _, nearest = cosine_distance_to_set(self.z[i : i + 1], z_set)
        j = int(nearest[0])
        return (self.pool.labelled_ids[j], "labelled") if j < n_lab else (self.unl_ids[picked[j - n_lab]], "picked")

    def best(self, values: np.ndarray, allowed: np.ndarray) -> int:
        """The unl index with the largest value among `allowed`, ties broken by the seeded order.

        NaN counts as the lowest value.
        """
        idx = np.asarray(allowed, dtype=np.int64)
        v = np.nan_to_num(np.asarray(values, dtype=np.float64)[idx], nan=-np.inf)
        top = v.max()
        tied = idx[np.isclose(v, top, rtol=1e-12, atol=0.0) | (v == top)]
        return int(tied[np.argmin(self.tiebreak[tied])])

    def ranked(self, values: np.ndarray, allowed: np.ndarray, count: int) -> list[int]:
        """The `count` best unl indices among `allowed` by `values` (descending, seeded ties)."""
        remaining = list(np.asarray(allowed, dtype=np.int64))
        order = []
        for _ in range(min(count, len(remaining))):
            i = self.best(values, np.array(remaining))
            order.append(i)
            remaining.remove(i)
        return order


@dataclass(frozen=True)
class Choice:
    """A strategy's raw output: which unl case, its score, and what the score means."""

    index: int
    score: float
    criterion: str


StrategyFn = Callable[[SelectionContext, int, np.random.Generator], list[Choice]]


@dataclass(frozen=True)
class Strategy:
    """A registered strategy; call `select` (or the object itself) with the common interface."""

    name: str
    fn: StrategyFn
    needs_head: bool
    needs_embedding: bool
    description: str
    plain: str = ""

    @property
    def summary(self) -> str:
        """What the strategy does in one plain sentence (`plain`), else its `description`."""
        return self.plain or self.description

    def select(
        self, scores: ScoreTable, pool: PoolState, budget: int, rng: np.random.Generator, cfg: QueryConfig
    ) -> list[Pick]:
        """Propose up to `budget` cases of `pool` to label, each explained (METHOD.md §3).

        Args:
            scores: the current model's score table (holds every pool case).
            pool: labelled, fixed and excluded ids, round and planned rounds.
            budget: b, cases wanted (0 → empty list; more than the candidates → all, with a note).
            rng: seeded generator; the same seed gives the same picks.
            cfg: query settings.

        Returns:
            Picks in order (rank 1 first); empty when nothing is selectable.

        Raises:
            ValueError: on a negative budget.
            StateError: when a pool case is missing from `scores`, or the model lacks what the
                strategy needs (a head, an embedding).
        """
        if budget < 0:
            raise ValueError(f"budget must be ≥ 0, got {budget}")
        if self.needs_head and not scores.availability.head:
            raise StateError(f"strategy {self.name!r}: {NO_HEAD}; use 'assft' or 'dkd' with this model")
        if self.needs_embedding and not scores.availability.embedding:
            raise StateError(f"strategy {self.name!r}: {NO_EMBEDDING}; use 'assft', 'dkd' or an entropy strategy")
        ctx = SelectionContext(scores, pool, cfg, rng)
        n_cand = len(ctx.candidates)
        if budget == 0 or n_cand == 0:
            return []
        note = None
        if budget > n_cand:
            note = f"budget {budget} exceeds the {n_cand} selectable case(s): all of them are proposed"
            log.warning("%s: %s", self.name, note)
            budget = n_cand
        choices = self.fn(ctx, budget, rng)
        return self._explain(ctx, choices, note)

    __call__ = select

    def _explain(self, ctx: SelectionContext, choices: list[Choice], note: str | None) -> list[Pick]:
        unavailable = ctx.scores.unavailable_terms()
        picks: list[Pick] = []
        chosen: list[int] = []
        for rank, ch in enumerate(choices, start=1):
            div, delta = ctx.diversity(chosen)
            i = ch.index
            nearest_id, nearest_kind = ctx.nearest_in_set(i, chosen)
            picks.append(
                Pick(
                    case_id=ctx.unl_ids[i],
                    rank=rank,
                    score=float(ch.score),
                    strategy=self.name,
                    criterion=ch.criterion,
                    kg=float(ctx.kg[i]),
                    kg_rank=float(ctx.k_hat[i]),
                    asd=float(ctx.asd[i]),
                    asd_rank=float(ctx.a_hat[i]),
                    div=float(div[i]),
                    delta=float(delta[i]),
                    nearest_labelled_id=ctx.nearest_labelled(i),
                    unavailable=list(unavailable),
                    note=note,
                    nearest_id=nearest_id,
                    nearest_kind=nearest_kind,
                )
            )
            chosen.append(i)
        return picks


_REGISTRY: dict[str, Strategy] = {}

# The built-in strategies, imported (and so registered) when the registry is first read, in the
# order `list_strategies` shows. Not imported by the package: no import cycle through it.
BUILTIN_MODULES = (
    "assft_core.query.strategies.dkd",
    "assft_core.query.strategies.baselines",
    "assft_core.query.strategies.geometry",
    "assft_core.query.strategies.clasp",
)


def _load_builtins() -> None:
    """Import the built-in strategy modules (each registers its strategies once, at import)."""
    import importlib

    for name in BUILTIN_MODULES:
        importlib.import_module(name)


def register_strategy(
    name: str, *, needs_head: bool = False, needs_embedding: bool = False, plain: str = ""
) -> Callable[[StrategyFn], StrategyFn]:
    """Register a strategy function under `name` (nnActive style; a benchmark is a list of names).

    The function receives `(ctx, budget, rng)` with `1 ≤ budget ≤ len(ctx.candidates)` and returns
    exactly `budget` distinct `Choice`s among `ctx.candidates`. Its docstring's first line is the
    strategy's description (the formula); `plain` says what it does in one sentence without symbols,
    for people choosing a strategy.

    Raises:
        ValueError: when the name is taken.
    """

    def deco(fn: StrategyFn) -> StrategyFn:
        if name in _REGISTRY:
            raise ValueError(f"strategy {name!r} is already registered")
        doc = (fn.__doc__ or name).strip().splitlines()[0]
        _REGISTRY[name] = Strategy(name, fn, needs_head, needs_embedding, doc, plain)
        return fn

    return deco


def get_strategy(name: str) -> Strategy:
    """The strategy registered as `name`.

    Raises:
        StateError: naming the known strategies when `name` is unknown.
    """
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise StateError(f"unknown strategy {name!r}; known: {', '.join(list_strategies())}") from None


def list_strategies() -> list[str]:
    """Registered strategy names: the built-ins in the order of `BUILTIN_MODULES` (whichever was
    imported first), then the others in registration order."""
    _load_builtins()

    def rank(name: str) -> int:
        module = _REGISTRY[name].fn.__module__
        return BUILTIN_MODULES.index(module) if module in BUILTIN_MODULES else len(BUILTIN_MODULES)

    return sorted(_REGISTRY, key=rank)  # stable: registration order within a module


def swap(
    scores: ScoreTable,
    pool: PoolState,
    case_id: str,
    rng: np.random.Generator,
    cfg: QueryConfig,
    strategy: str = "assft",
    *,
    keep_ids: tuple[str, ...] = (),
) -> tuple[PoolState, Pick | None]:
    """Replace one proposed case: reject it, then select one more with the kept picks fixed (METHOD.md §3).

    Args:
        scores, rng, cfg: as for `select`.
        pool: the round's state before the swap (`fixed_ids` = approved picks).
        case_id: the proposed case the user rejects.
        strategy: the strategy name of the round.
        keep_ids: the other picks still proposed (not approved yet); they join S like approved
            ones so the replacement is neither one of them nor redundant with them.

    Returns:
        The new pool state (the case added to `excluded_ids`; store it for the rest of the round)
        and the replacement pick (None when nothing is left to propose).

    Raises:
        StateError: when `case_id` is labelled or approved already.
    """
    if case_id in pool.labelled_ids or case_id in pool.fixed_ids:
        raise StateError(f"case {case_id!r} is labelled or approved; only a proposed case can be swapped")
    new_pool = PoolState(
        pool.pool_ids,
        pool.labelled_ids,
        pool.fixed_ids,
        tuple(dict.fromkeys((*pool.excluded_ids, case_id))),
        pool.round_index,
        pool.planned_rounds,
    )
    temp = PoolState(
        new_pool.pool_ids,
        new_pool.labelled_ids,
        tuple(dict.fromkeys((*pool.fixed_ids, *(k for k in keep_ids if k != case_id)))),
        new_pool.excluded_ids,
        pool.round_index,
        pool.planned_rounds,
    )
    picks = get_strategy(strategy).select(scores, temp, 1, rng, cfg)
    return new_pool, (picks[0] if picks else None)
