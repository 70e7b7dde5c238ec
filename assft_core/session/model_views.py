"""Any model of the project on any case, for the Viewer: f_0 and each round's fine-tuned model.

The Viewer shows the prediction and entropy of the model a user picks. A model's maps of a case
(uint8 argmax and float16 normalised entropy H on the preprocessed grid, METHOD.md §0 and §2) are
taken, in order, from:

1. the scoring pass that model ran (`artifacts/scores/<tag>-<key>/cases/<case>.npz`), when the
   case was scored by it;
2. the viewer's own cache (`artifacts/cache/viewer/<tag>-<key>/<case>.npz`);
3. a sliding-window pass computed now (then written to 2, temp-then-rename), so each model's
   prediction of a case is computed once.

The key is `workspace.model_key` (the card and checkpoint bytes), so a changed checkpoint never
shows a stale prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assft_core.errors import StateError
from assft_core.session import rounds, workspace
from assft_core.session.project import Project, list_cases
from assft_core.session.workspace import ModelRef

VIEWER_CACHE = ("cache", "viewer")
CASES_DIR = "cases"  # as `assft_core.query.scoring` names the per-case maps folder


@dataclass(frozen=True)
class ViewerModel:
    """A model the Viewer can show.

    Attributes:
        ref: tag ("f0", "round<t>") and where it loads from.
        label: its one name (`workspace.model_name`): "pre-trained model (f₀)", "model fine-tuned in
            round 1 (f₂)".
    """

    ref: ModelRef
    label: str

    @property
    def tag(self) -> str:
        """The model's tag ("f0", "round<t>")."""
        return self.ref.tag


@dataclass(frozen=True)
class ModelMaps:
    """One model's maps of one case on the preprocessed grid.

    Attributes:
        argmax: (X, Y, Z) uint8 predicted classes.
        entropy: (X, Y, Z) float32 normalised voxel entropy H in [0, 1], or None.
        affine: (4, 4) voxel -> world (RAS, mm) of the grid.
        source: where they come from, in words ("its scoring pass", "computed for the viewer").
    """

    argmax: np.ndarray
    entropy: np.ndarray | None
    affine: np.ndarray
    source: str


def viewer_models(project: Project) -> list[ViewerModel]:
    """f_0, then the model fine-tuned in each round that has one, in round order."""
    models = [ViewerModel(workspace.base_model(project), workspace.model_name(0))]
    for info in rounds.list_rounds(project):
        if info.checkpoint:
            models.append(ViewerModel(ModelRef(f"{workspace.ROUND_TAG}{info.idx + 1}", project.resolve(info.checkpoint)),
                                      workspace.model_name(info.idx + 1)))
    return models


def scoring_model(project: Project, round_idx: int) -> ModelRef:
    """The model whose maps round `round_idx`'s score table holds (f_t of that round)."""
    return workspace.model_for_round(project, round_idx)


def _folder(ref: ModelRef) -> str:
    return f"{ref.tag}-{workspace.model_key(ref)[:16]}"


def _read(path: Path, source: str) -> ModelMaps | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        if "argmax" not in data:
            return None
        entropy = data["entropy"].astype(np.float32) if "entropy" in data else None
        return ModelMaps(data["argmax"].astype(np.uint8), entropy, np.asarray(data["affine"]), source)


def cache_file(project: Project, ref: ModelRef, case_id: str) -> Path:
    """Where the viewer keeps a model's maps of a case it computed."""
    return project.artifact_path(*VIEWER_CACHE, _folder(ref), f"{case_id}.npz")


def model_maps(project: Project, ref: ModelRef, case_id: str, *, device: str = "auto") -> ModelMaps:
    """A model's argmax and entropy of a case on the preprocessed grid: stored, cached or computed now.

    Raises:
        StateError: when the case is unknown, or the model has no head for the target classes.
        ModelError / DataError: from loading the model or the case.
    """
    folder = _folder(ref)
    stored = _read(project.artifact_path(workspace.SCORES_DIR, folder, CASES_DIR, f"{case_id}.npz"),
                   f"stored by the scoring pass of the {workspace.tag_name(ref.tag)}")
    if stored is not None:
        return stored
    cached = _read(cache_file(project, ref, case_id),
                   f"computed for the viewer with the {workspace.tag_name(ref.tag)} (cached)")
    if cached is not None:
        return cached
    maps = _compute(project, ref, case_id, device)
    from assft_core.query.table import atomic_savez

    entropy = {} if maps.entropy is None else {"entropy": maps.entropy.astype(np.float16)}
    atomic_savez(cache_file(project, ref, case_id), argmax=maps.argmax, affine=maps.affine, **entropy)
    return maps


def _compute(project: Project, ref: ModelRef, case_id: str, device: str) -> ModelMaps:
    """One sliding-window pass of `ref` over the case, preprocessed as the scoring job does."""
    import torch

    from assft_core.data.case_cache import load_case
    from assft_core.models.inference import predict_probs
    from assft_core.models.loaded import load_model
    from assft_core.query.metrics import voxel_entropy

    info = next((c for c in list_cases(project, usable_only=False) if c.case_id == case_id), None)
    if info is None:
        raise StateError(f"no case {case_id!r} in {project.folder}; pick one of the project's cases.")
    model = load_model(ref.path, device=device)
    if not model.has_head:
        raise StateError(f"the {workspace.tag_name(ref.tag)} has no head for the target classes: it gives no "
                         "prediction to show.")
    case = load_case(workspace.case_record(info), workspace.preprocess_settings(project),
                           cache_dir=workspace.preprocess_cache(project))
    image = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))
    probs = predict_probs(model.network, image, workspace.inference_settings(project, model.card, device))
    argmax = probs.argmax(dim=0).to(torch.uint8).numpy()
    entropy = voxel_entropy(probs).numpy().astype(np.float32)
    return ModelMaps(argmax, entropy, np.asarray(case.affine, dtype=np.float64),
                     f"computed now with the {workspace.tag_name(ref.tag)}")
