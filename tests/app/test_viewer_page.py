"""Viewer page: the chosen case and slice reach the figures, overlays switch, labels are marked by
source, a stale grid is a message; the ASD ROI is checked against scipy's dilation."""

from __future__ import annotations


import numpy as np
from app_factories import CASES
from scored_maps import ENTROPY_IN_BOX, GRID, PAD, chart_specs, plotly_array, prediction, store_scores_with_maps
from scipy import ndimage

from app.case_views import NO_SCORES, VIEWER_CASE_KEY
from app.ui import NO_PROJECT
from assft_core.fsutil import atomic_savez
from assft_core.session import labels, rounds
from assft_core.session.query import propose_round
from assft_core.session.views import roi_from_argmax

# p0's reference label (app_factories.blob_label(0)): native x 1:5, y 2:6, z 2:6 → grid + PAD.
P0_LABEL = (slice(1 + PAD, 5 + PAD), slice(2 + PAD, 6 + PAD), slice(2 + PAD, 6 + PAD))


def _figures(at) -> dict[str, dict]:  # noqa: ANN001 - an AppTest
    """The three plane figures by plane name ("axial", ...), as plotly JSON."""
    return {key.removeprefix("viewer-figure-"): spec for key, spec in chart_specs(at).items()}


def _trace(fig: dict, name: str) -> dict | None:
    return next((t for t in fig["data"] if t.get("name") == name), None)


def _count(fig: dict, name: str) -> int:
    """Non-zero pixels of a categorical overlay trace (0 when the trace is absent)."""
    trace = _trace(fig, name)
    return 0 if trace is None else int((plotly_array(trace["z"]) > 0).sum())


def test_page_without_a_project_says_what_to_do(run_page) -> None:
    at = run_page("viewer", None)
    assert not at.exception
    assert [i.value for i in at.info] == [NO_PROJECT]


def test_page_before_scoring_says_to_score_first(run_page, oracle_project) -> None:
    at = run_page("viewer", oracle_project.folder)
    assert not at.exception
    assert NO_SCORES in [i.value for i in at.info]
    assert not at.get("plotly_chart")


