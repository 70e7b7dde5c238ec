"""Learning curves over the benchmark fixture (with a project's own curve), round history, loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from assft_core.bench.schema import load_results, summarise, summarise_references
from assft_core.viz.curves import (
    BENCHMARK_LEGEND,
    PROJECT_LEGEND,
    learning_curve_figure,
    loss_curve_figure,
    round_history_figure,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bench_result.json"


def test_learning_curves_one_panel_per_pool_with_bands() -> None:
    result = load_results(FIXTURE)
    summary, refs = summarise(result), summarise_references(result)
    fig = learning_curve_figure(summary, refs)
    assert [a.text for a in fig.layout.annotations if a.text.endswith("pool")] == ["balanced pool", "unbalanced pool"]
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(lines) == 2 * 3  # pools x strategies
    assert sorted(t.name for t in lines if t.showlegend) == ["assft", "coreset", "random"]  # one legend entry each
    part = summary[(summary.pool == "unbalanced") & (summary.strategy == "assft")].sort_values("labelled_count")
    line = next(t for t in lines if t.name == "assft" and t.xaxis == "x2")
    np.testing.assert_allclose(line.y, part.dice_mean)
    band = fig.data[fig.data.index(line) - 1]
    n = len(part)
    np.testing.assert_allclose(band.y[:n], part.dice_mean + part.dice_sd)  # upper edge
    np.testing.assert_allclose(band.y[n:], (part.dice_mean - part.dice_sd)[::-1])  # lower edge, reversed
    assert list(fig.layout.xaxis.tickvals) == sorted(set(summary.labelled_count))  # measured budgets only
    ceiling = [s for s in fig.layout.shapes if s.yref == "y2"]
    assert len(ceiling) == 2  # ceiling and floor lines in the unbalanced panel
    with pytest.raises(ValueError, match="dice_sd"):
        learning_curve_figure(summary.drop(columns="dice_sd"))


def test_a_pool_with_references_only_gets_no_empty_panel_and_the_legend_survives() -> None:
    # A benchmark cut short: runs on the unbalanced pool only, the balanced pool's floor already made.
    result = load_results(FIXTURE)
    summary, refs = summarise(result), summarise_references(result)
    fig = learning_curve_figure(summary[summary.pool == "unbalanced"], refs)
    assert [a.text for a in fig.layout.annotations if a.text.endswith("pool")] == ["unbalanced pool"]
    assert sorted(t.name for t in fig.data if t.mode == "lines+markers" and t.showlegend) == [
        "assft", "coreset", "random"]
    assert "no runs yet on the balanced pool" in fig.layout.title.text


PROJECT = pd.DataFrame({"model": ["f_1", "f_0"], "labelled_count": [3, 0], "dice_mean": [0.62, 0.41]})


def test_the_projects_curve_is_in_every_panel_under_its_own_legend() -> None:
    result = load_results(FIXTURE)
    summary, refs = summarise(result), summarise_references(result)
    fig = learning_curve_figure(summary, refs, PROJECT)
    project = [t for t in fig.data if t.legend == "legend2"]
    assert [t.xaxis for t in project] == ["x", "x2"]  # one per pool panel
    assert [t.showlegend for t in project] == [True, False]  # one legend entry toggles both
    np.testing.assert_allclose(project[0].x, [0, 3])  # sorted by labelled count: f_0 at 0
    np.testing.assert_allclose(project[0].y, [0.41, 0.62])
    assert list(project[0].customdata) == ["f_0", "f_1"]
    assert all(t.legend == "legend" for t in fig.data if t.mode == "lines+markers" and t not in project)
    assert (fig.layout.legend.title.text, fig.layout.legend2.title.text) == (BENCHMARK_LEGEND, PROJECT_LEGEND)
    assert list(fig.layout.xaxis.tickvals) == sorted(set(summary.labelled_count) | {0, 3})
    with pytest.raises(ValueError, match="project lacks columns"):
        learning_curve_figure(summary, refs, PROJECT.drop(columns="model"))


def test_the_projects_curve_alone_without_a_benchmark() -> None:
    empty = summarise([])
    fig = learning_curve_figure(empty, None, PROJECT)
    (trace,) = fig.data
    assert trace.legend == "legend2" and trace.xaxis == "x"
    assert fig.layout.title.text == "Learning curve of this project"
    assert list(fig.layout.xaxis.tickvals) == [0, 3]


def test_round_history_flags_sites_that_got_worse() -> None:
    fig = round_history_figure(
        [0, 1, 2, 3],
        [0.3, 0.5, 0.55, 0.6],
        [{"A": 0.2, "B": 0.4}, {"A": 0.5, "B": 0.45}, {"A": 0.45, "B": 0.6}, {"B": 0.5}],
        labelled_counts=[0, 2, 4, 6],
    )
    names = [t.name for t in fig.data]
    assert names[:2] == ["all sites", "site A"]
    drops = {t.name: list(t.x) for t in fig.data if t.name.endswith("got worse")}
    assert drops == {"site A got worse": [2], "site B got worse": [3]}  # A's gap in round 3 is not a drop
    assert list(fig.layout.xaxis.tickvals) == [0, 1, 2, 3] and list(fig.layout.xaxis.range) == [-0.5, 3.5]
    with pytest.raises(ValueError, match="mean_dice has 3 entries for 4 rounds"):
        round_history_figure([0, 1, 2, 3], [0.1, 0.2, 0.3])


def test_round_history_of_one_model_has_one_tick() -> None:
    fig = round_history_figure([0], [0.5], tick_labels=["f₀"])
    axis = fig.layout.xaxis
    assert (list(axis.tickvals), list(axis.ticktext), list(axis.range)) == ([0], ["f₀"], [-0.5, 0.5])
    with pytest.raises(ValueError, match="tick_labels has 2 entries for 1 rounds"):
        round_history_figure([0], [0.5], tick_labels=["f₀", "f₁"])


def test_loss_curve_phases_and_errors() -> None:
    events = [{"step": s, "loss": 1.0 / (s + 1), "lr": 1e-3, "phase": "supervised"} for s in range(5)]
    events += [{"step": s, "loss": 0.2, "lr": 5e-4, "phase": "ssft", "eta_s": 3.0} for s in range(5, 8)]
    fig = loss_curve_figure(events)
    assert [t.name for t in fig.data] == ["loss (supervised)", "loss (ssft)", "learning rate"]
    np.testing.assert_allclose(fig.data[0].y, [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    assert fig.layout.yaxis.type == "log" and fig.data[2].yaxis == "y2"
    assert "no progress" in loss_curve_figure([]).layout.title.text
    with pytest.raises(ValueError, match=r"event 1 lacks \['lr'\]"):
        loss_curve_figure([{"step": 0, "loss": 1.0, "lr": 1e-3}, {"step": 1, "loss": 0.9}])
