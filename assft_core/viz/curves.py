"""Curves: benchmark learning curves, a project's round history, and training loss curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from assft_core.viz.embedding import CATEGORICAL_PALETTE

_REFERENCE_DASH = {"ceiling": "dash", "floor": "dot"}
# Legend titles: the benchmark's strategies and the open project's own rounds, never confused.
BENCHMARK_LEGEND = "benchmark (demo corpus)"
PROJECT_LEGEND = "this project"
PROJECT_COLOUR = "#111111"


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def learning_curve_figure(
    summary: pd.DataFrame, references: pd.DataFrame | None = None, project: pd.DataFrame | None = None
) -> go.Figure:
    """Labelled-case count against test mean Dice, mean ± sd band per strategy, one panel per pool.

    Args:
        summary: `assft_core.bench.schema.summarise` output (pool, strategy, labelled_count,
            n_seeds, dice_mean, dice_sd, ...); may be empty when only `project` is drawn.
        references: optional `summarise_references` output; ceiling and floor drawn as
            horizontal lines in their pool's panel.
        project: optional learning curve of the open project (model, labelled_count, dice_mean:
            one row per evaluated model, f_0 at 0 labelled), drawn as a thick dark line in every
            panel, under its own legend title `PROJECT_LEGEND` (the strategies: `BENCHMARK_LEGEND`).

    Returns:
        The figure; a strategy keeps its colour in every panel, and one legend entry toggles it
        everywhere. One panel per pool with runs, in the order balanced, unbalanced (METHOD.md §5:
        report both); a pool with references only (a benchmark cut short) is named in the title;
        a single untitled panel when there is no benchmark run.

    Raises:
        ValueError: if a required column is missing.
    """
    needed = {"pool", "strategy", "labelled_count", "n_seeds", "dice_mean", "dice_sd"}
    if not needed <= set(summary.columns):
        raise ValueError(f"learning_curve_figure: summary lacks columns {sorted(needed - set(summary.columns))}")
    project_needed = {"model", "labelled_count", "dice_mean"}
    if project is not None and not project_needed <= set(project.columns):
        raise ValueError(f"learning_curve_figure: project lacks columns {sorted(project_needed - set(project.columns))}")
    referenced = set(references["pool"]) if references is not None else set()
    pools = sorted(set(summary["pool"])) or sorted(referenced)
    fig = make_subplots(rows=1, cols=max(len(pools), 1), shared_yaxes=True, subplot_titles=[f"{p} pool" for p in pools])
    strategies = sorted(set(summary["strategy"]))
    in_legend: set[str] = set()
    for col, pool in enumerate(pools, start=1):
        for i, strategy in enumerate(strategies):
            part = summary[(summary["pool"] == pool) & (summary["strategy"] == strategy)].sort_values("labelled_count")
            if part.empty:
                continue
            colour = CATEGORICAL_PALETTE[i % len(CATEGORICAL_PALETTE)]
            x = part["labelled_count"].to_numpy(dtype=float)
            mean = part["dice_mean"].to_numpy(dtype=float)
            sd = np.nan_to_num(part["dice_sd"].to_numpy(dtype=float))  # one seed: no band
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([x, x[::-1]]),
                    y=np.concatenate([mean + sd, (mean - sd)[::-1]]),
                    mode="lines",  # plotly adds markers to short traces by default
                    fill="toself",
                    fillcolor=_rgba(colour, 0.18),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=strategy,
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=mean,
                    mode="lines+markers",
                    name=strategy,
                    line={"color": colour},
                    legend="legend",
                    legendgroup=strategy,
                    showlegend=strategy not in in_legend,
                    customdata=np.stack([part["dice_sd"].to_numpy(dtype=float), part["n_seeds"].to_numpy()], axis=1),
                    hovertemplate=f"{strategy}<br>%{{x}} labelled: %{{y:.3f}} ± %{{customdata[0]:.3f}}"
                    " (%{customdata[1]} seeds)<extra></extra>",
                ),
                row=1,
                col=col,
            )
            in_legend.add(strategy)
        if references is not None:
            for _, ref in references[references["pool"] == pool].iterrows():
                fig.add_hline(
                    y=float(ref["dice_mean"]),
                    line={"dash": _REFERENCE_DASH.get(ref["kind"], "dashdot"), "color": "#555"},
                    annotation_text=f"{ref['kind']} {ref['dice_mean']:.3f}",
                    row=1,
                    col=col,
                )
    if project is not None and not project.empty:
        for col in range(1, max(len(pools), 1) + 1):
            _add_project_curve(fig, project, col, show_legend=col == 1)
    # Ticks at the measured budgets only: "1.5 labelled cases" means nothing.
    counts = set(summary["labelled_count"]) | (set(project["labelled_count"]) if project is not None else set())
    fig.update_xaxes(title={"text": "labelled cases"}, tickmode="array", tickvals=sorted({int(v) for v in counts}))
    fig.update_yaxes(title={"text": "test mean Dice"}, col=1)
    title = "Learning curves (mean ± sd over seeds)" if pools else "Learning curve of this project"
    unrun = sorted(referenced - set(pools))
    if unrun:
        title += f"<br><sup>no runs yet on the {', '.join(unrun)} pool (references only)</sup>"
    fig.update_layout(
        title=title,
        hovermode="closest",
        legend={"title": {"text": BENCHMARK_LEGEND}, "y": 1.0, "yanchor": "top"},
        legend2={"title": {"text": PROJECT_LEGEND}, "y": 0.0, "yanchor": "bottom"},
    )
    return fig


def _add_project_curve(fig: go.Figure, project: pd.DataFrame, col: int, *, show_legend: bool) -> None:
    """The open project's mean test Dice per evaluated model, in one panel (legend 2)."""
    part = project.sort_values("labelled_count", kind="stable")
    fig.add_trace(
        go.Scatter(
            x=part["labelled_count"].to_numpy(dtype=float),
            y=part["dice_mean"].to_numpy(dtype=float),
            mode="lines+markers",
            name="mean test Dice per round",
            line={"color": PROJECT_COLOUR, "width": 4},
            marker={"symbol": "diamond", "size": 11},
            legend="legend2",
            legendgroup=PROJECT_LEGEND,
            showlegend=show_legend,
            customdata=part["model"].to_numpy(dtype=object),
            hovertemplate=f"{PROJECT_LEGEND}, %{{customdata}}<br>%{{x}} labelled: %{{y:.3f}}<extra></extra>",
        ),
        row=1,
        col=col,
    )


