"""What the explanation pages show, read from a project's store and score tables (no Streamlit).

- `latest_scores`: the newest round that stored a ScoreTable, with that table.
- `case_table`: one row per scored pool / test case: site, split, status in the current round
  (labelled, proposed, pool, test), the stored scores, DIV to the nearest labelled case, and the
  pick's rank and score when the case is a live pick (the embedding's colours and hover).
- `coverage_rows`: the row indices the DKD coverage figures need (pool, labelled before the picks,
  picks in rank order).
- `load_case_view`: one case on the preprocessed grid the scores were computed on: image,
  label, prediction (stored argmax), entropy map and ASD ROI (the viewer's overlays).

Everything is on the grid of the scoring pass (ASSFT, METHOD.md §0): the image comes from the
same preprocessing and cache as the scoring job, labels are resampled onto it nearest-neighbour,
and the stored maps are used as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from assft_core.data.grid import resample_label_to_grid
from assft_core.data.io import load_label
from assft_core.data.records import Split
from assft_core.errors import StateError
from assft_core.query.metrics import cosine_distance_to_set, dilate_ball, grown_bounding_box
from assft_core.query.table import ScoreTable
from assft_core.session import labels, rounds, store, workspace
from assft_core.session.project import CaseInfo, Project, list_cases
from assft_core.session.rounds import QueryStatus, RoundInfo
from assft_core.viz.slices import Axis, n_slices, to_ras

EMBEDDING_CACHE = ("cache", "embedding")
LIVE_PICK = (QueryStatus.PROPOSED, QueryStatus.APPROVED)
# Stored score columns shown with every case, in display order.
SCORE_COLUMNS = ("kg", "asd", "div", "confidence", "mean_entropy", "fg_fraction")
# The RAS array axis each plane indexes (the convention of `assft_core.viz.slices`).
RAS_AXIS = {Axis.SAGITTAL: 0, Axis.CORONAL: 1, Axis.AXIAL: 2}
CASE_COLUMNS = ["case_id", "site", "split", "status", *SCORE_COLUMNS, "nearest_labelled", "pick_rank", "pick_score"]


@dataclass(frozen=True)
class ScoredRound:
    """The newest stored scores of a project.

    Attributes:
        info: the round that stored them (its scoring model is f_t of that round).
        table: its ScoreTable (KG and z from f_0, ASD, maps and the rest from f_t; METHOD.md §1–§2).
        table_dir: the folder the table was read from (a cache key for the pages).
    """

    info: RoundInfo
    table: ScoreTable
    table_dir: Path


def latest_scores(project: Project) -> ScoredRound | None:
    """The newest round with a stored score table, or None before the first scoring pass.

    Raises:
        StateError: when the stored table cannot be read (says to score again).
    """
    scored = [r for r in rounds.list_rounds(project) if r.score_table]
    if not scored:
        return None
    info = scored[-1]
    folder = project.resolve(info.score_table or "")
    return ScoredRound(info, ScoreTable.load(folder), folder)


def embedding_cache_dir(project: Project) -> Path:
    """Where the 2D maps of the embeddings are cached (`embed_2d(..., cache_dir=...)`)."""
    return project.artifact_path(*EMBEDDING_CACHE)


def live_picks(project: Project, round_idx: int) -> list[str]:
    """Case ids of a round's picks still standing (proposed or approved), in rank order."""
    return [q.case_id for q in rounds.list_queries(project, round_idx) if q.status in LIVE_PICK]


