"""SSFT selection rules on hand-made c and s values: one test per mode, ranks, ρ rounding, c_min,
all-ignored pseudo-labels, the report's JSON (ASSFT, METHOD.md §4)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from assft_core.config import SSFTConfig, SSFTMode
from assft_core.train.pseudo import PseudoLabelStats
from assft_core.train.reliability import (
    Distribution,
    ReliabilityReport,
    admitted_count,
    reliability_report,
    semantic_distance,
)

IDS = ["u0", "u1", "u2", "u3"]
C = np.array([0.9, 0.8, 0.7, 0.6])
S = np.array([0.4, 0.1, 0.3, 0.2])
# By hand: ĉ = (1, .75, .5, .25); ŝ = (1, .25, .75, .5); r = ĉ(1 − ŝ) = (0, .5625, .125, .125).
R_HAND = [0.0, 0.5625, 0.125, 0.125]


def _report(mode: SSFTMode, **kw: object) -> ReliabilityReport:
    return reliability_report(IDS, C, S, SSFTConfig(mode=mode, **kw), labelled_ids=["l0"])  # type: ignore[arg-type]


def test_selective_takes_top_rho_by_reliability_ties_to_higher_confidence() -> None:
    rep = _report(SSFTMode.SELECTIVE)
    np.testing.assert_allclose([c.reliability for c in rep.cases], R_HAND)
    np.testing.assert_allclose([c.confidence_rank for c in rep.cases], [1, 0.75, 0.5, 0.25])
    np.testing.assert_allclose([c.distance_rank for c in rep.cases], [1, 0.25, 0.75, 0.5])
    # u2 and u3 tie at r = .125 for the second place; u2 has the higher confidence.
    assert rep.admitted_ids == ["u1", "u2"]
    assert [c.order for c in rep.cases] == [4, 1, 2, 3]
    assert rep.n_selectable == 2 and rep.warnings == []
    assert "rank 3 of 4, outside the top 2" in rep.cases[3].reason


def test_confidence_only_takes_the_most_confident() -> None:
    assert _report(SSFTMode.CONFIDENCE_ONLY).admitted_ids == ["u0", "u1"]


def test_distance_only_takes_the_nearest_to_labelled() -> None:
    assert _report(SSFTMode.DISTANCE_ONLY).admitted_ids == ["u1", "u3"]


def test_all_takes_every_case_and_ignores_rho_and_floor() -> None:
    rep = _report(SSFTMode.ALL, rho=0.25, c_min=0.95)
    assert rep.admitted_ids == IDS and rep.n_selectable == 4


def test_none_takes_nothing_without_warnings() -> None:
    rep = _report(SSFTMode.NONE)
    assert rep.admitted_ids == [] and rep.trains_on_labelled_only
    assert rep.warnings == [] and "supervised" in rep.notes[0]


def test_c_min_floor_removes_without_replacing_and_warns() -> None:
    rep = _report(SSFTMode.SELECTIVE, c_min=0.75)
    assert rep.admitted_ids == ["u1"]  # u2 (c = 0.7) was in the top 2 but below the floor
    assert "c_min 0.75" in rep.cases[2].reason and not rep.cases[2].selected
    assert any(w.startswith("only 1 unlabelled scan trusted for pseudo-labels (R), fewer than 2") for w in rep.warnings)


@pytest.mark.parametrize(
    ("rho", "n", "expected"),
    [(0.5, 4, 2), (0.5, 5, 3), (0.3, 10, 3), (0.01, 3, 1), (0.0, 5, 0), (1.0, 5, 5), (0.5, 0, 0)],
)
def test_rho_rounds_up(rho: float, n: int, expected: int) -> None:
    assert admitted_count(rho, n) == expected


def test_rho_outside_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="rho"):
        admitted_count(1.5, 4)


def test_ranks_average_ties() -> None:
    rep = reliability_report(["a", "b", "c"], np.array([0.5, 0.5, 0.9]), np.array([0.2, 0.1, 0.3]), SSFTConfig())
    np.testing.assert_allclose([c.confidence_rank for c in rep.cases], [0.5, 0.5, 1.0])
    # r = (.5·(1 − 2/3), .5·(1 − 1/3), 1·(1 − 1)); ceil(.5·3) = 2 → b, a.
    np.testing.assert_allclose([c.reliability for c in rep.cases], [1 / 6, 1 / 3, 0.0])
    assert rep.admitted_ids == ["a", "b"]


def test_all_ignored_pseudo_label_is_left_out_and_empty_r_is_said() -> None:
    stats = {cid: PseudoLabelStats(cid, 100, 0) for cid in IDS}
    rep = reliability_report(IDS, C, S, SSFTConfig(), pseudo_labels=stats)
    assert rep.admitted_ids == [] and rep.trains_on_labelled_only
    assert [c.selected for c in rep.cases] == [False, True, True, False]
    assert any("every pseudo-label voxel was below" in w for w in rep.warnings)
    assert any("R is empty" in w and "(L) alone" in w for w in rep.warnings)


def test_empty_pool_says_it_trains_on_labelled_alone() -> None:
    rep = reliability_report([], np.zeros(0), np.zeros(0), SSFTConfig())
    assert rep.admitted_ids == [] and rep.distributions["confidence"] is None
    assert any("(L) alone" in w for w in rep.warnings)


def test_distribution_quartiles() -> None:
    d = Distribution.of(np.array([5.0, 1.0, 2.0, 4.0, 3.0, float("nan")]))
    assert d == Distribution(n=5, min=1.0, q1=2.0, median=3.0, q3=4.0, max=5.0)


def test_semantic_distance_to_nearest_labelled() -> None:
    deg = np.deg2rad([0.0, 90.0, 60.0])
    z = np.stack([np.cos(deg), np.sin(deg)], axis=1) * np.array([[1.0], [3.0], [0.5]])  # scale is irrelevant
    s, nearest = semantic_distance(z[2:], z[:2], ["l0", "l1"])
    assert nearest == ["l1"] and s[0] == pytest.approx(1 - math.cos(math.radians(30)))


def test_report_json_round_trip(tmp_path) -> None:
    stats = {"u0": PseudoLabelStats("u0", 10, 7, 7, 6), "u1": PseudoLabelStats("u1", 10, 5, 4, 4)}
    rep = reliability_report(IDS, C, S, SSFTConfig(mode=SSFTMode.ALL), pseudo_labels=stats, sites=list("ABAB"))
    path = rep.save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    # Summary over R = every case with a pseudo-label: kept 12 of 20, correct 10 of 11 compared.
    assert data["pseudo_summary"]["admitted"]["kept_fraction"] == pytest.approx(12 / 20)
    assert data["pseudo_summary"]["admitted"]["kept_accuracy"] == pytest.approx(10 / 11)
    # Per site: u0 is site A (6 of 7 right), u1 site B (4 of 4).
    assert data["pseudo_per_site"]["A"]["admitted"]["kept_accuracy"] == pytest.approx(6 / 7)
    assert data["pseudo_per_site"]["B"]["all_unlabelled"]["kept_accuracy"] == pytest.approx(1.0)
    back = ReliabilityReport.load(path)
    assert back.to_dict() == rep.to_dict() and back.cases[1].site == "B"