def test_selected_case_and_slice_reach_the_figures(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    at = run_page("viewer", oracle_project.folder)
    assert not at.exception, at.exception
    at.selectbox(key="viewer-case").set_value("p0").run()
    # The sliders open through the prediction (median voxel of PRED_BOX, rounded down): z of 9, 10 → 9;
    # y of 5..8 → 6; x of 6..8 → 7.
    assert [at.slider(key=f"viewer-{a}-p0").value for a in ("axial", "coronal", "sagittal")] == [9, 6, 7]
    at.slider(key="viewer-axial-p0").set_value(7).run()
    figs = _figures(at)
    assert figs["axial"]["layout"]["title"]["text"] == "p0 · axial 7 / 15"
    # Axial slice 7 cuts p0's label cube (grid z 6..9: 4 × 4 voxels) but not the prediction (z 9..10).
    assert _count(figs["axial"], "label") == 16
    assert _count(figs["axial"], "prediction") == 0
    at.slider(key="viewer-axial-p0").set_value(9).run()
    axial = _figures(at)["axial"]
    assert axial["layout"]["title"]["text"] == "p0 · axial 9 / 15"
    assert _count(axial, "label") == 16 and _count(axial, "prediction") == 3 * 4
    # Coronal slice 6 (y) of the prediction box: x 6..8 × z 9..10.
    assert _count(_figures(at)["coronal"], "prediction") == 3 * 2
    captions = [c.value for c in at.caption]
    assert "Label: reference label shown in demo (oracle) mode; not labelled, not trained on." in captions


def test_overlays_switch_and_entropy_has_one_colour_bar(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    at = run_page("viewer", oracle_project.folder)
    at.selectbox(key="viewer-case").set_value("p2").run()
    at.get("button_group")[0].set_value(["entropy"]).run()
    assert not at.exception
    figs = _figures(at)
    for plane, fig in figs.items():
        assert [t.get("name") for t in fig["data"]] == ["image", "entropy"], plane
    z = plotly_array(_trace(figs["axial"], "entropy")["z"])  # axial slice 10 is inside the box
    # Certain voxels are left undrawn (the image shows through); the rest on an opaque scale.
    assert np.isnan(z).any() and sorted(np.unique(z[np.isfinite(z)]).round(3)) == [ENTROPY_IN_BOX]
    scale = _trace(figs["axial"], "entropy")["colorscale"]
    low, high = scale[0][1].lower(), scale[-1][1].lower()
    assert low not in ("#ffffff", "white") and not low.startswith("rgba") and low != high  # never starts at white
    shown = [_trace(f, "entropy").get("showscale", True) for f in (figs["axial"], figs["coronal"], figs["sagittal"])]
    assert shown == [False, False, True]


def test_labels_are_marked_by_source_in_expert_mode(run_page, expert_project) -> None:
    store_scores_with_maps(expert_project)
    at = run_page("viewer", expert_project.folder)
    at.selectbox(key="viewer-case").set_value("p0").run()  # came labelled with the dataset
    assert "Label: expert label v1." in [c.value for c in at.caption]
    at.selectbox(key="viewer-case").set_value("p1").run()  # unlabelled pool case: no reference shown
    captions = [c.value for c in at.caption]
    assert not any(c.startswith("Label:") for c in captions)
    assert "Note: no label: the case is not labelled yet." in captions
    assert all(_trace(f, "label") is None for f in _figures(at).values())
    at.selectbox(key="viewer-case").set_value("t0").run()
    assert "Label: test reference label (evaluation only, never trained on)." in [c.value for c in at.caption]


def test_case_sent_by_another_page_opens_with_its_scores(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    propose_round(oracle_project, "assft", 2)
    first = rounds.list_queries(oracle_project)[0]
    from streamlit.testing.v1 import AppTest

    from app.ui import PROJECT_KEY
    from app_factories import PAGE_TIMEOUT_S, ROOT

    at = AppTest.from_file(str(ROOT / "pages" / "viewer.py"), default_timeout=PAGE_TIMEOUT_S)
    at.session_state[PROJECT_KEY] = str(oracle_project.folder)
    at.session_state[VIEWER_CASE_KEY] = "t1"
    at.run()
    assert at.selectbox(key="viewer-case").value == "t1"
    assert _figures(at)["axial"]["layout"]["title"]["text"].startswith("t1 · axial ")
    at.selectbox(key="viewer-case").set_value(first.case_id).run()
    metrics = {m.label: m.value for m in at.metric}
    i = [c for c, _, _ in CASES].index(first.case_id)
    assert metrics["difficulty (ASD)"] == f"{0.1 + 0.05 * ((i * 3) % 4):.3f}"
    assert metrics["pick rank"] == "1"
    assert metrics["pick score"] == f"{first.explanation['score']:.3f}"


def test_maps_on_another_grid_are_a_message_not_a_traceback(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    folder = oracle_project.resolve(rounds.current_round(oracle_project).score_table or "")
    small = np.zeros((8, 8, 8), np.uint8)
    atomic_savez(folder / "cases" / "p0.npz", argmax=small, entropy=small.astype(np.float16), affine=np.eye(4))
    at = run_page("viewer", oracle_project.folder)
    at.selectbox(key="viewer-case").set_value("p0").run()
    assert not at.exception
    assert "Could not load case p0" in at.error[0].value and "score again" in at.error[0].value


def test_roi_equals_scipy_ball_dilation_of_the_foreground() -> None:
    ball = np.zeros((5, 5, 5), bool)
    zz, yy, xx = np.mgrid[-2:3, -2:3, -2:3]
    ball[(zz**2 + yy**2 + xx**2) <= 4] = True
    assert ball.sum() == 33  # METHOD.md §2: the r = 2 ball holds 33 voxels
    argmax = prediction()
    argmax[1, 1, 1] = 2  # a second class near the border: dilation is cut by the volume edge
    expected = ndimage.binary_dilation(argmax > 0, structure=ball)
    np.testing.assert_array_equal(roi_from_argmax(argmax, 2), expected)
    assert not roi_from_argmax(np.zeros(GRID, np.uint8), 2).any()


def test_labelled_case_shows_its_current_version(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    picks = propose_round(oracle_project, "assft", 2)
    rounds.approve(oracle_project)
    labels.label_with_oracle(oracle_project)
    at = run_page("viewer", oracle_project.folder)
    at.selectbox(key="viewer-case").set_value(picks[0].case_id).run()
    assert "Label: oracle label v1." in [c.value for c in at.caption]


def _trained_round_model(project) -> None:  # noqa: ANN001 - a Project
    """Round 0 scored (with maps), its picks labelled, and a model recorded as fine-tuned in it."""
    from app_factories import make_model_dir

    propose_round(project, "assft", 2)
    rounds.approve(project)
    labels.label_with_oracle(project)
    make_model_dir(project.artifact_path("models", "round-000"))
    rounds.mark_trained(project, "artifacts/models/round-000")


def test_model_selector_computes_another_models_prediction_once_and_keeps_it(
    run_page, oracle_project, monkeypatch
) -> None:
    from assft_core.session import model_views

    store_scores_with_maps(oracle_project)
    _trained_round_model(oracle_project)
    calls: list[str] = []
    other = np.zeros(GRID, np.uint8)
    other[2:5, 2:5, 2:5] = 1  # f_1 predicts elsewhere than f_0's stored box

    def compute(project, ref, case_id, device):  # noqa: ANN001
        calls.append(f"{ref.tag}:{case_id}")
        return model_views.ModelMaps(other, np.full(GRID, 0.5, np.float32), np.asarray(scored_affine()), "computed now")

    monkeypatch.setattr(model_views, "_compute", compute)
    at = run_page("viewer", oracle_project.folder)
    assert not at.exception, at.exception
    model = at.selectbox(key="viewer-model")
    assert model.options[0] == "pre-trained model (f₀) · scored this round"
    assert model.options[1] == "model fine-tuned in round 0 (f₁)" and model.value == "f0"
    at.selectbox(key="viewer-case").set_value("p1").run()
    assert calls == []  # the scoring pass's own maps: nothing computed
    at.selectbox(key="viewer-model").set_value("round1").run()
    assert not at.exception, at.exception
    assert calls == ["round1:p1"]
    at.slider(key="viewer-axial-p1").set_value(3).run()
    assert _count(_figures(at)["axial"], "prediction") == 3 * 3  # f_1's box, not f_0's
    assert any("prediction computed now" in c.value for c in at.caption)
    # Kept in the project: a fresh session (no in-memory cache) reads it back without computing.
    import streamlit as st

    st.cache_data.clear()
    again = run_page("viewer", oracle_project.folder)
    again.selectbox(key="viewer-case").set_value("p1").run()
    again.selectbox(key="viewer-model").set_value("round1").run()
    assert calls == ["round1:p1"] and any("cached" in c.value for c in again.caption)


def scored_affine() -> np.ndarray:
    from scored_maps import GRID_AFFINE

    return GRID_AFFINE


def test_label_is_an_outline_prediction_a_fill_errors_split_and_each_view_has_a_legend(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    at = run_page("viewer", oracle_project.folder)
    at.selectbox(key="viewer-case").set_value("p0").run()
    at.get("button_group")[0].set_value(["label", "prediction", "errors"]).run()
    assert not at.exception, at.exception
    at.slider(key="viewer-axial-p0").set_value(9).run()
    figs = _figures(at)
    axial = figs["axial"]
    kinds = {t.get("name"): t["type"] for t in axial["data"] if t.get("name") in ("label", "prediction", "errors")}
    assert kinds == {"label": "contour", "prediction": "heatmap", "errors": "heatmap"}
    names = [t.get("name") for t in axial["data"]]
    assert "label: blob (outline)" in names and "prediction: blob" in names
    # p0's label cube covers grid x 5..8, y 6..9 on axial 9; the prediction x 6..8, y 5..8:
    # predicted but not labelled → false positives, labelled but missed → false negatives.
    codes = plotly_array(_trace(axial, "errors")["z"])
    assert (codes == 1).sum() == 3 and (codes == 2).sum() == 4 + 3 and (codes == 3).sum() == 0
    assert "false positive: predicted, not in the label" in names and "false negative: in the label, missed" in names
    assert all(fig["layout"]["showlegend"] for fig in figs.values())  # a legend by each view
