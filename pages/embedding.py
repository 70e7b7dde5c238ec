"""Embedding page: the cases in the encoder's feature space, and how the labelled cases and the
picks cover it (DIV, DKD's diversity term; ASSFT, METHOD.md §1). Clicking a case opens it in the Viewer.
Test cases are off by default (display only); when shown they are faint, under the pool."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.case_views import NO_SCORES, SCORE_LABELS, open_in_viewer, selected_case
from app.presenters import format_seconds
from app.ui import guard, require_project, round_banner
from assft_core.query.table import NO_EMBEDDING
from assft_core.session.project import Project
from assft_core.session.workspace import model_name
from assft_core.session.views import (
    ScoredRound,
    case_table,
    coverage_rows,
    embedding_cache_dir,
    latest_scores,
    live_picks,
)
from assft_core.viz.coverage import coverage_curve, coverage_curve_figure, coverage_figure, site_coverage_figure
from assft_core.viz.embedding import MIN_CASES_FOR_UMAP, embed_2d, embedding_figure, expected_fit_seconds

COLOUR_CHOICES = ("status", "site")
HOVER_SCORES = ("kg", "asd", "div", "confidence", "pick_rank", "pick_score")


def map_section(frame: pd.DataFrame, coords: np.ndarray, scored: ScoredRound) -> np.ndarray:
    """The embedding scatter with its colour choice; a selected point opens the Viewer.

    Returns the rows of `frame` shown on the maps (test cases only when the user asks).
    """
    st.subheader("Case embedding")
    scores = [c for c in HOVER_SCORES if frame[c].notna().any()]
    left, right = st.columns([2, 1])
    colour = left.selectbox(
        "Colour by",
        [*COLOUR_CHOICES, *scores],
        format_func=lambda c: SCORE_LABELS.get(c, c),
        key="embedding-colour",
    )
    show_test = right.toggle("Show test cases", value=False, key="embedding-test",
                             help="Test cases are scored for display only; never picked, never in KG medians. "
                                  "Drawn faint, under the pool.")
    keep = np.ones(len(frame), dtype=bool) if show_test else (frame["status"] != "test").to_numpy()
    shown = frame.loc[keep, ["case_id", "status", "site", *scores]].reset_index(drop=True)
    fig = embedding_figure(coords[keep], shown, colour, colour_title=SCORE_LABELS.get(colour, colour))
    fig.update_layout(height=520)
    method = "UMAP (cosine)" if len(frame) >= MIN_CASES_FOR_UMAP else f"PCA (fewer than {MIN_CASES_FOR_UMAP} cases)"
    hidden = int((~keep).sum())
    st.caption(
        f"{len(frame)} cases, embeddings z from round {scored.info.idx}'s scoring pass (the "
        f"{model_name(scored.info.idx)}); 2D map by {method}"
        + (f"; {hidden} test case(s) hidden (switch them on above)" if hidden else "")
        + ". Distances on the map are approximate: DIV below is computed on z itself. "
        "Click a case to open it in the Viewer."
    )
    event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="embedding-map")
    chosen = selected_case(event)
    if chosen is not None:
        open_in_viewer(chosen)
    pick_left, pick_right = st.columns([3, 1], vertical_alignment="bottom")
    case = pick_left.selectbox("Or choose a case", list(frame["case_id"]), key="embedding-open-case")
    if pick_right.button("Open in Viewer", key="embedding-open"):
        open_in_viewer(case)
    return keep


def coverage_section(project: Project, frame: pd.DataFrame, coords: np.ndarray, scored: ScoredRound,
                     keep: np.ndarray) -> None:
    """Coverage by DIV: distance to the nearest labelled case, the curve pick by pick, site shares."""
    st.subheader("Coverage: distance to the nearest labelled case (DIV)")
    picks = live_picks(project, scored.info.idx)
    rows = coverage_rows(frame, picks)
    st.caption(
        "Colour: DIV(x) = min over labelled cases l of 1 − cos(z(x), z(l)), from dark purple "
        "(0: a labelled case or one just like it) to yellow (far from every labelled case: a kind of scan no "
        "expert has labelled yet). This is DKD's diversity term only: DKD = KG × DIV, the Query page's ranking, "
        "also weighs in the knowledge gap (colour the map above by KG to see it). Open markers: labelled and "
        "proposed cases."
    )
    shown = frame[keep].reset_index(drop=True)
    left, right = st.columns(2)
    with left:
        fig = coverage_figure(
            coords[keep],
            shown["div"].to_numpy(dtype=float),
            list(shown["case_id"]),
            labelled_idx=np.flatnonzero((shown["status"] == "labelled").to_numpy()),
            proposed_idx=np.flatnonzero((shown["status"] == "proposed").to_numpy()),
            test_idx=np.flatnonzero((shown["status"] == "test").to_numpy()),
        )
        fig.update_layout(height=460)
        event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="coverage-map")
        chosen = selected_case(event)
        if chosen is not None:
            open_in_viewer(chosen)
    with right:
        if not picks:
            st.info(f"No live picks in round {scored.info.idx}: propose picks on the **Query** page to see how they cover the pool.")
            return
        curve = coverage_curve(
            scored.table.embeddings[scored.table.indices(list(frame["case_id"]))],
            rows.pool,
            rows.picks,
            labelled_idx=rows.labelled_before,
        )
        fig = coverage_curve_figure(curve, [frame["case_id"].iloc[i] for i in rows.picks])
        # The builder's long axis title does not fit a half-width panel; the page caption explains it.
        fig.update_layout(height=320, margin={"t": 40, "b": 10}, yaxis_title_text="1 − cos to nearest")
        st.plotly_chart(fig, key="coverage-curve")
        pool_sites = frame["site"].iloc[rows.pool].tolist()
        fig = site_coverage_figure(pool_sites, frame["site"].iloc[rows.picks].tolist())
        fig.update_layout(height=300, margin={"t": 40, "b": 10})
        st.plotly_chart(fig, key="coverage-sites")


st.title("Embedding")
project = require_project()
round_banner(project)
scored = None
with guard("read the stored scores"):
    scored = latest_scores(project)
if scored is None:
    st.info(NO_SCORES)
    st.stop()
z = scored.table.embeddings
if z is None:
    st.warning(f"Round {scored.info.idx}'s model gives {NO_EMBEDDING}: there is no embedding to map.")
    st.stop()
frame = case_table(project, scored)
if frame.empty:
    st.info("The stored scores hold no pool or test case of this project: score the pool again on the **Query** page.")
    st.stop()
z_cases = z[scored.table.indices(list(frame["case_id"]))]
cache = embedding_cache_dir(project)
expected = expected_fit_seconds(z_cases, cache_dir=cache)
if expected > 0:
    with st.spinner(f"Fitting the 2D map of {len(frame)} cases (UMAP): about {format_seconds(expected)} here, "
                    "then kept, so a revisit is instant…", show_time=True):
        coords = embed_2d(z_cases, cache_dir=cache)
else:  # cached (or a quick PCA): no spinner to flash
    coords = embed_2d(z_cases, cache_dir=cache)
keep = map_section(frame, coords, scored)
coverage_section(project, frame, coords, scored, keep)