def case_table(project: Project, scored: ScoredRound) -> pd.DataFrame:
    """One row per scored pool or test case of the project, in score-table order.

    Status (the embedding's legend): `labelled` = pool case with a stored label; `proposed` = a
    live pick (proposed or approved) of the current round; `test` = held-out test case (scored
    for display only, METHOD.md §0); `pool` = any other usable pool case. KG is normalised by the
    medians over the pool cases of the table only (METHOD.md §1). `div` is DIV to the nearest
    labelled case, `1 − cos(z, z_l)` (NaN while nothing is labelled or without embeddings).

    Args:
        project: the open project.
        scored: `latest_scores(project)`.

    Returns:
        Columns `CASE_COLUMNS`; `pick_rank` / `pick_score` are NaN for cases not picked,
        `nearest_labelled` is "" when there is none.
    """
    table = scored.table
    cases = {c.case_id: c for c in list_cases(project) if c.split in (Split.POOL, Split.TEST)}
    ids = [cid for cid in table.case_ids if cid in cases]
    rows = table.indices(ids)
    pool_ids = [cid for cid in ids if cases[cid].split is Split.POOL]
    labelled = set(labels.current_labels(project)) & set(pool_ids)
    current = rounds.current_round(project).idx
    picks = {q.case_id: q for q in rounds.list_queries(project, current) if q.status in LIVE_PICK}

    def status(cid: str) -> str:
        if cases[cid].split is Split.TEST:
            return "test"
        if cid in labelled:
            return "labelled"
        return "proposed" if cid in picks else "pool"

    frame = pd.DataFrame(
        {
            "case_id": ids,
            "site": [cases[cid].site for cid in ids],
            "split": [cases[cid].split.value for cid in ids],
            "status": [status(cid) for cid in ids],
            "kg": table.knowledge_gap(pool_ids)[rows] if pool_ids else np.full(len(ids), np.nan),
        }
    )
    for name in ("asd", "confidence", "mean_entropy", "fg_fraction"):
        frame[name] = table.column(name)[rows]
    frame["div"], frame["nearest_labelled"] = _distance_to_labelled(table, ids, sorted(labelled))
    frame["pick_rank"] = [float(picks[c].rank) if c in picks else math.nan for c in ids]
    frame["pick_score"] = [_number(picks[c].explanation.get("score")) if c in picks else math.nan for c in ids]
    return frame[CASE_COLUMNS]


def _distance_to_labelled(table: ScoreTable, ids: list[str], labelled: list[str]) -> tuple[np.ndarray, list[str]]:
    """(DIV to the nearest labelled case, its id) per case of `ids` (NaN / "" when undefined)."""
    z = table.embeddings
    if z is None or not labelled or not ids:
        return np.full(len(ids), np.nan), [""] * len(ids)
    distance, nearest = cosine_distance_to_set(z[table.indices(ids)], z[table.indices(labelled)])
    return distance, [labelled[int(i)] for i in nearest]


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


@dataclass(frozen=True)
class CoverageRows:
    """Row indices of a `case_table` frame for the DKD coverage figures (METHOD.md §1).

    Attributes:
        pool: every pool case (the coverage is measured over these).
        labelled_before: pool cases labelled before this round's picks.
        picks: the scored round's live picks, in rank order (the greedy order of the query).
    """

    pool: np.ndarray
    labelled_before: np.ndarray
    picks: np.ndarray


def coverage_rows(frame: pd.DataFrame, pick_ids: list[str]) -> CoverageRows:
    """Rows of `frame` (a `case_table`) for `coverage_curve`: pool, labelled before the picks, picks.

    Args:
        frame: `case_table` output.
        pick_ids: the picks in rank order (`live_picks`); ids absent from `frame` are skipped.

    Returns:
        The rows. A pick that has been labelled since (later in the round) still counts as a pick,
        never as labelled before, so the curve shows what the picks added.
    """
    index = {cid: i for i, cid in enumerate(frame["case_id"])}
    picks = [index[c] for c in pick_ids if c in index]
    pool = np.flatnonzero((frame["split"] == Split.POOL.value).to_numpy())
    labelled = np.flatnonzero((frame["status"] == "labelled").to_numpy())
    before = np.array([i for i in labelled if i not in set(picks)], dtype=np.int64)
    return CoverageRows(pool, before, np.asarray(picks, dtype=np.int64))


