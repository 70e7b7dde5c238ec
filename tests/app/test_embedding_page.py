"""Embedding page: statuses and colours from the store, test cases off by default and faint when
shown, the DIV coverage checked by hand, and a chosen case opened in the Viewer."""

from __future__ import annotations

import numpy as np
from app_factories import CASES
from app_factories import PAGE_TIMEOUT_S, ROOT
from scored_maps import chart_specs, plotly_array, store_scores_with_maps
from streamlit.testing.v1 import AppTest

from app.case_views import NO_SCORES, SCORE_LABELS, selected_case
from app.ui import NO_PROJECT
from assft_core.session import rounds
from assft_core.session.query import propose_round
from assft_core.viz.coverage import DIV_COLOUR_TITLE

IDS = [c for c, _, _ in CASES]
SITES = {c: s for c, s, _ in CASES}


def _z(case_id: str) -> np.ndarray:
    """The unit embedding `store_scores_with_maps` gives case i: (cos i, sin i, i / 2), normalised."""
    i = IDS.index(case_id)
    z = np.array([np.cos(i), np.sin(i), 0.5 * i])
    return z / np.linalg.norm(z)


def _ids_by_trace(spec: dict) -> dict[str, list[str]]:
    return {t["name"]: [str(row[0]) for row in t["customdata"]] for t in spec["data"] if "customdata" in t}


def test_page_without_a_project_says_what_to_do(run_page) -> None:
    at = run_page("embedding", None)
    assert not at.exception
    assert [i.value for i in at.info] == [NO_PROJECT]


def test_page_before_scoring_says_to_score_first(run_page, oracle_project) -> None:
    at = run_page("embedding", oracle_project.folder)
    assert not at.exception
    assert NO_SCORES in [i.value for i in at.info]
    assert not at.get("plotly_chart")


