"""Viewer page: any case in three planes on the scoring grid, with the label, the model's prediction,
the ASD entropy heatmap and the ASD ROI outline (ASSFT, METHOD.md §2), and the case's scores."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.case_views import NO_SCORES, SCORE_LABELS, VIEWER_CASE_KEY, cached_case_view, fmt_score, table_key
from app.presenters import describe_pick
from app.ui import guard, require_project, round_banner
from assft_core.session import labels, rounds
from assft_core.session.project import Project
from assft_core.session.views import LIVE_PICK, CaseView, ScoredRound, case_table, focus_slice, latest_scores
from assft_core.viz.slices import Axis, Convention, n_slices, slice_figure

CASE_KEY = "viewer-case"
OVERLAYS = ("label", "prediction", "entropy", "ROI")
PLANES = (Axis.AXIAL, Axis.CORONAL, Axis.SAGITTAL)
METRIC_COLUMNS = ("kg", "asd", "div", "confidence", "pick_rank", "pick_score")


def choose_case(frame: pd.DataFrame) -> str:
    """The case selectbox; a case sent by another page (the Embedding's click) is selected first."""
    ids = list(frame["case_id"])
    requested = st.session_state.pop(VIEWER_CASE_KEY, None)
    if requested in ids:
        st.session_state[CASE_KEY] = requested
    elif st.session_state.get(CASE_KEY) not in ids:
        proposed = frame.loc[frame["status"] == "proposed", "case_id"]
        st.session_state[CASE_KEY] = proposed.iloc[0] if len(proposed) else ids[0]
    described = {r.case_id: f"{r.case_id} · site {r.site} · {r.status}" for r in frame.itertuples()}
    return st.selectbox("Case", ids, format_func=described.__getitem__, key=CASE_KEY)


def scores_panel(project: Project, scored: ScoredRound, row: pd.Series) -> None:
    """The case's stored scores in a row of metrics, and why it was picked when it is a live pick."""
    labelled = row["status"] == "labelled"  # its DIV is 0 to itself: says nothing
    shown = [c for c in METRIC_COLUMNS if pd.notna(row[c]) and not (labelled and c == "div")]
    for column, cell in zip(shown, st.columns(len(METRIC_COLUMNS))):
        cell.metric(SCORE_LABELS[column], fmt_score(row[column]))
    notes = [f"site {row['site']}", row["status"]]
    if row["nearest_labelled"] and not labelled:
        notes.append(f"nearest labelled case: {row['nearest_labelled']}")
    st.caption(f"{row['case_id']} · " + " · ".join(notes) + f" · scores of round {scored.info.idx}'s scoring pass")
    pick = next((q for q in rounds.list_queries(project) if q.case_id == row["case_id"] and q.status in LIVE_PICK), None)
    if pick is not None:
        with st.expander(f"Why pick #{pick.rank} of this round", expanded=False):
            st.markdown("  \n".join(describe_pick(pick.explanation)))


def plane(view: CaseView, axis: Axis, overlays: list[str], opacity: float, convention: str, channel: int,
          classes: dict[int, str], colour_bar: bool) -> None:
    """One plane: its slice slider and the figure (the ROI only where the case has one)."""
    depth = n_slices(tuple(view.image.shape[1:]), axis, view.affine)
    index = st.slider(
        f"{axis.value.capitalize()} slice", 0, depth - 1, value=focus_slice(view, axis),
        key=f"viewer-{axis.value}-{view.case_id}",
    )
    fig = slice_figure(
        view.image[channel],
        axis=axis,
        index=index,
        affine=view.affine,
        label=view.label if "label" in overlays else None,
        prediction=view.prediction if "prediction" in overlays else None,
        entropy=view.entropy if "entropy" in overlays else None,
        roi=view.roi if "ROI" in overlays else None,
        opacity=opacity,
        convention=convention,
        class_names=classes,
    )
    # A short title fits a third of the page; the left/right convention is the selector above.
    fig.update_layout(title=f"{view.case_id} · {axis.value} {index} / {depth - 1}", height=440, showlegend=colour_bar)
    if not colour_bar:  # one entropy colour bar and one legend for the three planes, on the last
        fig.update_traces(showscale=False, selector={"name": "entropy"})
    st.plotly_chart(fig, key=f"viewer-figure-{axis.value}")


st.title("Viewer")
project = require_project()
round_banner(project)
scored: ScoredRound | None = None
with guard("read the stored scores"):
    scored = latest_scores(project)
if scored is None:
    st.info(NO_SCORES)
    st.stop()
frame = case_table(project, scored)
if frame.empty:
    st.info("The stored scores hold no pool or test case of this project: score the pool again on the **Query** page.")
    st.stop()

top = st.columns([2, 3, 1, 1])
with top[0]:
    case_id = choose_case(frame)
overlays = top[1].segmented_control(
    "Overlays", OVERLAYS, selection_mode="multi", default=["label", "prediction", "ROI"], key="viewer-overlays",
    help="label: the case's current label version (or a reference in demo mode, marked); prediction: argmax of "
    "the scoring model; entropy: voxel entropy H (ASD's uncertainty); ROI: the ASD region, predicted anatomy dilated.",
)
opacity = top[2].slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="viewer-opacity")
convention = top[3].selectbox("Left/right", [c.value for c in Convention], key="viewer-convention",
                              help="radiological: the patient's left on the screen's right.")

row = frame.loc[frame["case_id"] == case_id].iloc[0]
scores_panel(project, scored, row)
version = labels.current_labels(project).get(case_id)
view = None
with guard(f"load case {case_id}"):
    view = cached_case_view(str(project.folder), table_key(scored), case_id, version.sha256 if version else "", scored)
if view is None:
    st.stop()
channel = 0
if view.image.shape[0] > 1:
    channel = st.selectbox("Channel", list(range(view.image.shape[0])), key="viewer-channel")
if view.label_note and "label" in (overlays or []):
    st.caption(f"Label: {view.label_note}.")
for note in view.notes:
    st.caption(f"Note: {note}.")
for i, (axis, column) in enumerate(zip(PLANES, st.columns(len(PLANES)))):
    with column:
        plane(view, axis, list(overlays or []), opacity, convention, channel, project.classes, colour_bar=i == len(PLANES) - 1)
