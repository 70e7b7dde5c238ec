"""Compare page: benchmark results found or uploaded, validated, and tabulated as mean ± sd over
seeds (checked against the fixture's raw records), with ceiling and floor rows; provenance in an
expander; the open project's own learning curve (f_0 at 0 labelled) beside the benchmark's."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
from app_factories import drive_oracle_round, store_baseline
from scored_maps import plotly_array

import app.bench_views as bench_views
from app.presenters import HistoryPoint
from assft_core.session.evaluation import ON_NEW_LABELS
from assft_core.session.rounds import RoundState
from assft_core.viz.curves import BENCHMARK_LEGEND, PROJECT_LEGEND

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bench_result.json"


@pytest.fixture(autouse=True)
def _no_repo_results(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Results committed to the repository's benchmarks/ must not leak into these tests."""
    monkeypatch.setattr(bench_views, "REPO_RESULTS", tmp_path / "no-repo-results")


def _cell(pool: str, strategy: str, labelled: int) -> str:
    """The expected table cell, from the fixture's raw records (statistics' sample sd)."""
    raw = json.loads(FIXTURE.read_text())
    dice = [r["mean_dice"] for r in raw["records"]
            if (r["pool"], r["strategy"], r["labelled_count"]) == (pool, strategy, labelled)]
    return f"{statistics.mean(dice):.3f} ± {statistics.stdev(dice):.3f} ({len(dice)})"


def test_without_results_the_page_says_how_to_get_them(run_page) -> None:
    at = run_page("compare", None)
    assert not at.exception
    assert "No benchmark result chosen" in at.info[0].value
    assert not at.get("plotly_chart")


def test_project_results_are_found_and_tabulated(run_page, oracle_project) -> None:
    target = oracle_project.artifact_path("benchmarks", "run1")
    target.mkdir(parents=True)
    shutil.copy(FIXTURE, target / "result.json")
    at = run_page("compare", oracle_project.folder)
    assert not at.exception, at.exception
    assert at.multiselect(key="compare-files").value == [(target / "result.json").resolve()]
    assert not at.warning  # provenance is no alarm: it sits in an expander, the file's note with it
    (where,) = [e for e in at.expander if e.label.startswith("Where the benchmark numbers come from")]
    assert "FIXTURE: made-up values" in where.caption[0].value
    assert "Command: `assft bench strategies" in where.markdown[0].value and "CPUs" in where.markdown[0].value
    assert [t.label for t in at.tabs] == ["balanced pool", "unbalanced pool"]
    balanced, unbalanced = at.dataframe[0].value, at.dataframe[1].value
    assert balanced.loc["random", "2 labelled"] == _cell("balanced", "random", 2)
    assert unbalanced.loc["assft", "6 labelled"] == _cell("unbalanced", "assft", 6)
    assert balanced.loc["ceiling", "reference"].endswith("at 24 labelled")
    assert balanced.loc["ceiling", "2 labelled"] == ""
    assert len(at.get("plotly_chart")) == 1


def test_only_result_files_are_offered_newest_first(tmp_path: Path) -> None:
    import os

    old, new = tmp_path / "a" / "strategies.json", tmp_path / "b" / "ssft_ablation.json"
    for path in (old, new):
        path.parent.mkdir()
        shutil.copy(FIXTURE, path)
    os.utime(old, (1_000_000, 1_000_000))
    (tmp_path / "a" / "bench_config.json").write_text('{"rounds": 2}')  # a benchmark's own files
    (tmp_path / "a" / "cost_all.json").write_text('{"version": 1, "phases": {}}')  # a cost report
    (tmp_path / "a" / "broken.json").write_text("{not json")
    assert bench_views.result_files([tmp_path, tmp_path / "missing"]) == [new.resolve(), old.resolve()]


