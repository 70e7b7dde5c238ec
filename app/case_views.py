"""Glue shared by the Embedding and Viewer pages: opening a case in the viewer, cached case loads,
and the case's scores in words. The data itself comes from `assft_core.session.views`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import streamlit as st

from assft_core.query.table import TABLE_JSON
from assft_core.session.project import open_project
from assft_core.session.views import CaseView, ScoredRound, load_case_view

ROOT = Path(__file__).resolve().parent.parent
VIEWER_PAGE = ROOT / "pages" / "viewer.py"
# The case another page asks the viewer to open (read once by the viewer, then dropped).
VIEWER_CASE_KEY = "assft_viewer_case"
NO_SCORES = (
    "No scores yet: run scoring on the **Query** page first (one pass of the current model over every "
    "case gives the embeddings, predictions and entropy maps shown here)."
)
# Score columns of `case_table`, plain words first (the symbol in brackets), short enough for a metric
# in a sixth of the page.
SCORE_LABELS: dict[str, str] = {
    "kg": "knowledge gap (KG)",
    "asd": "difficulty (ASD)",
    "div": "diversity (DIV)",
    "confidence": "confidence (c)",
    "mean_entropy": "mean entropy",
    "fg_fraction": "foreground fraction",
    "pick_rank": "pick rank",
    "pick_score": "pick score",
}


def open_in_viewer(case_id: str) -> None:
    """Ask the Viewer page to open `case_id` and switch to it (stops this page's run)."""
    st.session_state[VIEWER_CASE_KEY] = case_id
    st.switch_page(VIEWER_PAGE)


def selected_case(event: Any) -> str | None:
    """The case id of the first point selected on a plotly chart (`st.plotly_chart(on_select=...)`).

    The embedding figures carry the case id as `customdata[0]` of every point.

    Args:
        event: the chart's selection state (`{"selection": {"points": [...]}}`), or None.

    Returns:
        The id, or None when nothing (or a point without an id) is selected.
    """
    if not isinstance(event, Mapping):
        return None
    points = (event.get("selection") or {}).get("points") or []
    for point in points:
        custom = point.get("customdata") if isinstance(point, Mapping) else None
        if isinstance(custom, (list, tuple)) and custom and isinstance(custom[0], str):
            return custom[0]
        if isinstance(custom, str):
            return custom
    return None


def table_key(scored: ScoredRound) -> str:
    """The score table's folder and modification time: "Score again" into the same folder is a new key."""
    stamp = (scored.table_dir / TABLE_JSON).stat().st_mtime_ns
    return f"{scored.table_dir}@{stamp}"


@st.cache_data(max_entries=6, show_spinner="Loading the case on the scoring grid…")
def cached_case_view(folder: str, scores_key: str, case_id: str, label_key: str, _scored: ScoredRound) -> CaseView:
    """`load_case_view`, cached per project, score table, case and label version.

    Args:
        folder: the project folder.
        scores_key: `table_key(scored)` (a new scoring pass is a new key).
        case_id: the case.
        label_key: the case's current label version's hash ("" without one): a new label version
            is a new key.
        _scored: the scores (not hashed: `scores_key` stands for them).
    """
    return load_case_view(open_project(folder), _scored, case_id)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_thumbnail(folder: str, scores_key: str, case_id: str, label_key: str, _scored: ScoredRound) -> tuple:
    """`thumbnails.thumbnail` of a case ((H, W, 3) uint8, axial index), cached like `cached_case_view`."""
    from assft_core.viz.thumbnails import thumbnail

    return thumbnail(load_case_view(open_project(folder), _scored, case_id))


def fmt_score(value: Any, digits: int = 3) -> str:
    """A score for display: "n/a" for None / NaN, integers without decimals."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    number = float(value)
    return f"{number:.0f}" if number.is_integer() and abs(number) >= 1 else f"{number:.{digits}f}"