def test_statuses_come_from_the_store_and_colour_choices_work(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    picks = [q.case_id for q in propose_round(oracle_project, "assft", 2)]
    at = run_page("embedding", oracle_project.folder)
    assert not at.exception, at.exception
    traces = _ids_by_trace(chart_specs(at)["embedding-map"])
    pool = [c for c in IDS[:4] if c not in picks]
    assert traces == {"proposed": picks, "pool": pool}  # test cases off by default
    assert "2 test case(s) hidden" in " ".join(c.value for c in at.caption)
    at.toggle(key="embedding-test").set_value(True).run()
    assert _ids_by_trace(chart_specs(at)["embedding-map"]) == {"proposed": picks, "pool": pool, "test": ["t0", "t1"]}
    at.selectbox(key="embedding-colour").set_value("site").run()
    assert _ids_by_trace(chart_specs(at)["embedding-map"]) == {
        "A": ["p0", "p1"], "A (test)": ["t0"], "B": ["p2", "p3"], "B (test)": ["t1"]}
    at.selectbox(key="embedding-colour").set_value("asd").run()
    spec = chart_specs(at)["embedding-map"]
    assert spec["layout"]["coloraxis"]["colorbar"]["title"]["text"] == SCORE_LABELS["asd"]
    at.toggle(key="embedding-test").set_value(False).run()
    assert "test" not in _ids_by_trace(chart_specs(at)["embedding-map"])


def test_shown_test_cases_are_faint_under_the_pool_on_both_maps(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    propose_round(oracle_project, "assft", 2)
    rounds.approve(oracle_project)
    from assft_core.session.labels import label_with_oracle

    label_with_oracle(oracle_project)
    at = run_page("embedding", oracle_project.folder)
    at.toggle(key="embedding-test").set_value(True).run()
    assert not at.exception, at.exception
    specs = chart_specs(at)
    for key in ("embedding-map", "coverage-map"):
        traces = [t for t in specs[key]["data"] if "customdata" in t]
        test = [t for t in traces if {str(row[0]) for row in t["customdata"]} == {"t0", "t1"}]
        assert len(test) == 1, key  # the test cases in a trace of their own
        others = [t for t in traces if t is not test[0]]
        assert test[0]["marker"]["opacity"] < 1 and all("opacity" not in t["marker"] for t in others)
        assert test[0].get("zorder", 0) < min(t.get("zorder", 0) for t in others)
    coverage = specs["coverage-map"]["layout"]
    assert coverage["coloraxis"]["colorbar"]["title"]["text"] == DIV_COLOUR_TITLE  # what the colour is, exactly
    assert coverage["title"]["text"].startswith("DIV")
    assert "DKD's diversity term only" in " ".join(c.value for c in at.caption)


def test_coverage_curve_and_site_shares_match_a_hand_computation(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    picks = [q.case_id for q in propose_round(oracle_project, "assft", 2)]
    at = run_page("embedding", oracle_project.folder)
    specs = chart_specs(at)
    mean = plotly_array(next(t for t in specs["coverage-curve"]["data"] if t["name"] == "mean over pool")["y"])
    # Nothing labelled: no coverage before the picks; then each pool case's 1 − cos to its nearest pick.
    pool = np.stack([_z(c) for c in IDS[:4]])
    after_one = 1.0 - pool @ _z(picks[0])
    after_two = np.minimum(after_one, 1.0 - pool @ _z(picks[1]))
    assert np.isnan(mean[0])
    np.testing.assert_allclose(mean[1:], [after_one.mean(), after_two.mean()], atol=1e-9)
    bars = {t["name"]: plotly_array(t["y"]) for t in specs["coverage-sites"]["data"]}
    pick_sites = [SITES[c] for c in picks]
    np.testing.assert_allclose(bars["picks (n = 2)"], [50.0 * pick_sites.count("A"), 50.0 * pick_sites.count("B")])
    np.testing.assert_allclose(bars["pool (n = 4)"], [50.0, 50.0])


def test_distance_shading_is_to_the_nearest_labelled_case(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    propose_round(oracle_project, "assft", 2)
    rounds.approve(oracle_project)
    from assft_core.session.labels import label_with_oracle

    labelled = [v.case_id for v in label_with_oracle(oracle_project)]
    at = run_page("embedding", oracle_project.folder)
    trace = chart_specs(at)["coverage-map"]["data"][0]
    ids = [str(row[0]) for row in trace["customdata"]]
    expected = [min(1.0 - _z(c) @ _z(l) for l in labelled) for c in ids]
    np.testing.assert_allclose(plotly_array(trace["marker"]["color"]), expected, atol=1e-9)
    assert "No live picks" not in " ".join(i.value for i in at.info)  # the round's picks stay its picks


def test_without_embeddings_the_page_says_so(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project, embedding=False)
    at = run_page("embedding", oracle_project.folder)
    assert not at.exception
    assert "no embedding to map" in at.warning[0].value
    assert not at.get("plotly_chart")


def test_open_in_viewer_switches_page_with_the_case(monkeypatch, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    monkeypatch.setenv("ASSFT_PROJECT", str(oracle_project.folder))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=PAGE_TIMEOUT_S).run()
    at.switch_page("../pages/embedding.py").run()
    assert at.title[0].value == "Embedding"
    at.selectbox(key="embedding-open-case").set_value("t1").run()
    at.button(key="embedding-open").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Viewer"
    assert at.selectbox(key="viewer-case").value == "t1"


def test_selected_case_reads_the_first_point_id() -> None:
    assert selected_case({"selection": {"points": [{"customdata": ["p2", 0.5]}, {"customdata": ["p3"]}]}}) == "p2"
    assert selected_case({"selection": {"points": [{"customdata": "t0"}]}}) == "t0"
    assert selected_case({"selection": {"points": []}}) is None
    assert selected_case({"selection": {"points": [{"x": 1.0}]}}) is None
    assert selected_case(None) is None
