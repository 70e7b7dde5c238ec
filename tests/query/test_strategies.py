"""Strategies: hand-computed orders, each baseline's defining property, edge cases (METHOD.md §3)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from assft_core.config import QueryConfig
from assft_core.errors import StateError
from assft_core.query.strategies import PoolState, get_strategy, list_strategies, swap
from assft_core.query.strategies.clasp import class_slots, power_beta
from assft_core.query.table import NO_EMBEDDING, NO_HEAD, NO_SOURCE_STATS
from tests.query.conftest import angles, build_table

CFG = QueryConfig()
ALL = ["assft", "dkd", "random", "entropy", "fg_entropy", "coreset", "kmeans_entropy", "clasp_pe"]


def select(name, table, pool, budget, seed=0):
    return get_strategy(name).select(table, pool, budget, np.random.default_rng(seed), CFG)


def ids(picks):
    return [p.case_id for p in picks]


def test_registry_lists_every_strategy_and_rejects_unknown():
    assert list_strategies() == ALL
    with pytest.raises(StateError, match="known: assft"):
        get_strategy("nope")


def test_coreset_greedy_k_center_order():
    table = build_table(["L", "a10", "a60", "a90", "a180"], z=angles([0, 10, 60, 90, 180]), asd=[0.5] * 5)
    pool = PoolState(pool_ids=tuple(table.case_ids), labelled_ids=("L",))
    picks = select("coreset", table, pool, 4)
    # Farthest from S each time: 180° (d=2), then 90° (d=1), then 60° (d=1−cos30°), then 10°.
    assert ids(picks) == ["a180", "a90", "a60", "a10"]
    expected = [2.0, 1.0, 1 - math.cos(math.radians(30)), 1 - math.cos(math.radians(10))]
    assert [p.score for p in picks] == pytest.approx(expected)
    assert all(p.nearest_labelled_id == "L" for p in picks)


def test_coreset_without_labels_starts_from_a_seeded_random_case():
    table = build_table(["a", "b", "c"], z=angles([0, 90, 180]))
    pool = PoolState(pool_ids=("a", "b", "c"))
    firsts = {ids(select("coreset", table, pool, 2, seed=s))[0] for s in range(12)}
    assert len(firsts) > 1  # really random across seeds
    picks = select("coreset", table, pool, 2, seed=5)
    assert math.isnan(picks[0].score) and "random" in picks[0].criterion
    far = {"a": "c", "c": "a", "b": None}[picks[0].case_id]
    if far:
        assert picks[1].case_id == far


def _hand_table():
    # k̂ = [1, .75, .5, .25]; â = [.25, 1, .75, .5]; z at 0°, 1°, 60°, 180°.
    return build_table(
        ["c0", "c1", "c2", "c3"], kl=[4.0, 3.0, 2.0, 1.0], z=angles([0, 1, 60, 180]), asd=[0.1, 0.4, 0.3, 0.2]
    )


def test_assft_greedy_matches_hand_computation():
    picks = select("assft", _hand_table(), PoolState(pool_ids=("c0", "c1", "c2", "c3")), 4)
    # Pick 1 (S empty, δ ≡ 1): c1 with ½(.75 + 1). Pick 2, S={c1}: c3 has the largest DIV (δ=1,
    # score .375) against c2's δ=(1−cos59°)/(1−cos179°)=.2425 (score .152). Pick 3: c2 (δ=1).
    assert ids(picks) == ["c1", "c3", "c2", "c0"]
    assert picks[0].score == pytest.approx(0.875) and picks[0].delta == 1.0 and math.isnan(picks[0].div)
    assert picks[1].score == pytest.approx(0.375)
    assert picks[1].div == pytest.approx(1 - math.cos(math.radians(179)))
    assert (picks[1].kg_rank, picks[1].asd_rank) == (0.25, 0.5)
    assert picks[1].kg == pytest.approx(1.0 / 2.5)  # KL / pool median 2.5
    assert picks[2].score == pytest.approx(0.625) and picks[2].delta == pytest.approx(1.0)
    assert all(p.rank == r for r, p in enumerate(picks, start=1))


def test_dkd_is_kg_rank_times_delta():
    picks = select("dkd", _hand_table(), PoolState(pool_ids=("c0", "c1", "c2", "c3")), 4)
    # c0 (k̂=1); then c3 (δ=1 · .25) beats c2 (δ=.25 · .5); then c2 (δ=1 · .5).
    assert ids(picks) == ["c0", "c3", "c2", "c1"]
    assert [p.score for p in picks[:3]] == pytest.approx([1.0, 0.25, 0.5])


def test_entropy_and_fg_entropy_rank_their_own_score(full_table):
    pool = PoolState(pool_ids=tuple(full_table.case_ids))
    assert ids(select("fg_entropy", full_table, pool, 2)) == ["c0", "c1"]  # highest ASD
    assert ids(select("entropy", full_table, pool, 2)) == ["c5", "c4"]  # highest whole-volume H


def test_random_is_seeded_distinct_and_varies(full_table):
    pool = PoolState(pool_ids=tuple(full_table.case_ids), labelled_ids=("c0",))
    a = ids(select("random", full_table, pool, 3, seed=7))
    assert a == ids(select("random", full_table, pool, 3, seed=7))
    assert len(set(a)) == 3 and "c0" not in a
    assert len({tuple(ids(select("random", full_table, pool, 3, seed=s))) for s in range(10)}) > 1


def test_kmeans_entropy_never_picks_zero_weight_cases():
    table = build_table([f"c{i}" for i in range(6)], z=angles([0, 30, 60, 90, 120, 150]), asd=[0, 0, 0.5, 0, 0.2, 0])
    pool = PoolState(pool_ids=tuple(table.case_ids))
    for seed in range(5):
        assert sorted(ids(select("kmeans_entropy", table, pool, 2, seed=seed))) == ["c2", "c4"]


def test_kmeans_entropy_spreads_over_clusters():
    # Two tight clusters of equal weight: two centres must come from different clusters.
    z = angles([0, 1, 2, 90, 91, 92])
    table = build_table([f"c{i}" for i in range(6)], z=z, asd=[0.5] * 6)
    pool = PoolState(pool_ids=tuple(table.case_ids))
    for seed in range(5):
        picked = [int(c[1]) for c in ids(select("kmeans_entropy", table, pool, 2, seed=seed))]
        assert len({i // 3 for i in picked}) == 2


def test_clasp_class_slots_at_b2_and_b5():
    rng = np.random.default_rng(0)
    s2 = class_slots(2, 3, CFG, rng)
    assert len(s2) == 2 and s2[0] in (1, 2, 3) and s2[1] == 0  # floor(1.32) = 1 class slot
    s5 = class_slots(5, 3, CFG, np.random.default_rng(0))
    assert sorted(s5[:3]) == [1, 2, 3] and s5[3:] == [0, 0]  # floor(3.3) = 3, one per class
    orders = {tuple(class_slots(5, 3, CFG, np.random.default_rng(s))[:3]) for s in range(10)}
    assert len(orders) > 1  # the class order is a seeded random permutation


def test_clasp_beta_schedule():
    assert power_beta(0, 5, CFG) == pytest.approx(1.0)
    assert power_beta(2, 5, CFG) == pytest.approx(10.0)
    assert power_beta(4, 5, CFG) == pytest.approx(100.0)
    assert power_beta(9, 5, CFG) == pytest.approx(100.0)  # held after the planned last round


def _clasp_table():
    n = 8
    ce = np.full((n, 3), 0.01)
    ce[0, 0] = ce[1, 1] = ce[2, 2] = 0.9  # one leader per class
    me = np.full(n, 0.05)
    me[5], me[6] = 0.9, 0.8  # overall-entropy leaders
    return build_table([f"c{i}" for i in range(n)], asd=[0.3] * n, mean_entropy=list(me), class_entropy=ce)


def test_clasp_picks_class_leaders_then_overall_entropy_at_high_beta():
    table = _clasp_table()
    pool = PoolState(pool_ids=tuple(table.case_ids), round_index=4, planned_rounds=5)  # β = 100
    picks = select("clasp_pe", table, pool, 5, seed=3)
    assert sorted(ids(picks)[:3]) == ["c0", "c1", "c2"] and ids(picks)[3:] == ["c5", "c6"]
    assert "class" in picks[0].criterion and "overall" in picks[4].criterion
    two = select("clasp_pe", table, pool, 2, seed=3)
    assert two[0].case_id in ("c0", "c1", "c2") and two[1].case_id == "c5"


def test_clasp_noise_is_strong_at_the_first_round():
    table = _clasp_table()
    pool = PoolState(pool_ids=tuple(table.case_ids), round_index=0, planned_rounds=5)  # β = 1
    overall = {select("clasp_pe", table, pool, 2, seed=s)[1].case_id for s in range(20)}
    assert len(overall) > 1  # Gumbel(0, 1) noise reorders log(0.9) vs log(0.05) sometimes


def test_clasp_class_absent_everywhere_falls_back_to_overall():
    ce = np.full((3, 1), np.nan)
    table = build_table(["a", "b", "c"], asd=[0.1] * 3, mean_entropy=[0.1, 0.9, 0.2], class_entropy=ce)
    pool = PoolState(pool_ids=("a", "b", "c"), round_index=4, planned_rounds=5)
    picks = select("clasp_pe", table, pool, 2)
    assert ids(picks) == ["b", "c"] and "no remaining case predicts class 1" in picks[0].criterion


def test_swap_keeps_approved_picks_fixed(full_table):
    pool = PoolState(pool_ids=tuple(full_table.case_ids), labelled_ids=("c5",))
    first = select("assft", full_table, pool, 2)
    approved, rejected = first[0].case_id, first[1].case_id
    approved_pool = PoolState(pool.pool_ids, pool.labelled_ids, fixed_ids=(approved,))
    new_pool, repl = swap(full_table, approved_pool, rejected, np.random.default_rng(0), CFG, "assft")
    assert new_pool.fixed_ids == (approved,) and new_pool.excluded_ids == (rejected,)
    assert repl is not None and repl.case_id not in (approved, rejected, "c5")
    # Same as a plain select with the approved pick in S and the rejected one excluded.
    direct = select("assft", full_table, new_pool, 1)
    assert repl.to_dict() == direct[0].to_dict()
    # The approved pick sits in S: DIV of the replacement is measured to {c5, approved}.
    deg = {f"c{i}": a for i, a in enumerate([0, 20, 45, 90, 135, 180])}
    div = min(1 - math.cos(math.radians(deg[repl.case_id] - deg[s])) for s in ("c5", approved))
    assert repl.div == pytest.approx(div)
    with pytest.raises(StateError):
        swap(full_table, new_pool, approved, np.random.default_rng(0), CFG)


def test_swap_with_other_proposals_kept(full_table):
    pool = PoolState(pool_ids=tuple(full_table.case_ids))
    _, repl = swap(full_table, pool, "c1", np.random.default_rng(0), CFG, "fg_entropy", keep_ids=("c0",))
    assert repl.case_id == "c2"  # not c0 (still proposed), not c1 (rejected)


@pytest.mark.parametrize("name", ALL)
def test_deterministic_under_a_seed(name, full_table):
    pool = PoolState(pool_ids=tuple(full_table.case_ids), labelled_ids=("c0",))
    a = [p.to_dict() for p in select(name, full_table, pool, 3, seed=11)]
    b = [p.to_dict() for p in select(name, full_table, pool, 3, seed=11)]
    assert a == b and len({d["case_id"] for d in a}) == 3
    json.dumps(a)  # explanations are JSON-ready


@pytest.mark.parametrize("name", ALL)
def test_edge_cases(name, full_table):
    all_ids = tuple(full_table.case_ids)
    pool = PoolState(pool_ids=all_ids, labelled_ids=("c0",), fixed_ids=("c1",), excluded_ids=("c2",))
    over = select(name, full_table, pool, 10)
    assert sorted(ids(over)) == ["c3", "c4", "c5"] and "exceeds" in over[0].note
    assert select(name, full_table, pool, 0) == []
    assert select(name, full_table, PoolState(pool_ids=()), 2) == []
    assert select(name, full_table, PoolState(pool_ids=all_ids, labelled_ids=all_ids), 2) == []
    one = select(name, full_table, PoolState(pool_ids=("c4",)), 2)
    assert ids(one) == ["c4"]
    with pytest.raises(ValueError):
        select(name, full_table, pool, -1)


@pytest.mark.parametrize("name", ALL)
def test_all_scores_equal(name):
    n = 5
    table = build_table(
        [f"c{i}" for i in range(n)],
        kl=[1.0] * n,
        z=np.ones((n, 3)),
        asd=[0.2] * n,
        mean_entropy=[0.2] * n,
        class_entropy=np.full((n, 2), 0.2),
    )
    pool = PoolState(pool_ids=tuple(table.case_ids), labelled_ids=("c0",))
    picks = select(name, table, pool, 3, seed=2)
    assert len(set(ids(picks))) == 3 and "c0" not in ids(picks)
    assert ids(picks) == ids(select(name, table, pool, 3, seed=2))


def test_unavailable_terms_are_explained():
    bare = build_table(["a", "b", "c"])  # no source stats, no head, no embedding
    pool = PoolState(pool_ids=("a", "b", "c"))
    picks = select("assft", bare, pool, 2)
    assert len(picks) == 2
    assert picks[0].unavailable == [NO_SOURCE_STATS, NO_HEAD, NO_EMBEDDING]
    assert picks[0].kg_rank == 1.0 and picks[0].asd_rank == 1.0 and picks[1].delta == 1.0
    assert math.isnan(picks[1].div) and picks[0].nearest_labelled_id is None
    for needs in ("fg_entropy", "entropy", "clasp_pe", "coreset", "kmeans_entropy"):
        with pytest.raises(StateError, match=needs):
            select(needs, bare, pool, 1)


def test_assft_without_head_uses_dkd_alone():
    table = _hand_table()
    no_head = build_table(table.case_ids, kl=[4.0, 3.0, 2.0, 1.0], z=angles([0, 1, 60, 180]))
    pool = PoolState(pool_ids=tuple(table.case_ids))
    assert ids(select("assft", no_head, pool, 4)) == ids(select("dkd", table, pool, 4))


def test_test_cases_never_move_the_pool_median():
    table = build_table(["a", "b", "c", "test"], kl=[1.0, 2.0, 3.0, 1000.0], asd=[0.1, 0.2, 0.3, 0.4])
    picks = select("assft", table, PoolState(pool_ids=("a", "b", "c")), 3)
    assert {p.case_id: p.kg for p in picks} == pytest.approx({"a": 0.5, "b": 1.0, "c": 1.5})
    with pytest.raises(StateError, match="no scores"):
        select("assft", table, PoolState(pool_ids=("a", "zz")), 1)


def test_fixed_pick_already_labelled_counts_once(full_table):
    pool = PoolState(pool_ids=tuple(full_table.case_ids), labelled_ids=("c0",), fixed_ids=("c0", "c3"))
    picks = select("coreset", full_table, pool, 1)
    # S = {c0 (0°), c3 (90°)}: the farthest is c5 at 180° (DIV = 1 − cos 90° = 1).
    assert ids(picks) == ["c5"] and picks[0].score == pytest.approx(1.0)


def test_each_pick_names_the_case_of_s_its_diversity_was_measured_against():
    table = build_table(["L", "a10", "a60", "a90", "a180"], z=angles([0, 10, 60, 90, 180]), asd=[0.5] * 5)
    pool = PoolState(pool_ids=tuple(table.case_ids), labelled_ids=("L",))
    picks = select("coreset", table, pool, 3)  # a180, a90, a60
    assert [(p.nearest_id, p.nearest_kind) for p in picks] == [("L", "labelled"), ("L", "labelled"), ("a90", "picked")]  # a90: L and a180 tie, L first
    unlabelled = PoolState(pool_ids=tuple(table.case_ids))
    first, second = select("assft", table, unlabelled, 2)
    assert (first.nearest_id, first.nearest_kind) == (None, None)  # S was empty
    assert (second.nearest_id, second.nearest_kind) == (first.case_id, "picked")
