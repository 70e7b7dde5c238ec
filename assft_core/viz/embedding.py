"""2D map of the case embeddings `z` (UMAP, PCA for tiny sets) and its scatter figure.

The map is what users read DKD's diversity term on (ASSFT, METHOD.md §1): `z` is compared by
cosine distance there, so UMAP uses the cosine metric here too.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from assft_core.fsutil import atomic_write, atomic_write_json

# Below this many cases UMAP's neighbour graph is too thin to mean anything: PCA instead.
MIN_CASES_FOR_UMAP = 8
MAX_UMAP_NEIGHBOURS = 15
UMAP_METRIC = "cosine"

# Status of a case in the current round, in legend order, with a fixed colour and symbol so the
# same case looks the same on every page.
STATUS_ORDER = ("labelled", "proposed", "pool", "test")
STATUS_COLOURS = {"labelled": "#1b9e77", "proposed": "#d95f02", "pool": "#9e9e9e", "test": "#7570b3"}
STATUS_SYMBOLS = {"labelled": "diamond", "proposed": "star", "pool": "circle", "test": "x"}
# Drawing order (plotly `zorder`, higher on top): test cases are display-only, so they lie faint
# under the pool, and the labelled / proposed cases the page is about lie on top of everything.
STATUS_ZORDER = {"test": 0, "pool": 1, "proposed": 2, "labelled": 3}
TEST_OPACITY = 0.3
# The one sequential colour scale of every score map (embedding and DIV coverage): dark purple =
# low, yellow = high, readable by colour-blind users and on white.
SEQUENTIAL_SCALE = "Viridis"
# How long a UMAP fit takes when nothing is recorded yet, measured on the project's 2-core CPU
# (umap-learn 0.5, 256-dim z): the first fit of a process imports umap-learn and compiles its numba
# code (7–20 s at a load of 1–3; 90 s at a load of 8), then 1.4–2.8 ms per case. A project's own
# fits replace these numbers (`FIT_TIMES_FILE`, `expected_fit_seconds`).
DEFAULT_FIRST_FIT_S = 20.0
DEFAULT_PER_CASE_S = 0.002
FIT_TIMES_FILE = "embed2d_fit_times.json"
_FIT_KINDS = ("first", "later")  # first UMAP fit of the process / any later one
_umap_fitted_in_process = False
# Horizontal legend under the plot, so it never sits on a colour bar.
LEGEND_BELOW = {"orientation": "h", "x": 0.0, "y": -0.02, "yanchor": "top"}
CATEGORICAL_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def embed_2d(z: np.ndarray, *, random_state: int = 0, cache_dir: Path | None = None) -> np.ndarray:
    """Project case embeddings to 2D for display.

    UMAP (umap-learn, cosine metric, `n_neighbors = min(15, N − 1)`, fixed `random_state`) from
    8 cases up; PCA (scikit-learn) below, where UMAP's neighbour graph is degenerate. One case
    maps to the origin. With `cache_dir`, the result is cached in a `.npy` file named by a hash
    of the embedding bytes and the projection settings, written temp-then-rename, so a UMAP fit
    (the first of a process: 7–20 s of importing and compiling on an idle 2-core CPU) is paid once per embedding
    (docs/architecture.md, "Figures"); each fit's wall time is recorded there too, for
    `expected_fit_seconds`.

    Args:
        z: (N, E) case embeddings, one row per case (L2-normalised `z`, METHOD.md §1).
        random_state: seed of UMAP / PCA; fixed so the map does not jump between reruns.
        cache_dir: folder for the cache files (created if missing), or None for no cache.

    Returns:
        (N, 2) float32 coordinates (arbitrary units), rows in the order of `z`.

    Raises:
        ValueError: if `z` is not a 2D array of finite numbers.
    """
    global _umap_fitted_in_process
    z = _checked(z)
    n = z.shape[0]
    method = _method(n)
    cache_file = None
    if cache_dir is not None:
        cache_file = _cache_file(z, random_state, Path(cache_dir))
        cached = _read_cache(cache_file, n)
        if cached is not None:
            return cached
    if n <= 1:
        coords = np.zeros((n, 2), dtype=np.float32)
    elif method == "pca":
        coords = _fit_pca(z, random_state)
    else:
        kind = "later" if _umap_fitted_in_process else "first"
        start = time.perf_counter()
        coords = _fit_umap(z, random_state)
        _umap_fitted_in_process = True
        if cache_dir is not None:
            _record_fit_time(Path(cache_dir), kind, n, time.perf_counter() - start)
    coords = coords.astype(np.float32)
    if cache_file is not None:
        _write_cache(cache_file, coords)
    return coords


def expected_fit_seconds(z: np.ndarray, *, random_state: int = 0, cache_dir: Path | None = None) -> float:
    """How long `embed_2d(z, random_state=..., cache_dir=...)` will take, in seconds (0 when cached).

    A UMAP fit is `overhead + per_case × N`: the per-case time from this cache folder's last
    recorded later fit, the first-fit overhead (import and numba compilation, paid once per
    process) from its last recorded first fit; `DEFAULT_FIRST_FIT_S` / `DEFAULT_PER_CASE_S`
    until the folder has a record. PCA (fewer than `MIN_CASES_FOR_UMAP` cases) counts as 0.

    Args:
        z: (N, E) case embeddings, as passed to `embed_2d`.
        random_state: as passed to `embed_2d` (part of the cache key).
        cache_dir: as passed to `embed_2d` (None: no cache, no record; the defaults are used).

    Returns:
        The expected wall time in seconds (≥ 0).

    Raises:
        ValueError: if `z` is not a 2D array of finite numbers.
    """
    z = _checked(z)
    n = z.shape[0]
    if _method(n) == "pca":
        return 0.0
    if cache_dir is not None and _read_cache(_cache_file(z, random_state, Path(cache_dir)), n) is not None:
        return 0.0
    record = _read_fit_times(Path(cache_dir)) if cache_dir is not None else {}
    per_case = DEFAULT_PER_CASE_S
    if "later" in record:
        per_case = record["later"]["seconds"] / record["later"]["n"]
    seconds = per_case * n
    if not _umap_fitted_in_process:
        first = record.get("first")
        seconds += DEFAULT_FIRST_FIT_S if first is None else max(first["seconds"] - per_case * first["n"], 0.0)
    return seconds


def _checked(z: np.ndarray) -> np.ndarray:
    z = np.ascontiguousarray(z, dtype=np.float32)
    if z.ndim != 2 or not np.isfinite(z).all():
        raise ValueError(f"embed_2d: z must be a finite (N, E) array, got shape {z.shape}")
    return z


def _method(n: int) -> str:
    return "umap" if n >= MIN_CASES_FOR_UMAP else "pca"


def _cache_file(z: np.ndarray, random_state: int, cache_dir: Path) -> Path:
    # The version from the package metadata: importing umap-learn to read it costs seconds.
    digest = hashlib.sha256()
    version = importlib.metadata.version("umap-learn")
    digest.update(repr((z.shape, _method(z.shape[0]), random_state, UMAP_METRIC, version)).encode())
    digest.update(z.tobytes())
    return cache_dir / f"embed2d_{digest.hexdigest()[:24]}.npy"


def _read_fit_times(cache_dir: Path) -> dict[str, dict[str, float]]:
    """{"first" | "later": {"n": cases, "seconds": wall time}} of the folder's last fits ({} if none)."""
    try:
        data = json.loads((cache_dir / FIT_TIMES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    valid = {}
    for kind in _FIT_KINDS:
        entry = data.get(kind)
        if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in ("n", "seconds")):
            if entry["n"] > 0 and entry["seconds"] >= 0:
                valid[kind] = {"n": float(entry["n"]), "seconds": float(entry["seconds"])}
    return valid


def _record_fit_time(cache_dir: Path, kind: str, n: int, seconds: float) -> None:
    record = _read_fit_times(cache_dir)
    record[kind] = {"n": n, "seconds": round(seconds, 3)}
    atomic_write_json(cache_dir / FIT_TIMES_FILE, record)


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        coords = np.load(path, allow_pickle=False)
    except (OSError, ValueError):  # a truncated or foreign file: recompute and replace it
        return None
    return coords if coords.shape == (n, 2) else None


def _write_cache(path: Path, coords: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would append ".npy" to a bare name
            np.save(handle, coords)

    atomic_write(path, write)


def _fit_pca(z: np.ndarray, random_state: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    k = min(2, z.shape[0], z.shape[1])
    coords = PCA(n_components=k, random_state=random_state).fit_transform(z)
    return np.pad(coords, ((0, 0), (0, 2 - k)))  # E = 1: second axis stays 0


def _fit_umap(z: np.ndarray, random_state: int) -> np.ndarray:
    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(MAX_UMAP_NEIGHBOURS, z.shape[0] - 1),
        metric=UMAP_METRIC,
        random_state=random_state,
        n_jobs=1,  # a fixed random_state forces one thread anyway; say so to silence umap's warning
    )
    return reducer.fit_transform(z)


def embedding_figure(
    coords: np.ndarray,
    table: pd.DataFrame,
    color_by: str,
    *,
    colour_title: str | None = None,
    id_column: str = "case_id",
    status_column: str = "status",
) -> go.Figure:
    """Scatter of the 2D embedding, one marker per case.

    Colour by `"status"` (labelled, proposed, pool, test: fixed colours), by any other
    categorical column such as `"site"`, or by any numeric score column (`SEQUENTIAL_SCALE` with
    a titled colour bar). When the table has a status column, the marker symbol shows the status
    whatever the colour, and test cases (display only) are drawn faint, in traces of their own
    under the others (`STATUS_ZORDER`), so they never hide a pool case. Hover shows the case id, status, site and every numeric column. Each point's
    `customdata[0]` is its case id, so a page can open the clicked case.

    Args:
        coords: (N, 2) from `embed_2d`.
        table: N rows in the order of `coords`: `id_column`, optionally `status_column`
            (values in STATUS_ORDER), `site`, and numeric score columns (KG, DIV, ASD, ...).
        color_by: the column that colours the markers.
        colour_title: what the colour is, in words, for the colour bar and the figure title
            (default: the column name).
        id_column: column holding the case id.
        status_column: column holding the case status.

    Returns:
        The figure; x/y axes hidden (UMAP units mean nothing), equal aspect.

    Raises:
        ValueError: if lengths differ, a column is missing, or a status is unknown.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] != len(table):
        raise ValueError(f"embedding_figure: coords {coords.shape} must be (N, 2) with N = {len(table)} table rows")
    for column in (id_column, color_by):
        if column not in table.columns:
            raise ValueError(f"embedding_figure: no column {column!r}; columns: {list(table.columns)}")
    table = table.reset_index(drop=True)
    has_status = status_column in table.columns
    if has_status:
        unknown = set(table[status_column]) - set(STATUS_ORDER)
        if unknown:
            raise ValueError(f"embedding_figure: unknown status {sorted(unknown)}; allowed: {list(STATUS_ORDER)}")
    hover_columns, n_text = _hover_columns(table, id_column, status_column)
    numeric = color_by != status_column and pd.api.types.is_numeric_dtype(table[color_by])

    fig = go.Figure()
    # One trace per colour category (legend entries) or, for a score, per status (symbols); a
    # category's test cases go in a trace of their own (same legend entry), drawn faint underneath.
    if numeric:
        groups = table[status_column] if has_status else pd.Series(["case"] * len(table))
        categories = [s for s in STATUS_ORDER if s in set(groups)] if has_status else ["case"]
    else:
        groups = table[color_by].astype(str)
        categories = list(STATUS_ORDER) if color_by == status_column else sorted(set(groups))
    is_test = (table[status_column] == "test").to_numpy() if has_status else np.zeros(len(table), dtype=bool)
    for i, category in enumerate(categories):
        in_category = (groups == category).to_numpy()
        for test_part in (False, True):
            rows = np.flatnonzero(in_category & (is_test == test_part))
            if rows.size == 0:
                continue
            part = table.iloc[rows]
            marker: dict = {"size": 10, "line": {"width": 0.5, "color": "#333"}}
            if has_status:
                marker["symbol"] = [STATUS_SYMBOLS[s] for s in part[status_column]]
            if numeric:
                marker.update(color=part[color_by].to_numpy(dtype=float), coloraxis="coloraxis")
            elif color_by == status_column:
                marker["color"] = STATUS_COLOURS[category]
            else:
                marker["color"] = CATEGORICAL_PALETTE[i % len(CATEGORICAL_PALETTE)]
            if test_part:
                marker.update(size=8, opacity=TEST_OPACITY, line={"width": 0})
            statuses = set(part[status_column]) if has_status else set()
            alone = test_part and not (in_category & ~is_test).any()  # the category is test cases only
            fig.add_trace(
                go.Scatter(
                    x=coords[rows, 0],
                    y=coords[rows, 1],
                    mode="markers",
                    name=f"{category} (test)" if test_part and category != "test" else str(category),
                    legendgroup=str(category),
                    showlegend=not test_part or alone,
                    marker=marker,
                    zorder=max((STATUS_ZORDER[s] for s in statuses), default=0),
                    customdata=part[hover_columns].to_numpy(dtype=object),
                    hovertemplate=_hover_template(hover_columns, n_text),
                )
            )
    what = colour_title or color_by
    if numeric:
        fig.update_layout(coloraxis={"colorscale": SEQUENTIAL_SCALE, "colorbar": {"title": {"text": what}}})
    fig.update_layout(
        title=f"Case embedding (colour: {what})",
        legend={"title": {"text": "status" if numeric else color_by}, **LEGEND_BELOW},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        clickmode="event+select",
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    return fig


def _hover_columns(table: pd.DataFrame, id_column: str, status_column: str) -> tuple[list[str], int]:
    """The id first (customdata[0]), then status / site (text), then every numeric column.

    Returns the columns and how many of them (id included) are text.
    """
    columns = [id_column] + [c for c in (status_column, "site") if c in table.columns and c != id_column]
    n_text = len(columns)
    columns += [c for c in table.columns if c not in columns and pd.api.types.is_numeric_dtype(table[c])]
    return columns, n_text


def _hover_template(columns: list[str], n_text: int) -> str:
    lines = ["<b>%{customdata[0]}</b>"]
    for i, column in enumerate(columns[1:], start=1):
        fmt = "" if i < n_text else ":.3~g"
        lines.append(f"{column}: %{{customdata[{i}]{fmt}}}")
    return "<br>".join(lines) + "<extra></extra>"
