"""The active-learning round state machine (ASSFT, METHOD.md §3 and §5).

One round moves `open → scored → proposed → approved → labelled → trained → evaluated`, then the
next round opens. Each move is one transaction that checks the current state under the write
lock, records the move as an event, and raises `StateError` naming the current state and the
allowed next step otherwise. Picks can be approved, rejected (the case is excluded for the rest of
the round) or swapped (a rejection plus a new pick from the strategy with the other picks fixed).
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from assft_core.data.records import Split
from assft_core.errors import StateError
from assft_core.session import store
from assft_core.session.project import Project


class RoundState(str, enum.Enum):
    """Where a round stands; the order is the only legal order."""

    OPEN = "open"  # waiting for the scoring pass with f_t
    SCORED = "scored"  # ScoreTable stored
    PROPOSED = "proposed"  # strategy picks waiting for the user's decision
    APPROVED = "approved"  # every pick decided, at least one approved
    LABELLED = "labelled"  # every approved case has a label
    TRAINED = "trained"  # f_{t+1} stored
    EVALUATED = "evaluated"  # test metrics of f_{t+1} stored


class QueryStatus(str, enum.Enum):
    """A pick's status within its round."""

    PROPOSED = "proposed"
    APPROVED = "approved"
    REJECTED = "rejected"
    SWAPPED = "swapped"  # rejected and replaced by a new pick


# What the user does next in each state (shown in every StateError).
NEXT_STEP: dict[RoundState, str] = {
    RoundState.OPEN: "score the pool (`assft score`)",
    RoundState.SCORED: "propose picks (`assft query`)",
    RoundState.PROPOSED: "approve, reject or swap every pick (`assft approve`, `assft reject`, `assft swap`)",
    RoundState.APPROVED: "label the approved cases (`assft label PROJECT CASE FILE` or `--oracle`)",
    RoundState.LABELLED: "fine-tune on the labels (`assft train`)",
    RoundState.TRAINED: "evaluate the new model on the test set (`assft evaluate`)",
    RoundState.EVALUATED: "start the next round (`assft next-round`)",
}


@dataclass(frozen=True)
class RoundInfo:
    """One row of the rounds table.

    Attributes:
        idx: round number t (0 = scored with f_0).
        state: current state.
        state_times: state -> unix time (s) it was entered.
        score_table: artifact path (relative to the project) of the round's scores, or None.
        checkpoint: artifact path of the model trained in this round, or None.
        metrics: evaluation metrics of that model (free-form JSON from the evaluator).
    """

    idx: int
    state: RoundState
    state_times: dict[str, float]
    score_table: str | None
    checkpoint: str | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Query:
    """One pick of a round with its explanation (the strategy's `Pick.to_dict()`)."""

    round: int
    case_id: str
    status: QueryStatus
    strategy: str
    rank: int
    explanation: dict[str, Any]

    def shown_status(self, labelled: Iterable[str]) -> str:
        """The status people see: `labelled` once an approved pick has a label, else the stored one."""
        if self.status is QueryStatus.APPROVED and self.case_id in set(labelled):
            return "labelled"
        return self.status.value


@dataclass(frozen=True)
class RoundPool:
    """What a strategy needs to know about the pool at this point of the round (METHOD.md §3).

    Attributes:
        round: round number t.
        planned_rounds: the project's planned number of rounds.
        budget: b, picks per round.
        pool_ids: U, every usable pool case (never test cases).
        labelled: pool case ids with a label (L).
        fixed: picks of this round kept as they are (approved, and still-pending picks other than
            the one being swapped), already in S when the strategy starts.
        excluded: ids rejected or swapped away this round, and in oracle mode the pool cases
            without a reference label (the oracle cannot label them).
    """

    round: int
    planned_rounds: int
    budget: int
    pool_ids: list[str]
    labelled: list[str]
    fixed: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    @property
    def candidates(self) -> list[str]:
        """U minus labelled, fixed and excluded ids: what a new pick may be."""
        taken = set(self.labelled) | set(self.fixed) | set(self.excluded)
        return [c for c in self.pool_ids if c not in taken]