@dataclass
class CaseView:
    """One case on the scoring grid, with every overlay the viewer can draw.

    Attributes:
        case_id: the case.
        image: (C, X, Y, Z) float32 preprocessed intensities (RAS, target spacing).
        affine: (4, 4) voxel → world (RAS, mm) of that grid.
        label: (X, Y, Z) uint8 label resampled nearest-neighbour onto the grid, or None.
        label_note: where the label comes from, in words ("" without one).
        prediction: (X, Y, Z) uint8 stored argmax of the scoring model, or None.
        entropy: (X, Y, Z) float32 normalised voxel entropy H in [0, 1] (METHOD.md §2), or None.
        roi: (X, Y, Z) bool ASD ROI: the predicted foreground dilated by a ball of radius r, or None.
        notes: why an overlay is missing, in words.
    """

    case_id: str
    image: np.ndarray
    affine: np.ndarray
    label: np.ndarray | None = None
    label_note: str = ""
    prediction: np.ndarray | None = None
    entropy: np.ndarray | None = None
    roi: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def load_case_view(project: Project, scored: ScoredRound, case_id: str) -> CaseView:
    """Load one case on the grid of the scoring pass with its label, prediction, entropy and ROI.

    The image is preprocessed exactly as the scoring job does (f_0's preprocessing, the project's
    preprocessing cache), so the stored per-case maps (uint8 argmax, float16 entropy; METHOD.md §0)
    line up voxel for voxel. The label is the case's current stored version; in demo (oracle) mode
    a case without one shows the dataset's reference label, and a test case always shows its
    reference (evaluation only); either is said in `label_note`. The ROI is recomputed from the
    argmax as `dilate(argmax > 0, r)` with a ball of radius `r = cfg.query.roi_dilation_voxels`,
    which equals the union of the per-class ROIs Ω_k (dilation distributes over a union; METHOD.md
    §2); a case whose ROI was the top-q fallback has no ROI here (the probabilities are not stored).

    Args:
        project: the open project.
        scored: `latest_scores(project)`.
        case_id: a pool or test case of the project.

    Returns:
        The case view.

    Raises:
        StateError: when the case is unknown, or its stored maps are on another grid than its
            preprocessed image (the scores are stale: score again).
        DataError: when the image or label file cannot be read.
    """
    info = _case_info(project, case_id)
    from assft_core.data.case_cache import load_case

    pre = load_case(
        workspace.case_record(info), workspace.preprocess_settings(project), cache_dir=workspace.preprocess_cache(project)
    )
    grid = tuple(int(s) for s in pre.image.shape[1:])
    view = CaseView(case_id=case_id, image=pre.image, affine=pre.affine)
    _attach_label(project, info, view, grid)
    _attach_maps(project, scored, view, grid)
    return view


def _case_info(project: Project, case_id: str) -> CaseInfo:
    for case in list_cases(project, usable_only=False):
        if case.case_id == case_id:
            return case
    raise StateError(f"no case {case_id!r} in {project.folder}; pick one of the project's cases.")


def _reference_label(project: Project, case_id: str) -> Path | None:
    """The dataset's reference label file of a case (hidden from `list_cases` for pool cases)."""
    with store.reading(project.db) as conn:
        row = conn.execute("SELECT reference_label FROM cases WHERE case_id = ?", (case_id,)).fetchone()
    return Path(row["reference_label"]) if row is not None and row["reference_label"] else None


def _attach_label(project: Project, info: CaseInfo, view: CaseView, grid: tuple[int, ...]) -> None:
    version = labels.current_labels(project).get(info.case_id)
    if version is not None:
        path, note = version.file, f"{version.source} label v{version.version}"
    elif info.split is Split.TEST and info.reference_label is not None:
        path, note = info.reference_label, "test reference label (evaluation only, never trained on)"
    elif project.oracle and (reference := _reference_label(project, info.case_id)) is not None:
        path, note = reference, "reference label shown in demo (oracle) mode; not labelled, not trained on"
    else:
        view.notes.append("no label: the case is not labelled yet")
        return
    label = load_label(path)
    view.label = resample_label_to_grid(label.array[0].astype(np.uint8), label.affine, grid, view.affine)
    view.label_note = note


