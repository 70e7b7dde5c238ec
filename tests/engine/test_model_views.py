"""The Viewer's models: a model's prediction of a case from its scoring pass, else computed once
with the real tiny model and kept in the project, on the grid the viewer draws on."""

from __future__ import annotations

import numpy as np

from assft_core.data.records import Split
from assft_core.session import model_views, workspace
from assft_core.session.project import list_cases
from assft_core.session.views import latest_scores, load_case_view, with_model_maps


def test_a_models_maps_come_from_its_scoring_pass_else_are_computed_once_and_kept(scored_project, monkeypatch) -> None:
    project = scored_project
    f0 = workspace.base_model(project)
    case_id = list_cases(project, Split.POOL)[0].case_id
    stored = model_views.model_maps(project, f0, case_id, device="cpu")  # f_0 scored round 0
    assert stored.source == "stored by the scoring pass of the pre-trained model (f₀)"
    view = load_case_view(project, latest_scores(project), case_id)
    np.testing.assert_array_equal(stored.argmax, view.prediction)

    # The scoring pass's maps gone (as for a model that never scored the case): computed now, then kept.
    folder = project.artifact_path(workspace.SCORES_DIR)
    for path in folder.rglob(f"{case_id}.npz"):
        if f"{f0.tag}-" in str(path.parent.parent.name):
            path.unlink()
    computed = model_views.model_maps(project, f0, case_id, device="cpu")
    assert computed.source == "computed now with the pre-trained model (f₀)"
    np.testing.assert_array_equal(computed.argmax, stored.argmax)  # the same model, the same pass
    assert computed.entropy is not None and 0.0 <= float(computed.entropy.min()) <= float(computed.entropy.max()) <= 1.0
    monkeypatch.setattr(model_views, "_compute", lambda *a: (_ for _ in ()).throw(AssertionError("computed again")))
    cached = model_views.model_maps(project, f0, case_id, device="cpu")
    assert cached.source.endswith("(cached)")
    shown = with_model_maps(view, cached.argmax, cached.entropy, cached.affine,
                            project.config.query.roi_dilation_voxels, cached.source)
    assert shown.prediction.shape == view.image.shape[1:] and shown.roi is not None
    assert [m.tag for m in model_views.viewer_models(project)] == ["f0"]