# propose(pool, n_new) -> n_new picks as dicts with at least "case_id" (e.g. Pick.to_dict()).
ProposeFn = Callable[[RoundPool, int], list[Mapping[str, Any]]]


def current_round(project: Project) -> RoundInfo:
    """The latest round."""
    with store.reading(project.db) as conn:
        return _round_info(_latest(conn))


def check_state(project: Project, allowed: set[RoundState], action: str) -> int:
    """The current round index if its state is in `allowed` (a check before slow work).

    Raises:
        StateError: naming the round's state and its next step otherwise.
    """
    with store.reading(project.db) as conn:
        return require_state(conn, allowed, action)


def list_rounds(project: Project) -> list[RoundInfo]:
    """Every round, oldest first."""
    with store.reading(project.db) as conn:
        return [_round_info(r) for r in conn.execute("SELECT * FROM rounds ORDER BY idx")]


def list_queries(project: Project, round_idx: int | None = None) -> list[Query]:
    """The picks of a round (default: the current one), by rank."""
    with store.reading(project.db) as conn:
        idx = _latest(conn)["idx"] if round_idx is None else round_idx
        rows = conn.execute("SELECT * FROM queries WHERE round = ? ORDER BY rank, id", (idx,)).fetchall()
    return [
        Query(
            r["round"], r["case_id"], QueryStatus(r["status"]), r["strategy"], r["rank"], json.loads(r["explanation"])
        )
        for r in rows
    ]


def round_pool(project: Project) -> RoundPool:
    """The current round's pool as a strategy sees it (read-only)."""
    with store.reading(project.db) as conn:
        return _pool(conn, project, _latest(conn)["idx"], swapping=None)


def mark_scored(project: Project, score_table: str | None) -> RoundInfo:
    """Record the round's scoring pass (from `open`; re-scoring a `scored` round replaces it).

    Args:
        score_table: artifact path (relative to the project folder) of the stored ScoreTable.

    Raises:
        StateError: in any other state.
    """
    with store.transaction(project.db) as conn:
        idx = require_state(conn, {RoundState.OPEN, RoundState.SCORED}, "record scores")
        _move(conn, idx, RoundState.SCORED, score_table=score_table)
        store.add_event(conn, "round", f"round {idx} scored", round=idx, score_table=score_table)
    return current_round(project)


def propose(project: Project, picks: Iterable[Mapping[str, Any]], strategy: str) -> list[Query]:
    """Store a strategy's picks as proposals (from `scored`, or more picks in `proposed`).

    Args:
        picks: dicts with "case_id" (the rest is kept as the pick's explanation), best first.
        strategy: the strategy's registered name.

    Raises:
        StateError: in another state, or when a pick is not a usable, unlabelled pool case or was
            already picked / excluded this round.
    """
    with store.transaction(project.db) as conn:
        idx = require_state(conn, {RoundState.SCORED, RoundState.PROPOSED}, "propose picks")
        _insert_picks(conn, project, idx, list(picks), strategy)
        _move(conn, idx, RoundState.PROPOSED)
    return list_queries(project)


def approve(project: Project, case_ids: Iterable[str] | None = None) -> list[Query]:
    """Approve some pending picks (default: all). The round becomes `approved` once no pick is
    pending and at least one is approved.

    Raises:
        StateError: outside `proposed`, or when a case is not a pending pick of this round.
    """
    with store.transaction(project.db) as conn:
        idx = require_state(conn, {RoundState.PROPOSED}, "approve picks")
        pending = _ids(conn, idx, QueryStatus.PROPOSED)
        chosen = list(pending) if case_ids is None else list(case_ids)
        for case_id in chosen:
            if case_id not in pending:
                raise StateError(
                    f"cannot approve {case_id!r}: it is not a pending pick of round {idx} "
                    f"(pending: {', '.join(pending) or 'none'})."
                )
            _set_status(conn, idx, case_id, QueryStatus.APPROVED)
        store.add_event(conn, "query", f"approved {', '.join(chosen) or 'nothing'}", round=idx, case_ids=chosen)
        _settle(conn, idx)
    return list_queries(project)