def round_history_figure(
    rounds: Sequence[int],
    mean_dice: Sequence[float],
    per_site_dice: Sequence[Mapping[str, float]] | None = None,
    labelled_counts: Sequence[int] | None = None,
    tick_labels: Sequence[str] | None = None,
) -> go.Figure:
    """Test Dice of a project round by round: overall and per site.

    A site whose Dice fell since the previous round gets a red down-triangle: fine-tuning on
    some sites can make others worse, and users must see it (METHOD.md §5).

    Args:
        rounds: round numbers t (0 = `f_0` before fine-tuning).
        mean_dice: mean foreground Dice per round.
        per_site_dice: per round, site → mean Dice (a site absent in a round is a gap).
        labelled_counts: labelled cases per round, shown on hover.
        tick_labels: the x axis's label of each round (e.g. the model's name); default the number.

    Returns:
        Line figure, x = round, one tick per given round and half a round of margin either side (so
        a single round is one tick, not an axis from −1 to 1).

    Raises:
        ValueError: if the sequences have different lengths.
    """
    n = len(rounds)
    for name, seq in (("mean_dice", mean_dice), ("per_site_dice", per_site_dice), ("labelled_counts", labelled_counts),
                      ("tick_labels", tick_labels)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"round_history_figure: {name} has {len(seq)} entries for {n} rounds")
    x = np.asarray(rounds)
    counts = np.asarray(labelled_counts if labelled_counts is not None else [None] * n, dtype=object)
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=np.asarray(mean_dice, dtype=float),
            mode="lines+markers",
            name="all sites",
            line={"width": 4, "color": "#222"},
            customdata=counts,
            hovertemplate="round %{x} (%{customdata} labelled)<br>mean Dice %{y:.3f}<extra></extra>",
        )
    )
    sites = sorted({s for d in per_site_dice or [] for s in d})
    for i, site in enumerate(sites):
        y = np.array([d.get(site, np.nan) for d in per_site_dice or []], dtype=float)
        colour = CATEGORICAL_PALETTE[i % len(CATEGORICAL_PALETTE)]
        fig.add_trace(
            go.Scatter(x=x, y=y, mode="lines+markers", name=f"site {site}", line={"dash": "dash", "color": colour})
        )
        dropped = np.flatnonzero(np.diff(y) < 0) + 1  # NaN comparisons are False: gaps never flag
        if dropped.size:
            fig.add_trace(
                go.Scatter(
                    x=x[dropped],
                    y=y[dropped],
                    mode="markers",
                    name=f"site {site} got worse",
                    marker={"symbol": "triangle-down", "size": 13, "color": "#d62728"},
                    showlegend=False,
                    hovertemplate=f"site {site} fell in round %{{x}}: %{{y:.3f}}<extra></extra>",
                )
            )
    ticks = [int(t) for t in x]
    fig.update_layout(
        title="Test Dice per round",
        xaxis={"title": {"text": "round"}, "tickmode": "array", "tickvals": ticks,
               "ticktext": list(tick_labels) if tick_labels is not None else [str(t) for t in ticks],
               "range": [min(ticks) - 0.5, max(ticks) + 0.5] if ticks else None},
        yaxis={"title": {"text": "mean Dice"}, "range": [0, 1]},
    )
    return fig