def _attach_maps(project: Project, scored: ScoredRound, view: CaseView, grid: tuple[int, ...]) -> None:
    table = scored.table
    if view.case_id not in table:
        view.notes.append(f"not scored in round {scored.info.idx}: no prediction or entropy")
        return
    try:
        maps = table.case_arrays(view.case_id)
    except StateError as exc:  # scored, but its maps file is gone: show the image and label anyway
        view.notes.append(str(exc))
        return
    if maps.argmax is None:
        view.notes.append("the scoring model has no head for the target classes: no prediction, entropy or ROI")
        return
    if tuple(maps.argmax.shape) != grid or not np.allclose(maps.affine, view.affine, atol=1e-3):
        raise StateError(
            f"the stored maps of {view.case_id!r} (shape {tuple(maps.argmax.shape)}) are not on its preprocessed "
            f"grid (shape {grid}): the preprocessing changed since round {scored.info.idx} was scored; score again."
        )
    view.prediction = maps.argmax
    view.entropy = None if maps.entropy is None else maps.entropy.astype(np.float32)
    row = table.rows[int(table.indices([view.case_id])[0])]
    if row.used_fallback:
        view.notes.append("nothing predicted as foreground: the ASD ROI was the top-1% fallback (not stored, not drawn)")
        return
    view.roi = roi_from_argmax(maps.argmax, project.config.query.roi_dilation_voxels)


def roi_from_argmax(argmax: np.ndarray, radius: int) -> np.ndarray:
    """The union of the ASD class ROIs, `∪_k dilate(argmax == k, r)` = `dilate(argmax > 0, r)`.

    Dilation is by the query engine's ball (`dilate_ball`, METHOD.md §2), run only inside the
    foreground's bounding box grown by r (`grown_bounding_box`, as the scoring pass does).

    Args:
        argmax: (X, Y, Z) predicted class indices.
        radius: r in voxels.

    Returns:
        (X, Y, Z) bool ROI (all False when nothing is predicted as foreground).
    """
    fg = torch.from_numpy(np.asarray(argmax) > 0)
    roi = np.zeros(tuple(fg.shape), dtype=bool)
    box = grown_bounding_box(fg, radius)
    if box is not None:
        roi[box] = dilate_ball(fg[box][None], radius)[0].numpy()
    return roi


def focus_slice(view: CaseView, axis: Axis | str) -> int:
    """A slice index along `axis` (RAS order, as `slice_figure` takes it) through the case's structures.

    The median position of the predicted (else labelled) foreground, else the middle of the
    volume; the viewer opens there so the first picture shows anatomy, not air.

    Args:
        view: the case.
        axis: "axial", "coronal" or "sagittal".

    Returns:
        The index in [0, n − 1], n = `n_slices` along that axis.
    """
    ras_axis = RAS_AXIS[Axis(axis)]
    for mask in (view.prediction, view.label):
        if mask is not None and (mask > 0).any():
            ras, _ = to_ras(np.asarray(mask) > 0, view.affine)
            return int(np.median(np.argwhere(ras)[:, ras_axis]))
    return n_slices(tuple(view.image.shape[1:]), axis, view.affine) // 2


def with_model_maps(view: CaseView, argmax: np.ndarray, entropy: np.ndarray | None, affine: np.ndarray,
                    radius: int, source: str) -> CaseView:
    """The case view with another model's prediction, entropy and ROI (the Viewer's model selector).

    Args:
        view: the case on the scoring grid (`load_case_view`).
        argmax: (X, Y, Z) uint8 that model's predicted classes on the same grid.
        entropy: (X, Y, Z) its normalised entropy H, or None.
        affine: (4, 4) the grid of `argmax` (checked against the view's).
        radius: the ASD ROI dilation radius r in voxels.
        source: where the maps come from, in words (kept in the notes).

    Raises:
        StateError: when the maps are on another grid than the view (stale: preprocessing changed).
    """
    grid = tuple(int(s) for s in view.image.shape[1:])
    if tuple(argmax.shape) != grid or not np.allclose(affine, view.affine, atol=1e-3):
        raise StateError(
            f"the model's maps of {view.case_id!r} (shape {tuple(argmax.shape)}) are not on its preprocessed grid "
            f"(shape {grid}); delete the project's artifacts/cache/viewer folder and open the case again."
        )
    notes = [n for n in view.notes if "no prediction" not in n and "no head" not in n and "fallback" not in n]
    return CaseView(case_id=view.case_id, image=view.image, affine=view.affine, label=view.label,
                    label_note=view.label_note, prediction=argmax, entropy=entropy,
                    roi=roi_from_argmax(argmax, radius), notes=[*notes, f"prediction {source}"])