def reject(project: Project, case_id: str) -> list[Query]:
    """Reject a pick (pending or approved); the case is excluded for the rest of the round.

    Raises:
        StateError: outside `proposed`, or when the case is not a live pick of this round.
    """
    with store.transaction(project.db) as conn:
        idx = require_state(conn, {RoundState.PROPOSED}, "reject a pick")
        _reject(conn, idx, case_id, QueryStatus.REJECTED)
        _settle(conn, idx)
    return list_queries(project)


def swap(project: Project, case_id: str, propose_fn: ProposeFn, strategy: str) -> list[Query]:
    """Replace a pick: reject it and ask the strategy for one new pick with the others fixed.

    All in one transaction: if `propose_fn` raises or returns an unusable pick, nothing changes.

    Args:
        case_id: the pick to replace.
        propose_fn: `(pool, 1) -> [pick dict]`, e.g. the project's strategy over stored scores.
        strategy: the strategy's name, stored with the new pick.

    Raises:
        StateError: outside `proposed`, when the case is not a live pick, or when the strategy
            returns no new pick (no candidate left).
    """
    with store.transaction(project.db) as conn:
        idx = require_state(conn, {RoundState.PROPOSED}, "swap a pick")
        _reject(conn, idx, case_id, QueryStatus.SWAPPED)
        pool = _pool(conn, project, idx, swapping=case_id)
        new = list(propose_fn(pool, 1))
        if not new:
            raise StateError(f"cannot swap {case_id!r}: the strategy found no other candidate in round {idx}.")
        _insert_picks(conn, project, idx, new, strategy)
        _settle(conn, idx)
    return list_queries(project)


def mark_trained(project: Project, checkpoint: str, metrics: Mapping[str, Any] | None = None) -> RoundInfo:
    """Record the model fine-tuned in this round (from `labelled`).

    Raises:
        StateError: in any other state.
    """
    with store.transaction(project.db) as conn:
        idx = require_state(conn, {RoundState.LABELLED}, "record a trained model")
        _move(conn, idx, RoundState.TRAINED, checkpoint=checkpoint)
        store.add_event(conn, "round", f"round {idx} trained", round=idx, checkpoint=checkpoint, **(metrics or {}))
    return current_round(project)


def reopen_for_training(project: Project, earlier_model: str | None) -> RoundInfo:
    """Set a trained (or evaluated) round back to `labelled`, so it can be fine-tuned again with
    other settings; its labels and picks stay. The round's model and test metrics are cleared
    here and kept in an event ("round t reopened for training"), with `earlier_model`, where the
    caller moved the earlier model's folder (`training_round.reopen_round` does both).

    Raises:
        StateError: when the current round is neither `trained` nor `evaluated`.
    """
    with store.transaction(project.db) as conn:
        idx = require_state(conn, {RoundState.TRAINED, RoundState.EVALUATED}, "fine-tune the round again")
        row = conn.execute("SELECT checkpoint, metrics FROM rounds WHERE idx = ?", (idx,)).fetchone()
        _move(conn, idx, RoundState.LABELLED, checkpoint=None, metrics="{}")
        store.add_event(conn, "round", f"round {idx} reopened for training", round=idx,
                        earlier_checkpoint=row["checkpoint"], earlier_model=earlier_model,
                        earlier_metrics=json.loads(row["metrics"]))
    return current_round(project)


def reopenings(project: Project) -> dict[int, list[dict[str, Any]]]:
    """Round index -> the earlier tries of a round fine-tuned again, oldest first: each the
    payload of its "reopened for training" event ("earlier_model", "earlier_checkpoint",
    "earlier_metrics")."""
    out: dict[int, list[dict[str, Any]]] = {}
    with store.reading(project.db) as conn:
        rows = conn.execute(
            "SELECT payload FROM events WHERE kind = 'round' AND message LIKE '% reopened for training' ORDER BY id"
        ).fetchall()
    for (payload,) in rows:
        data = json.loads(payload)
        out.setdefault(int(data["round"]), []).append(data)
    return out


