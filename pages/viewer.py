"""Viewer page: any case in three planes on the scoring grid, with the label (outline), the chosen
model's prediction (fill; f₀ or any round's model, computed on demand and cached), the error view
(false positives / negatives), the ASD entropy heatmap and the ASD ROI outline (ASSFT, METHOD.md §2),
a legend by each view, and the case's scores."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app.case_views import NO_SCORES, SCORE_LABELS, VIEWER_CASE_KEY, cached_case_view, fmt_score, table_key
from app.presenters import describe_pick
from app.ui import guard, require_project, round_banner
from assft_core.session import labels, rounds
from assft_core.session.model_views import ModelMaps, ViewerModel, model_maps, scoring_model, viewer_models
from assft_core.session.project import Project, open_project
from assft_core.session.views import (
    LIVE_PICK,
    CaseView,
    ScoredRound,
    case_table,
    focus_slice,
    latest_scores,
    with_model_maps,
)
from assft_core.session.workspace import ModelRef
from assft_core.viz.slices import Axis, Convention, LabelStyle, error_map, n_slices, slice_figure

CASE_KEY = "viewer-case"
OVERLAYS = ("label", "prediction", "errors", "entropy", "ROI")
MODEL_KEY = "viewer-model"
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


def choose_model(project: Project, scored: ScoredRound) -> tuple[ViewerModel, bool]:
    """The model selector: f₀ and each round's model (`workspace.model_name`); the scoring pass's model
    first selected.

    Returns:
        The chosen model, and whether it is the one whose maps the score table holds.
    """
    models = viewer_models(project)
    scoring = scoring_model(project, scored.info.idx)
    tags = [m.tag for m in models]
    if st.session_state.get(MODEL_KEY) not in tags:
        st.session_state[MODEL_KEY] = scoring.tag if scoring.tag in tags else tags[0]
    labels_by_tag = {m.tag: m.label + (" · scored this round" if m.tag == scoring.tag else "") for m in models}
    tag = st.selectbox("Model", tags, format_func=labels_by_tag.__getitem__, key=MODEL_KEY,
                       help="Whose prediction, errors, entropy and ROI are drawn. A model that did not score "
                            "this case is run on it once when you choose it; the result is kept in the project.")
    return models[tags.index(tag)], tag == scoring.tag


@st.cache_data(max_entries=32, show_spinner="Running the chosen model on this case (once; then it is kept)…")
def cached_model_maps(folder: str, tag: str, model_path: str, case_id: str) -> ModelMaps:
    """`model_views.model_maps`, cached per project, model (tag and folder: one per round) and case.

    The bytes of the checkpoint key the maps stored in the project (`model_views`); here the
    folder is enough (each round's model has its own), and no rerun hashes a checkpoint."""
    return model_maps(open_project(folder), ModelRef(tag, Path(model_path)), case_id)


def plane(view: CaseView, axis: Axis, overlays: list[str], opacity: float, convention: str, channel: int,
          classes: dict[int, str], colour_bar: bool) -> None:
    """One plane: its slice slider and the figure (the ROI only where the case has one)."""
    depth = n_slices(tuple(view.image.shape[1:]), axis, view.affine)
    errors = None
    if "errors" in overlays and view.label is not None and view.prediction is not None:
        errors = error_map(view.label, view.prediction)
    index = st.slider(
        f"{axis.value.capitalize()} slice", 0, depth - 1, value=focus_slice(view, axis),
        key=f"viewer-{axis.value}-{view.case_id}",
    )
    # A short title fits a third of the page; the left/right convention is the selector above.
    # The legend under the plot, below the axis title, by each view (not only the last); one
    # entropy colour bar for the three planes, on the last.
    fig = slice_figure(
        view.image[channel],
        axis=axis,
        index=index,
        affine=view.affine,
        label=view.label if "label" in overlays else None,
        prediction=view.prediction if "prediction" in overlays else None,
        entropy=view.entropy if "entropy" in overlays else None,
        roi=view.roi if "ROI" in overlays else None,
        errors=errors if "errors" in overlays else None,
        opacity=opacity,
        convention=convention,
        class_names=classes,
        label_style=LabelStyle.OUTLINE,
        entropy_colour_bar=colour_bar,
        layout={"title": {"text": f"{view.case_id} · {axis.value} {index} / {depth - 1}"}, "height": 600,
                "showlegend": True, "margin": {"l": 10, "r": 10, "t": 40, "b": 200},
                "legend": {"orientation": "h", "x": 0.0, "y": -0.16, "yanchor": "top", "font": {"size": 11}}},
    )
    st.plotly_chart(fig, key=f"viewer-figure-{axis.value}")


st.title("Viewer")
project = require_project()
round_banner(project, "Viewer")
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
    help="label (outline): the case's current label version (or a reference in demo mode, marked); prediction "
    "(fill): the chosen model's classes; errors: false positives (predicted, not in the label) and false negatives "
    "(in the label, missed); entropy: how unsure the model is per voxel (H, ASD's uncertainty); ROI: the ASD "
    "region, the predicted anatomy dilated.",
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
chosen, from_table = choose_model(project, scored)
if not from_table:
    with guard(f"show the prediction of the {chosen.label} for {case_id}"):
        maps = cached_model_maps(str(project.folder), chosen.tag, str(chosen.ref.path), case_id)
        view = with_model_maps(view, maps.argmax, maps.entropy, maps.affine,
                               project.config.query.roi_dilation_voxels, maps.source)
if "errors" in (overlays or []) and (view.label is None or view.prediction is None):
    st.caption("Errors: need both a label and a prediction of this case.")
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
