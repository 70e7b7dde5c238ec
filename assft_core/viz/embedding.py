"""2D map of the case embeddings `z` (UMAP, PCA for tiny sets) and its scatter figure.

The map is what users read DKD's diversity term on (ASSFT, METHOD.md §1): `z` is compared by
cosine distance there, so UMAP uses the cosine metric here too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from assft_core.fsutil import atomic_write

# Below this many cases UMAP's neighbour graph is too thin to mean anything: PCA instead.
MIN_CASES_FOR_UMAP = 8
MAX_UMAP_NEIGHBOURS = 15
UMAP_METRIC = "cosine"

# Status of a case in the current round, in legend order, with a fixed colour and symbol so the
# same case looks the same on every page.
STATUS_ORDER = ("labelled", "proposed", "pool", "test")
STATUS_COLOURS = {"labelled": "#1b9e77", "proposed": "#d95f02", "pool": "#9e9e9e", "test": "#7570b3"}
STATUS_SYMBOLS = {"labelled": "diamond", "proposed": "star", "pool": "circle", "test": "x"}
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
    of the embedding bytes and the projection settings, written temp-then-rename, so the first
    UMAP fit of a process (~10 s of numba compilation) is paid once per embedding (docs/architecture.md,
    "Figures").

    Args:
        z: (N, E) case embeddings, one row per case (L2-normalised `z`, METHOD.md §1).
        random_state: seed of UMAP / PCA; fixed so the map does not jump between reruns.
        cache_dir: folder for the cache files (created if missing), or None for no cache.

    Returns:
        (N, 2) float32 coordinates (arbitrary units), rows in the order of `z`.

    Raises:
        ValueError: if `z` is not a 2D array of finite numbers.
    """
    z = np.ascontiguousarray(z, dtype=np.float32)
    if z.ndim != 2 or not np.isfinite(z).all():
        raise ValueError(f"embed_2d: z must be a finite (N, E) array, got shape {z.shape}")
    n = z.shape[0]
    method = "umap" if n >= MIN_CASES_FOR_UMAP else "pca"
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"embed2d_{_cache_key(z, method, random_state)}.npy"
        cached = _read_cache(cache_file, n)
        if cached is not None:
            return cached
    if n <= 1:
        coords = np.zeros((n, 2), dtype=np.float32)
    elif method == "pca":
        coords = _fit_pca(z, random_state)
    else:
        coords = _fit_umap(z, random_state)
    coords = coords.astype(np.float32)
    if cache_file is not None:
        _write_cache(cache_file, coords)
    return coords


def _cache_key(z: np.ndarray, method: str, random_state: int) -> str:
    import umap

    digest = hashlib.sha256()
    digest.update(repr((z.shape, method, random_state, UMAP_METRIC, umap.__version__)).encode())
    digest.update(z.tobytes())
    return digest.hexdigest()[:24]


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
    id_column: str = "case_id",
    status_column: str = "status",
) -> go.Figure:
    """Scatter of the 2D embedding, one marker per case.

    Colour by `"status"` (labelled, proposed, pool, test: fixed colours), by any other
    categorical column such as `"site"`, or by any numeric score column (continuous colour
    scale with a colour bar). When the table has a status column, the marker symbol shows the
    status whatever the colour. Hover shows the case id, status, site and every numeric column.
    Each point's `customdata[0]` is its case id, so a page can open the clicked case.

    Args:
        coords: (N, 2) from `embed_2d`.
        table: N rows in the order of `coords`: `id_column`, optionally `status_column`
            (values in STATUS_ORDER), `site`, and numeric score columns (KG, DIV, ASD, ...).
        color_by: the column that colours the markers.
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
    # One trace per colour category (legend entries) or, for a score, per status (symbols).
    if numeric:
        groups = table[status_column] if has_status else pd.Series(["case"] * len(table))
        categories = [s for s in STATUS_ORDER if s in set(groups)] if has_status else ["case"]
    else:
        groups = table[color_by].astype(str)
        categories = list(STATUS_ORDER) if color_by == status_column else sorted(set(groups))
    for i, category in enumerate(categories):
        rows = np.flatnonzero((groups == category).to_numpy())
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
        fig.add_trace(
            go.Scatter(
                x=coords[rows, 0],
                y=coords[rows, 1],
                mode="markers",
                name=str(category),
                marker=marker,
                customdata=part[hover_columns].to_numpy(dtype=object),
                hovertemplate=_hover_template(hover_columns, n_text),
            )
        )
    if numeric:
        fig.update_layout(coloraxis={"colorscale": "Viridis", "colorbar": {"title": {"text": color_by}}})
    fig.update_layout(
        title=f"Case embedding (coloured by {color_by})",
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