def mark_evaluated(project: Project, metrics: Mapping[str, Any]) -> RoundInfo:
    """Record the test-set metrics of this round's model (from `trained`).

    Raises:
        StateError: in any other state.
    """
    with store.transaction(project.db) as conn:
        idx = require_state(conn, {RoundState.TRAINED}, "record evaluation metrics")
        _move(conn, idx, RoundState.EVALUATED, metrics=json.dumps(dict(metrics), default=str))
        store.add_event(conn, "round", f"round {idx} evaluated", round=idx)
    return current_round(project)


def start_next_round(project: Project) -> RoundInfo:
    """Open round t + 1 after round t is evaluated, after a backup of the store
    (`backups/project-...-before-round-<t+1>.sqlite`).

    Raises:
        StateError: when the current round is not `evaluated`.
    """
    with store.reading(project.db) as conn:
        require_state(conn, {RoundState.EVALUATED}, "start the next round")
        upcoming = int(conn.execute("SELECT MAX(idx) FROM rounds").fetchone()[0]) + 1
    store.backup(project.db, f"before-round-{upcoming}")  # the store as round t ended
    with store.transaction(project.db) as conn:
        idx = require_state(conn, {RoundState.EVALUATED}, "start the next round")
        conn.execute(
            "INSERT INTO rounds (idx, state, state_times) VALUES (?, ?, ?)",
            (idx + 1, RoundState.OPEN.value, json.dumps({RoundState.OPEN.value: time.time()})),
        )
        store.add_event(conn, "round", f"round {idx + 1} opened", round=idx + 1)
    return current_round(project)


def settle_labelled(conn: sqlite3.Connection) -> None:
    """Move an `approved` round to `labelled` once every approved case has a label.

    Called by the label functions inside their transaction.
    """
    row = _latest(conn)
    if RoundState(row["state"]) is not RoundState.APPROVED:
        return
    missing = conn.execute(
        "SELECT COUNT(*) FROM queries q WHERE q.round = ? AND q.status = 'approved' "
        "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.case_id = q.case_id)",
        (row["idx"],),
    ).fetchone()[0]
    if missing == 0:
        _move(conn, row["idx"], RoundState.LABELLED)
        store.add_event(conn, "round", f"round {row['idx']} labelled", round=row["idx"])


def _latest(conn: sqlite3.Connection) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM rounds ORDER BY idx DESC LIMIT 1").fetchone()
    if row is None:
        raise StateError("the project has no round; it was not created by `assft init`.")
    return row


def _round_info(row: sqlite3.Row) -> RoundInfo:
    return RoundInfo(
        idx=row["idx"],
        state=RoundState(row["state"]),
        state_times=json.loads(row["state_times"]),
        score_table=row["score_table"],
        checkpoint=row["checkpoint"],
        metrics=json.loads(row["metrics"]),
    )


def require_state(conn: sqlite3.Connection, allowed: set[RoundState], action: str) -> int:
    """The current round index if its state is in `allowed`, else a StateError naming the next step."""
    row = _latest(conn)
    state = RoundState(row["state"])
    if state not in allowed:
        raise StateError(
            f"cannot {action}: round {row['idx']} is '{state.value}'; "
            f"allowed next step: {NEXT_STEP[state]}."
        )
    return int(row["idx"])


def _move(conn: sqlite3.Connection, idx: int, state: RoundState, **columns: Any) -> None:
    times = json.loads(conn.execute("SELECT state_times FROM rounds WHERE idx = ?", (idx,)).fetchone()[0])
    times[state.value] = time.time()
    sets = ", ".join(f"{name} = ?" for name in ["state", "state_times", *columns])
    conn.execute(
        f"UPDATE rounds SET {sets} WHERE idx = ?",
        (state.value, json.dumps(times), *columns.values(), idx),
    )


def _ids(conn: sqlite3.Connection, idx: int, *statuses: QueryStatus) -> list[str]:
    marks = ", ".join("?" for _ in statuses)
    rows = conn.execute(
        f"SELECT case_id FROM queries WHERE round = ? AND status IN ({marks}) ORDER BY rank, id",
        (idx, *[s.value for s in statuses]),
    )
    return [r[0] for r in rows]


