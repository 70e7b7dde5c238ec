"""Coverage: how well the labelled (+ proposed) cases cover the pool in embedding space.

The distance used is DKD's diversity distance (ASSFT, METHOD.md §1):
`DIV(x | S) = min_{y ∈ S} (1 − cos(z(x), z(y)))`, computed by the query engine's own
`cosine_distance_to_set`, so the map shows the diversity term exactly as the strategies compute
it (DIV alone: DKD = KG × DIV also weighs in the knowledge gap, which is not drawn here). Low everywhere =
the labelled set covers the pool; a far cluster = a kind of scan no expert has labelled yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from assft_core.query.metrics import cosine_distance_to_set
from assft_core.viz.embedding import (
    LEGEND_BELOW,
    SEQUENTIAL_SCALE,
    STATUS_COLOURS,
    STATUS_SYMBOLS,
    STATUS_ZORDER,
    TEST_OPACITY,
)

# The colour bar's title: exactly what the colour is (METHOD.md §1).
DIV_COLOUR_TITLE = "DIV = 1 − cos to nearest labelled"


def _unit_rows(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"coverage: z must be (N, E), got shape {z.shape}")
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("coverage: z has an all-zero row; cosine distance is undefined for it")
    return z / norms


def _check_indices(idx: Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"coverage: {what} indices must lie in [0, {n}), got {idx.min()}..{idx.max()}")
    return idx


def distance_to_labelled(z: np.ndarray, labelled_idx: Sequence[int] | np.ndarray) -> np.ndarray:
    """Cosine distance of every case to its nearest labelled case (DIV, METHOD.md §1).

    Args:
        z: (N, E) case embeddings (normalised here, so raw pooled features work too).
        labelled_idx: row indices of the labelled cases.

    Returns:
        (N,) float64 distances in [0, 2]; 0 for the labelled cases themselves. All NaN when
        `labelled_idx` is empty (nothing covers anything yet; DKD then uses δ ≡ 1).

    Raises:
        ValueError: if `z` is not 2D, has a zero row, or an index is out of range.
    """
    unit = _unit_rows(z)
    labelled = _check_indices(labelled_idx, unit.shape[0], "labelled")
    if labelled.size == 0:
        return np.full(unit.shape[0], np.nan)
    return cosine_distance_to_set(unit, unit[labelled])[0]


def coverage_curve(
    z: np.ndarray,
    pool_idx: Sequence[int] | np.ndarray,
    pick_order: Sequence[int] | np.ndarray,
    *,
    labelled_idx: Sequence[int] | np.ndarray = (),
) -> dict[str, np.ndarray]:
    """Coverage of the pool after each pick, in pick order.

    After `p` picks, `S_p` = labelled cases ∪ the first `p` picks; for every pool case the
    distance to its nearest case in `S_p` (DIV, METHOD.md §1); the curve is the mean and the
    max of that over the pool. Adding a case to `S` can only shrink a minimum, so both curves
    are non-increasing.

    Args:
        z: (N, E) case embeddings.
        pool_idx: rows of the pool cases the coverage is measured over.
        pick_order: rows of the picked cases, first pick first.
        labelled_idx: rows of the cases labelled before the first pick.

    Returns:
        {"n_picks": (P+1,) int 0..P, "mean": (P+1,), "max": (P+1,)}; entry 0 is before any
        pick (NaN when nothing is labelled yet).

    Raises:
        ValueError: on bad shapes or out-of-range indices.
    """
    unit = _unit_rows(z)
    n = unit.shape[0]
    pool = _check_indices(pool_idx, n, "pool")
    picks = _check_indices(pick_order, n, "pick")
    labelled = _check_indices(labelled_idx, n, "labelled")
    if pool.size == 0:
        raise ValueError("coverage_curve: the pool is empty")
    nearest = np.full(pool.size, np.inf)
    if labelled.size:
        nearest = cosine_distance_to_set(unit[pool], unit[labelled])[0]
    means, maxes = [], []
    for p in range(picks.size + 1):
        if p > 0:  # incremental update: O(|pool|) per pick instead of recomputing all of S
            nearest = np.minimum(nearest, cosine_distance_to_set(unit[pool], unit[picks[p - 1 : p]])[0])
        finite = np.isfinite(nearest).all()
        means.append(nearest.mean() if finite else np.nan)
        maxes.append(nearest.max() if finite else np.nan)
    return {"n_picks": np.arange(picks.size + 1), "mean": np.asarray(means), "max": np.asarray(maxes)}


def coverage_figure(
    coords: np.ndarray,
    distance: np.ndarray,
    case_ids: Sequence[str],
    *,
    labelled_idx: Sequence[int] | np.ndarray = (),
    proposed_idx: Sequence[int] | np.ndarray = (),
    test_idx: Sequence[int] | np.ndarray = (),
) -> go.Figure:
    """The 2D embedding coloured by DIV, the distance to the nearest labelled case (METHOD.md §1).

    DIV only: DKD's other factor, KG, is not in this figure. One sequential scale
    (`SEQUENTIAL_SCALE`, 0 = a labelled case, up to the largest distance) with a titled colour bar.

    Args:
        coords: (N, 2) from `embed_2d`.
        distance: (N,) from `distance_to_labelled`: all finite, or all NaN (no labelled case yet:
            drawn grey, no colour bar).
        case_ids: N case ids; `customdata[0]` of each point, for opening it in the viewer.
        labelled_idx: rows drawn as labelled markers on top.
        proposed_idx: rows drawn as proposed markers on top.
        test_idx: rows of test cases (display only): drawn faint, in a trace under the others.

    Returns:
        The figure: yellow = far from every labelled case (not covered), dark purple = close to one.

    Raises:
        ValueError: if the lengths of `coords`, `distance` and `case_ids` differ, `distance` is
            partly NaN, or an index is out of range.
    """
    coords = np.asarray(coords, dtype=np.float64)
    distance = np.asarray(distance, dtype=np.float64)
    ids = np.asarray(case_ids, dtype=object)
    if not (coords.shape == (len(ids), 2) and distance.shape == (len(ids),)):
        raise ValueError(f"coverage_figure: coords {coords.shape}, distance {distance.shape}, {len(ids)} ids disagree")
    test = np.zeros(len(ids), dtype=bool)
    test[_check_indices(test_idx, len(ids), "test")] = True
    known = np.isfinite(distance)
    if known.any() and not known.all():
        raise ValueError("coverage_figure: distance must be all finite, or all NaN (nothing labelled yet)")
    fig = go.Figure()
    for name, rows, faint in (("cases (colour: DIV)", np.flatnonzero(~test), False),
                              ("test cases", np.flatnonzero(test), True)):
        if rows.size == 0:
            continue
        marker: dict = {"size": 8, "opacity": TEST_OPACITY} if faint else {"size": 11}
        marker.update({"color": distance[rows], "coloraxis": "coloraxis"} if known.any() else {"color": "#bdbdbd"})
        fig.add_trace(
            go.Scatter(
                x=coords[rows, 0],
                y=coords[rows, 1],
                mode="markers",
                name=name,
                marker=marker,
                zorder=STATUS_ZORDER["test" if faint else "pool"],
                customdata=np.stack([ids[rows], np.round(distance[rows], 4).astype(object)], axis=1),
                hovertemplate="<b>%{customdata[0]}</b><br>DIV: %{customdata[1]}<extra></extra>",
            )
        )
    if known.any():
        fig.update_layout(coloraxis={"colorscale": SEQUENTIAL_SCALE, "cmin": 0.0, "cmax": float(distance[known].max()),
                                     "colorbar": {"title": {"text": DIV_COLOUR_TITLE}}})
    for status, rows in (("labelled", labelled_idx), ("proposed", proposed_idx)):
        rows = _check_indices(rows, len(ids), status)
        if rows.size:
            fig.add_trace(
                go.Scatter(
                    x=coords[rows, 0],
                    y=coords[rows, 1],
                    mode="markers",
                    name=status,
                    marker={
                        "size": 14,
                        "symbol": STATUS_SYMBOLS[status] + "-open",
                        "color": STATUS_COLOURS[status],
                        "line": {"width": 2},
                    },
                    zorder=STATUS_ZORDER[status],
                    customdata=ids[rows].reshape(-1, 1),
                    hovertemplate=f"<b>%{{customdata[0]}}</b> ({status})<extra></extra>",
                )
            )
    title = "DIV: distance to the nearest labelled case" if known.any() else "DIV: no labelled case yet"
    fig.update_layout(
        title=title, legend=LEGEND_BELOW, margin={"l": 10, "r": 10, "t": 40, "b": 10}, clickmode="event+select"
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    return fig


def coverage_curve_figure(curve: dict[str, np.ndarray], pick_ids: Sequence[str] | None = None) -> go.Figure:
    """Mean and max distance to the nearest labelled+picked case, pick by pick.

    Args:
        curve: the dict from `coverage_curve`.
        pick_ids: optional ids of the picks in order (P), shown on hover.

    Returns:
        Line figure, x = number of picks (0 = labelled set only).

    Raises:
        ValueError: if `pick_ids` does not have one id per pick.
    """
    x = np.asarray(curve["n_picks"])
    if pick_ids is not None and len(pick_ids) != x.size - 1:
        raise ValueError(f"coverage_curve_figure: {len(pick_ids)} pick ids for {x.size - 1} picks")
    hover_ids = ["(before picks)"] + list(pick_ids) if pick_ids is not None else [""] * x.size
    fig = go.Figure()
    for key, dash in (("mean", "solid"), ("max", "dot")):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=curve[key],
                mode="lines+markers",
                name=f"{key} over pool",
                line={"dash": dash},
                customdata=np.asarray(hover_ids, dtype=object),
                hovertemplate=f"after %{{x}} picks %{{customdata}}<br>{key}: %{{y:.3f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title="Coverage pick by pick (lower = pool better covered)",
        xaxis={"title": {"text": "picks"}, "dtick": 1},
        yaxis={"title": {"text": "distance to nearest labelled/picked (1 − cos)"}, "rangemode": "tozero"},
    )
    return fig


def site_coverage_figure(pool_sites: Sequence[str], pick_sites: Sequence[str]) -> go.Figure:
    """Share of each site in the pool against its share among the picks.

    On an unbalanced pool a rare site should get more than its pool share of picks; a site with
    no pick at all still shows up (bar at 0).

    Args:
        pool_sites: site of every pool case.
        pick_sites: site of every picked case.

    Returns:
        Grouped bar figure, one group per site, y in percent; hover gives the counts.

    Raises:
        ValueError: if the pool is empty.
    """
    if len(pool_sites) == 0:
        raise ValueError("site_coverage_figure: the pool is empty")
    pool_count, pick_count = Counter(map(str, pool_sites)), Counter(map(str, pick_sites))
    sites = sorted(set(pool_count) | set(pick_count))
    fig = go.Figure()
    for name, counts, colour in (("pool", pool_count, STATUS_COLOURS["pool"]), ("picks", pick_count, STATUS_COLOURS["proposed"])):
        total = max(sum(counts.values()), 1)
        n = np.array([counts.get(s, 0) for s in sites])
        fig.add_trace(
            go.Bar(
                x=sites,
                y=100.0 * n / total,
                name=f"{name} (n = {sum(counts.values())})",
                marker_color=colour,
                customdata=n,
                hovertemplate=f"%{{x}}: %{{customdata}} {name} cases (%{{y:.0f}}%)<extra></extra>",
            )
        )
    fig.update_layout(
        title="Site coverage of the picks",
        barmode="group",
        xaxis={"title": {"text": "site"}},
        yaxis={"title": {"text": "share (%)"}, "range": [0, 100]},
    )
    return fig