def loss_curve_figure(events: Sequence[Mapping[str, float]]) -> go.Figure:
    """Training loss (log scale, left axis) and learning rate (right axis) against the step.

    Args:
        events: progress events of a training run, each with "step", "loss" and "lr" (extra keys
            are ignored; an optional "phase", e.g. "supervised" / "ssft", splits the loss line).

    Returns:
        Line figure with two y axes.

    Raises:
        ValueError: naming the first event that lacks step, loss or lr.
    """
    for i, event in enumerate(events):
        missing = {"step", "loss", "lr"} - set(event)
        if missing:
            raise ValueError(f"loss_curve_figure: event {i} lacks {sorted(missing)}: {dict(event)}")
    frame = pd.DataFrame([{k: e.get(k) for k in ("step", "loss", "lr", "phase")} for e in events])
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if frame.empty:
        fig.update_layout(title="Training loss: no progress yet")
        return fig
    frame["phase"] = frame["phase"].fillna("train")
    for i, (phase, part) in enumerate(frame.groupby("phase", sort=False)):
        fig.add_trace(
            go.Scatter(
                x=part["step"],
                y=part["loss"],
                mode="lines",
                name=f"loss ({phase})",
                line={"color": CATEGORICAL_PALETTE[i % len(CATEGORICAL_PALETTE)]},
            ),
            secondary_y=False,
        )
    fig.add_trace(
        go.Scatter(x=frame["step"], y=frame["lr"], mode="lines", name="learning rate", line={"dash": "dot", "color": "#777"}),
        secondary_y=True,
    )
    fig.update_xaxes(title={"text": "step"})
    fig.update_yaxes(title={"text": "loss"}, type="log", secondary_y=False)
    fig.update_yaxes(title={"text": "learning rate"}, secondary_y=True, showgrid=False)
    fig.update_layout(title="Training loss")
    return fig
