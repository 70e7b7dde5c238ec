"""The round state machine: legal walk, illegal moves with the next step named, approve/reject/swap."""

from __future__ import annotations

import pytest

from assft_core.errors import StateError
from assft_core.session import labels, rounds, store
from assft_core.session.rounds import QueryStatus, RoundState


def _events(project, kind: str) -> list[str]:
    with store.reading(project.db) as conn:
        return [r[0] for r in conn.execute("SELECT message FROM events WHERE kind = ? ORDER BY id", (kind,))]


def _statuses(project) -> dict[str, QueryStatus]:
    return {q.case_id: q.status for q in rounds.list_queries(project)}


def test_full_round_walk_and_next_round(oracle_project) -> None:
    p = oracle_project
    assert rounds.current_round(p).state is RoundState.OPEN
    assert rounds.mark_scored(p, "artifacts/scores/r0").state is RoundState.SCORED
    rounds.propose(p, [{"case_id": "p2", "score": 0.9}, {"case_id": "p3", "score": 0.4}], "assft")
    assert rounds.current_round(p).state is RoundState.PROPOSED
    q = rounds.list_queries(p)
    assert [(x.case_id, x.rank, x.explanation["score"]) for x in q] == [("p2", 1, 0.9), ("p3", 2, 0.4)]
    rounds.approve(p, ["p2"])
    assert rounds.current_round(p).state is RoundState.PROPOSED  # p3 still pending
    rounds.approve(p)
    assert rounds.current_round(p).state is RoundState.APPROVED
    labels.label_with_oracle(p, ["p2"])
    assert rounds.current_round(p).state is RoundState.APPROVED  # p3 still unlabelled
    labels.label_with_oracle(p)
    assert rounds.current_round(p).state is RoundState.LABELLED
    rounds.mark_trained(p, "artifacts/runs/job-00001/checkpoints/step_00000010.pt")
    info = rounds.mark_evaluated(p, {"mean_dice": 0.5})
    assert (info.state, info.metrics) == (RoundState.EVALUATED, {"mean_dice": 0.5})
    assert set(info.state_times) == {s.value for s in RoundState}
    nxt = rounds.start_next_round(p)
    assert (nxt.idx, nxt.state) == (1, RoundState.OPEN)
    assert [r.idx for r in rounds.list_rounds(p)] == [0, 1]
    assert _events(p, "round") == [
        "round 0 scored", "round 0 approved", "round 0 labelled", "round 0 trained", "round 0 evaluated",
        "round 1 opened",
    ]
    assert rounds.round_pool(p).labelled == ["p2", "p3"]  # L carries over; queries of round 1 start empty
    assert rounds.list_queries(p) == []


@pytest.mark.parametrize(
    ("action", "state_text", "next_text"),
    [
        (lambda p: rounds.approve(p), "round 0 is 'open'", "score the pool"),
        (lambda p: rounds.propose(p, [{"case_id": "p0"}], "x"), "round 0 is 'open'", "score the pool"),
        (lambda p: rounds.mark_trained(p, "ck"), "round 0 is 'open'", "score the pool"),
        (lambda p: rounds.start_next_round(p), "round 0 is 'open'", "score the pool"),
    ],
)
def test_illegal_moves_from_open(oracle_project, action, state_text, next_text) -> None:
    with pytest.raises(StateError) as err:
        action(oracle_project)
    assert state_text in str(err.value) and next_text in str(err.value)


def test_illegal_moves_later_name_the_allowed_step(oracle_project) -> None:
    p = oracle_project
    rounds.mark_scored(p, None)
    rounds.propose(p, [{"case_id": "p0"}], "manual")
    with pytest.raises(StateError, match=r"round 0 is 'proposed'; allowed next step: approve, reject or swap"):
        rounds.mark_trained(p, "ck")
    with pytest.raises(StateError, match="round 0 is 'proposed'"):
        rounds.mark_scored(p, None)
    rounds.approve(p, ["p0"])
    with pytest.raises(StateError, match=r"'approved'; allowed next step: label the approved cases"):
        rounds.mark_evaluated(p, {})
    with pytest.raises(StateError, match="'approved'"):
        rounds.reject(p, "p0")


def test_proposals_must_be_unlabelled_pool_cases(oracle_project) -> None:
    p = oracle_project
    rounds.mark_scored(p, None)
    for bad in ("t0", "nope"):  # a test case, an unknown id
        with pytest.raises(StateError, match=f"cannot propose '{bad}'"):
            rounds.propose(p, [{"case_id": bad}], "manual")
    with pytest.raises(StateError, match="cannot propose 'p0'"):  # the same case twice
        rounds.propose(p, [{"case_id": "p0"}, {"case_id": "p0"}], "manual")
    assert rounds.current_round(p).state is RoundState.SCORED


def test_reject_excludes_for_the_round(oracle_project) -> None:
    p = oracle_project
    rounds.mark_scored(p, None)
    rounds.propose(p, [{"case_id": "p0"}, {"case_id": "p1"}], "manual")
    rounds.reject(p, "p0")
    with pytest.raises(StateError, match="cannot approve 'p0'.*pending: p1"):
        rounds.approve(p, ["p0"])
    with pytest.raises(StateError, match="cannot propose 'p0'"):  # excluded for the rest of the round
        rounds.propose(p, [{"case_id": "p0"}], "manual")
    rounds.approve(p)
    assert _statuses(p) == {"p0": QueryStatus.REJECTED, "p1": QueryStatus.APPROVED}
    assert rounds.current_round(p).state is RoundState.APPROVED
    assert rounds.round_pool(p).excluded == ["p0"]


def test_all_rejected_keeps_round_proposed(oracle_project) -> None:
    p = oracle_project
    rounds.mark_scored(p, None)
    rounds.propose(p, [{"case_id": "p0"}], "manual")
    rounds.reject(p, "p0")
    assert rounds.current_round(p).state is RoundState.PROPOSED  # nothing approved: propose more
    rounds.propose(p, [{"case_id": "p1"}], "manual")
    assert [(q.case_id, q.rank) for q in rounds.list_queries(p)] == [("p0", 1), ("p1", 2)]


def test_swap_fixes_other_picks_and_excludes_the_swapped(oracle_project) -> None:
    p = oracle_project
    rounds.mark_scored(p, None)
    rounds.propose(p, [{"case_id": "p0"}, {"case_id": "p1"}, {"case_id": "p2"}], "manual")
    rounds.approve(p, ["p0"])
    seen: list[rounds.RoundPool] = []

    def strategy(pool: rounds.RoundPool, n: int) -> list[dict]:
        seen.append(pool)
        return [{"case_id": c, "why": "next"} for c in pool.candidates[:n]]

    rounds.swap(p, "p1", strategy, "manual")
    (pool,) = seen
    assert pool.fixed == ["p0", "p2"] and pool.excluded == ["p1"] and pool.candidates == ["p3"]
    assert _statuses(p) == {
        "p0": QueryStatus.APPROVED, "p1": QueryStatus.SWAPPED, "p2": QueryStatus.PROPOSED, "p3": QueryStatus.PROPOSED,
    }
    assert rounds.list_queries(p)[-1].explanation == {"why": "next"}
    assert _events(p, "query")[-2:] == ["swapped p1", "proposed p3"]
    with pytest.raises(StateError, match="found no other candidate"):
        rounds.swap(p, "p2", strategy, "manual")  # every other pool case is taken
    assert _statuses(p)["p2"] is QueryStatus.PROPOSED  # the failed swap changed nothing