def _set_status(conn: sqlite3.Connection, idx: int, case_id: str, status: QueryStatus) -> None:
    conn.execute(
        "UPDATE queries SET status = ?, updated_at = ? WHERE round = ? AND case_id = ?",
        (status.value, time.time(), idx, case_id),
    )


def _reject(conn: sqlite3.Connection, idx: int, case_id: str, status: QueryStatus) -> None:
    live = _ids(conn, idx, QueryStatus.PROPOSED, QueryStatus.APPROVED)
    if case_id not in live:
        raise StateError(
            f"cannot {'swap' if status is QueryStatus.SWAPPED else 'reject'} {case_id!r}: it is not a "
            f"pick of round {idx} (picks: {', '.join(live) or 'none'})."
        )
    _set_status(conn, idx, case_id, status)
    store.add_event(conn, "query", f"{status.value} {case_id}", round=idx, case_id=case_id)


def _settle(conn: sqlite3.Connection, idx: int) -> None:
    """`proposed` -> `approved` when nothing is pending and something is approved."""
    if not _ids(conn, idx, QueryStatus.PROPOSED) and _ids(conn, idx, QueryStatus.APPROVED):
        _move(conn, idx, RoundState.APPROVED)
        store.add_event(conn, "round", f"round {idx} approved", round=idx)


def _pool(conn: sqlite3.Connection, project: Project, idx: int, swapping: str | None) -> RoundPool:
    pool_ids = [
        r[0]
        for r in conn.execute(
            "SELECT case_id FROM cases WHERE split = ? AND usable = 1 ORDER BY case_id", (Split.POOL.value,)
        )
    ]
    in_pool = set(pool_ids)
    labelled = [r[0] for r in conn.execute("SELECT DISTINCT case_id FROM labels ORDER BY case_id") if r[0] in in_pool]
    return RoundPool(
        round=idx,
        planned_rounds=project.config.planned_rounds,
        budget=project.config.budget,
        pool_ids=pool_ids,
        labelled=labelled,
        fixed=[c for c in _ids(conn, idx, QueryStatus.APPROVED, QueryStatus.PROPOSED) if c != swapping],
        excluded=_ids(conn, idx, QueryStatus.REJECTED, QueryStatus.SWAPPED) + _oracle_cannot_label(conn, project),
    )


def _oracle_cannot_label(conn: sqlite3.Connection, project: Project) -> list[str]:
    """In oracle mode, the pool cases without a reference label: never proposed, since the oracle
    could not label them and an approved pick would block the round."""
    if not project.oracle:
        return []
    return [r[0] for r in conn.execute(
        "SELECT case_id FROM cases WHERE split = ? AND usable = 1 AND has_reference_label = 0 ORDER BY case_id",
        (Split.POOL.value,),
    )]


def _insert_picks(
    conn: sqlite3.Connection, project: Project, idx: int, picks: list[Mapping[str, Any]], strategy: str
) -> None:
    pool = _pool(conn, project, idx, swapping=None)
    allowed = set(pool.candidates)
    start = conn.execute("SELECT COALESCE(MAX(rank), 0) FROM queries WHERE round = ?", (idx,)).fetchone()[0]
    now = time.time()
    for offset, pick in enumerate(picks, start=1):
        case_id = str(pick.get("case_id", ""))
        if case_id not in allowed:
            raise StateError(
                f"cannot propose {case_id!r} in round {idx}: only usable, unlabelled pool cases not yet "
                "picked or excluded this round can be proposed."
            )
        allowed.discard(case_id)
        explanation = {k: v for k, v in pick.items() if k != "case_id"}
        conn.execute(
            "INSERT INTO queries (round, case_id, status, strategy, explanation, rank, created_at, updated_at) "
            "VALUES (?, ?, 'proposed', ?, ?, ?, ?, ?)",
            (idx, case_id, strategy, json.dumps(explanation, default=float), start + offset, now, now),
        )
    store.add_event(
        conn, "query", f"proposed {', '.join(str(p.get('case_id')) for p in picks)}", round=idx, strategy=strategy
    )
