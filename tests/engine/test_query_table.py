"""`query_table`: KG and z from f_0, ASD / entropies / confidence / maps from f_t (METHOD.md §1–§2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assft_core.config import QueryConfig
from assft_core.errors import StateError
from assft_core.query.strategies import PoolState, get_strategy
from assft_core.query.table import Availability, CaseScores, ScoreTable, query_table


def _table(tag: str, ids: list[str], kl: list[list[float]], z: list[list[float]], asd: list[float],
           *, head: bool = True, stats: bool = True, arrays: Path | None = None) -> ScoreTable:
    rows = [
        CaseScores(
            case_id=cid, site="A", cache_key=f"{tag}-{cid}", kl=np.array(k), embedding=np.array(e),
            asd=a, class_entropy=np.array([a, 2 * a]), confidence=1 - a, mean_entropy=a / 2, fg_fraction=0.1,
        )
        for cid, k, e, a in zip(ids, kl, z, asd)
    ]
    avail = Availability(source_stats=stats, source_stats_origin="file" if stats else "none", head=head, embedding=True)
    return ScoreTable(tag, rows, ["enc.0", "enc.1"], avail, arrays)


IDS = ["a", "b", "c"]
F0 = _table("f0", IDS, [[1, 2], [3, 4], [5, 6]], [[1, 0], [0, 1], [0.6, 0.8]], [0.9, 0.8, 0.7], head=False)
# f_t lists the cases in another order, with other KL and z that must NOT be used.
FT = _table("round2", ["c", "a", "b"], [[9, 9], [9, 9], [9, 9]], [[0, 1], [1, 0], [1, 0]], [0.3, 0.1, 0.2],
            stats=False, arrays=Path("/nowhere/round2/cases"))


def test_kg_and_z_come_from_f0_the_rest_from_ft() -> None:
    q = query_table(F0, FT)
    assert q.case_ids == IDS and q.layers == F0.layers and q.model_tag == "f0+round2"
    np.testing.assert_array_equal(q.kl, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(q.embeddings, [[1, 0], [0, 1], [0.6, 0.8]])
    np.testing.assert_allclose(q.column("asd"), [0.1, 0.2, 0.3])  # a, b, c under f_t
    np.testing.assert_allclose(q.column("confidence"), [0.9, 0.8, 0.7])
    np.testing.assert_allclose(q.column("mean_entropy"), [0.05, 0.1, 0.15])
    np.testing.assert_allclose(q.class_entropy, [[0.1, 0.2], [0.2, 0.4], [0.3, 0.6]])
    # KG = mean over layers of KL_s / pool median: layer medians 3 and 4.
    np.testing.assert_allclose(q.knowledge_gap(IDS), [(1 / 3 + 2 / 4) / 2, (3 / 3 + 4 / 4) / 2, (5 / 3 + 6 / 4) / 2])
    assert q.availability == Availability(source_stats=True, source_stats_origin="file", head=True, embedding=True)
    assert q.arrays_dir == FT.arrays_dir  # the viewer's overlays show the current model


def test_round_zero_table_equals_f0() -> None:
    q = query_table(F0, F0)
    assert q.model_tag == "f0" and [r.cache_key for r in q.rows] == [r.cache_key for r in F0.rows]
    np.testing.assert_array_equal(q.kl, F0.kl)
    np.testing.assert_array_equal(q.column("asd"), F0.column("asd"))
    assert q.availability == F0.availability


def test_ft_missing_a_case_is_refused() -> None:
    partial = _table("round1", ["a", "b"], [[0, 0], [0, 0]], [[1, 0], [0, 1]], [0.1, 0.2])
    with pytest.raises(StateError, match=r"\['c'\]"):
        query_table(F0, partial)


def test_strategy_ranks_asd_of_ft_not_f0() -> None:
    """fg_entropy (ASD alone) picks the highest ASD: 'a' under f_0 (0.9), but 'c' under f_t (0.3)."""
    pick = get_strategy("fg_entropy").select(
        query_table(F0, FT), PoolState(pool_ids=tuple(IDS)), 1, np.random.default_rng(0), QueryConfig()
    )
    assert [p.case_id for p in pick] == ["c"]


def test_saved_query_table_round_trips_with_ft_maps(tmp_path: Path) -> None:
    maps = tmp_path / "ft" / "cases"
    maps.mkdir(parents=True)
    for cid in IDS:
        np.savez(maps / f"{cid}.npz", argmax=np.full((2, 2, 2), ord(cid), np.uint8), affine=np.eye(4))
    ft = _table("round2", IDS, [[0, 0]] * 3, [[1, 0]] * 3, [0.3, 0.1, 0.2], arrays=maps)
    loaded = ScoreTable.load(query_table(F0, ft).save(tmp_path / "query"))
    np.testing.assert_array_equal(loaded.kl, F0.kl)
    np.testing.assert_allclose(loaded.column("asd"), [0.3, 0.1, 0.2])
    assert int(loaded.case_arrays("b").argmax[0, 0, 0]) == ord("b")