def test_uploads_are_validated_and_errors_name_the_file(run_page) -> None:
    at = run_page("compare", None)
    at.file_uploader(key="compare-upload").set_value(("broken.json", b'{"version": 1}', "application/json")).run()
    assert not at.exception
    assert "uploaded file broken.json" in at.error[0].value and "missing key(s)" in at.error[0].value
    at.file_uploader(key="compare-upload").set_value(("result.json", FIXTURE.read_bytes(), "application/json")).run()
    assert not at.exception and not at.error
    assert at.dataframe[0].value.loc["coreset", "4 labelled"] == _cell("balanced", "coreset", 4)


def test_a_pool_missing_from_the_results_is_flagged(run_page) -> None:
    raw = json.loads(FIXTURE.read_text())
    raw["records"] = [r for r in raw["records"] if r["pool"] == "unbalanced"]
    raw["references"] = [r for r in raw["references"] if r["pool"] == "unbalanced"]
    at = run_page("compare", None)
    at.file_uploader(key="compare-upload").set_value(("one.json", json.dumps(raw).encode(), "application/json")).run()
    assert "No results for the balanced pool" in at.warning[-1].value
    assert [t.label for t in at.tabs] == ["unbalanced pool"]


def _project_trace(at) -> dict:
    (chart,) = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    (trace,) = [t for t in spec["data"] if t.get("legend") == "legend2" and t.get("showlegend", True)]
    return trace | {"layout": spec["layout"]}


def test_this_projects_rounds_are_drawn_beside_the_benchmark(run_page, oracle_project) -> None:
    drive_oracle_round(oracle_project, RoundState.EVALUATED)  # f_1: mean test Dice 0.6 with 2 labelled
    store_baseline(oracle_project, 0.3, {"A": 0.2, "B": 0.4})
    target = oracle_project.artifact_path("benchmarks", "run1")
    target.mkdir(parents=True)
    shutil.copy(FIXTURE, target / "result.json")
    at = run_page("compare", oracle_project.folder)
    assert not at.exception, at.exception
    trace = _project_trace(at)
    assert (plotly_array(trace["x"]).tolist(), plotly_array(trace["y"]).tolist()) == ([0, 2], [0.3, 0.6])
    assert list(trace["customdata"]) == ["f₀", "f₁"]
    layout = trace["layout"]
    assert (layout["legend"]["title"]["text"], layout["legend2"]["title"]["text"]) == (BENCHMARK_LEGEND, PROJECT_LEGEND)
    assert any("f₀ (0 labelled), f₁ (2 labelled)" in c.value for c in at.caption)
    assert not any("Evaluate the pre-trained model (f₀)" in c.value for c in at.caption)
    assert [t.label for t in at.tabs] == ["balanced pool", "unbalanced pool"]  # the benchmark's tables stay


def test_without_a_benchmark_the_projects_curve_is_still_drawn(run_page, oracle_project) -> None:
    drive_oracle_round(oracle_project, RoundState.EVALUATED)  # f_0 not evaluated: the curve starts at f_1
    at = run_page("compare", oracle_project.folder)
    assert not at.exception, at.exception
    assert "No benchmark result chosen" in at.info[0].value
    assert plotly_array(_project_trace(at)["y"]).tolist() == [0.6]
    assert any("Evaluate the pre-trained model (f₀) on the **Project** page" in c.value for c in at.caption)
    assert not at.tabs and not [e for e in at.expander if e.label.startswith("Where")]


def test_project_curve_keeps_test_set_results_only() -> None:
    history = [
        HistoryPoint(0, 0.3, {}, 0, "test"),
        HistoryPoint(2, 0.5, {}, 4, ON_NEW_LABELS),  # biased fallback: not a test-set result
        HistoryPoint(1, 0.6, {}, 2, "test"),
        HistoryPoint(3, None, {}, 6, "test"),  # nothing evaluated: no point
    ]
    curve = bench_views.project_curve(history)
    assert curve.points.to_dict("records") == [
        {"model": "f₀", "labelled_count": 0, "dice_mean": 0.3}, {"model": "f₁", "labelled_count": 2, "dice_mean": 0.6}]
    assert curve.left_out == ["model fine-tuned in round 1 (f₂)"]
    assert bench_views.project_curve([]).points.empty
