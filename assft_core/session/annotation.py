"""The annotation round trip: picks out to an annotation tool, corrected labels back, effort measured.

In a lab the expert labels in 3D Slicer, ITK-SNAP or MONAI Label, starting from a model's
prediction. `export_picks` writes, for each approved pick of the current round, the original image
(a byte-identical copy), the current model's prediction on the image's own grid as a
pre-annotation, an ITK-SNAP label description file and a 3D Slicer colour table from the project's
classes, and a manifest naming the label file each case is expected back as. The pre-annotation is
also kept in the project (`artifacts/preannotations/<case>/<sha256>.nii.gz`, table
`preannotations`), so `import_labels` measures the expert's effort against exactly what was handed
out, wherever the export folder went.

`import_labels` matches files to picks by the manifest's names, validates each like `assft label`
(`labels.label_case`), stores each as a new label version, and records per case how much the expert
changed (`AnnotationEffort`, table `annotation_effort`, written in the label's own transaction).
A file that fails stores nothing; the others go in.

Layout of an export folder:

    manifest.json          round, model, classes, and per case: site, why picked, files
    manifest.csv           the same per case, one row each (for a spreadsheet)
    labels.txt             ITK-SNAP label description file
    assft.ctbl             3D Slicer colour table
    images/                the original image files, byte-identical (`<case>_0000.nii.gz`, ...)
    preannotations/        `<case>.nii.gz`: uint8 class indices, the image's affine, no scaling
    labels/                empty: save the corrected labels here as `<case>.nii.gz`
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from assft_core.errors import DataError, StateError
from assft_core.fsutil import atomic_write, building_folder
from assft_core.session import labels, rounds, store
from assft_core.session.paths import nifti_suffix, sha256_file
from assft_core.session.project import Project, list_cases
from assft_core.session.rounds import QueryStatus

MANIFEST = "manifest.json"
MANIFEST_CSV = "manifest.csv"
ITKSNAP_LABELS = "labels.txt"
SLICER_CTBL = "assft.ctbl"
IMAGES_DIR = "images"
PREANNOTATIONS_DIR = "preannotations"
LABELS_DIR = "labels"
LABEL_SUFFIX = ".nii.gz"

# A distinct colour per class (background transparent); cycles beyond its length.
_PALETTE = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
            (255, 128, 0), (128, 0, 255), (0, 128, 128), (128, 128, 0), (255, 128, 128), (128, 255, 128)]

Predictor = Callable[[Project, Sequence[Path]], tuple[np.ndarray, str]]


@dataclass(frozen=True)
class AnnotationEffort:
    """How much an expert changed a pre-annotation to make the final label (one case).

    Attributes:
        case_id: the case.
        label_version: the stored label version the numbers describe.
        round: the round current when the label was stored.
        changed_voxels: voxels whose class differs between pre-annotation and final label.
        changed_slices: slices along the third array axis (k; axial for a usual scan) holding
            at least one changed voxel.
        total_slices: the number of such slices in the image.
        dice: Dice of pre-annotation vs final label, mean over the foreground classes present
            in either (1.0 when both are empty: nothing to change).
    """

    case_id: str
    label_version: int
    round: int
    changed_voxels: int
    changed_slices: int
    total_slices: int
    dice: float


@dataclass(frozen=True)
class ExportedCase:
    """One pick in an export folder (a manifest row)."""

    case_id: str
    site: str
    rank: int
    strategy: str
    why_picked: str
    images: list[str]
    series_uid: str | None
    preannotation: str
    preannotation_sha256: str
    expected_label: str


@dataclass
class ImportReport:
    """What `import_labels` did with each file of the folder.

    Attributes:
        stored: per stored file, its case's effort (label version included).
        refused: file name -> why nothing was stored for it (with the fix).
        missing: picks of the manifest for which no file was found.
    """

    stored: list[AnnotationEffort] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def label_file_name(case_id: str) -> str:
    """The name a case's returned label must have: `<case>.nii.gz` (`<case>.nii` is accepted too)."""
    return case_id + LABEL_SUFFIX


def effort(preannotation: np.ndarray, final: np.ndarray) -> tuple[int, int, float]:
    """Changed voxels, changed slices and Dice between two label maps on the same grid.

    Args:
        preannotation: (X, Y, Z) integer class indices (what the expert was given).
        final: (X, Y, Z) integer class indices (what the expert returned).

    Returns:
        (changed voxels, slices along axis 2 with a change, mean foreground Dice over the classes
        present in either map; 1.0 when neither has foreground).

    Raises:
        DataError: when the shapes differ.

    Example:
        >>> a = np.zeros((2, 2, 3), np.uint8); b = a.copy(); b[0, 0, 1] = 1
        >>> effort(a, b)
        (1, 1, 0.0)
    """
    pre, fin = np.asarray(preannotation), np.asarray(final)
    if pre.shape != fin.shape:
        raise DataError(f"effort: pre-annotation shape {pre.shape} differs from the label's {fin.shape}.")
    diff = pre != fin
    changed_slices = int(np.count_nonzero(diff.reshape(-1, diff.shape[-1]).any(axis=0))) if diff.ndim == 3 else 0
    classes = sorted((set(np.unique(pre).tolist()) | set(np.unique(fin).tolist())) - {0})
    if not classes:
        dice = 1.0
    else:
        scores = []
        for c in classes:
            a, b = pre == c, fin == c
            scores.append(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))
        dice = float(np.mean(scores))
    return int(np.count_nonzero(diff)), changed_slices, dice


def itksnap_label_description(classes: dict[int, str]) -> str:
    """An ITK-SNAP label description file (Segmentation > Import Label Descriptions) for `classes`."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# File format: ",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Written by ASSFT Studio from the project's classes.",
        "################################################",
    ]
    for idx in sorted(classes):
        name = classes[idx].replace('"', "'")
        if idx == 0:
            lines.append(f'{0:5d} {0:5d} {0:4d} {0:4d} {0:8.2f} {0:2d} {0:2d}    "Clear Label"')
            continue
        r, g, b = _PALETTE[(idx - 1) % len(_PALETTE)]
        lines.append(f'{idx:5d} {r:5d} {g:4d} {b:4d} {1:8.2f} {1:2d} {1:2d}    "{name}"')
    return "\n".join(lines) + "\n"


def slicer_color_table(classes: dict[int, str]) -> str:
    """A 3D Slicer colour table (`.ctbl`: `index name R G B A` per line) for `classes`."""
    lines = ["# Color table file written by ASSFT Studio from the project's classes",
             f"# {len(classes)} values"]
    for idx in sorted(classes):
        name = "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in classes[idx]) or f"class_{idx}"
        r, g, b = (0, 0, 0) if idx == 0 else _PALETTE[(idx - 1) % len(_PALETTE)]
        lines.append(f"{idx} {name} {r} {g} {b} {0 if idx == 0 else 255}")
    return "\n".join(lines) + "\n"


def model_predictor(device: str = "auto") -> Predictor:
    """The default pre-annotator: the current round's model f_t on the scan's own grid.

    Returns:
        A function `(project, image_paths) -> ((X, Y, Z) uint8 class indices, model tag)`; the
        model is loaded once, on the first call.
    """
    loaded: dict[str, Any] = {}

    def predict(project: Project, image_paths: Sequence[Path]) -> tuple[np.ndarray, str]:
        from assft_core.data.preprocess import preprocess_image
        from assft_core.models.loaded import load_model
        from assft_core.session import workspace
        from assft_core.train.evaluate import predict_native

        if "model" not in loaded:
            ref = workspace.model_for_round(project, rounds.current_round(project).idx)
            loaded["model"] = load_model(ref.path, device=device)
            loaded["tag"] = ref.tag
            loaded["pre"] = workspace.preprocess_settings(project)
            loaded["infer"] = workspace.inference_settings(project, loaded["model"].card, device)
        model = loaded["model"]
        case = preprocess_image(list(image_paths), loaded["pre"])
        pred = predict_native(model.network, case, loaded["infer"], num_classes=model.card.out_channels)
        return pred, loaded["tag"]

    return predict


def export_picks(project: Project, out: str | os.PathLike[str], *, predictor: Predictor | None = None,
                 device: str = "auto") -> list[ExportedCase]:
    """Write the current round's approved picks, with pre-annotations, into a new folder `out`.

    Built in a temporary sibling folder, then renamed into place; the pre-annotations are also
    stored in the project (they are what `import_labels` measures the effort against).

    Args:
        project: the open project.
        out: the folder to create (absent or empty; never overwritten).
        predictor: `(project, image_paths) -> ((X, Y, Z) class indices, model tag)`; default the
            current model f_t (`model_predictor`).
        device: device of the default predictor ("auto", "cpu", "cuda[:i]").

    Returns:
        One `ExportedCase` per approved pick, by rank.

    Raises:
        DataError: when `out` exists and is not an empty folder, or an image is unreadable.
        StateError: when the round has no approved pick.
        ModelError: when the current model cannot be loaded.
    """
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder; choose a new folder (nothing was written).")
    info = rounds.current_round(project)
    picks = [q for q in rounds.list_queries(project) if q.status is QueryStatus.APPROVED]
    if not picks:
        raise StateError(f"round {info.idx} has no approved pick to export; approve picks first "
                         f"(`assft approve -p {project.folder} --all`).")
    cases = {c.case_id: c for c in list_cases(project, usable_only=False)}
    predictor = predictor or model_predictor(device)
    exported: list[ExportedCase] = []
    stored: list[tuple[str, Path, str, str]] = []  # case, artifact file, sha256, model tag
    with building_folder(out) as tmp:
        for sub in (IMAGES_DIR, PREANNOTATIONS_DIR, LABELS_DIR):
            (tmp / sub).mkdir()
        for q in picks:
            case = cases[q.case_id]
            image_names = []
            for i, src in enumerate(case.image_paths):
                name = f"{q.case_id}_{i:04d}{nifti_suffix(src) or ''.join(src.suffixes)}"
                shutil.copyfile(src, tmp / IMAGES_DIR / name)  # bytes as they are: never re-encoded
                image_names.append(f"{IMAGES_DIR}/{name}")
            pred, tag = predictor(project, list(case.image_paths))
            pre_file = tmp / PREANNOTATIONS_DIR / label_file_name(q.case_id)
            _write_preannotation(pred, case.image_paths[0], pre_file)
            digest = sha256_file(pre_file)
            artifact = project.artifact_path("preannotations", q.case_id, digest + LABEL_SUFFIX)
            if not artifact.exists():
                atomic_write(artifact, lambda t, src=pre_file: shutil.copyfile(src, t))
            stored.append((q.case_id, artifact, digest, tag))
            exported.append(ExportedCase(
                case_id=q.case_id, site=case.site, rank=q.rank, strategy=q.strategy,
                why_picked=why_picked(q.strategy, q.explanation), images=image_names, series_uid=case.series_uid,
                preannotation=f"{PREANNOTATIONS_DIR}/{pre_file.name}", preannotation_sha256=digest,
                expected_label=f"{LABELS_DIR}/{label_file_name(q.case_id)}",
            ))
        classes = project.classes or {0: "background", 1: "foreground"}
        (tmp / ITKSNAP_LABELS).write_text(itksnap_label_description(classes), encoding="utf-8")
        (tmp / SLICER_CTBL).write_text(slicer_color_table(classes), encoding="utf-8")
        manifest = {
            "round": info.idx,
            "project": str(project.folder),
            "model": stored[0][3],
            "created_at": time.time(),
            "classes": {str(k): v for k, v in sorted(classes.items())},
            "label_files": "save each corrected label as labels/<case>.nii.gz (uint8, the image's grid), then "
                           f"run `assft import-labels -p PROJECT {LABELS_DIR}/`",
            "cases": [asdict(e) for e in exported],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        with open(tmp / MANIFEST_CSV, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case_id", "site", "rank", "why_picked", "image", "preannotation", "expected_label"])
            for e in exported:
                writer.writerow([e.case_id, e.site, e.rank, e.why_picked, e.images[0], e.preannotation,
                                 e.expected_label])
        with store.transaction(project.db) as conn:
            for case_id, artifact, digest, tag in stored:
                conn.execute(
                    "INSERT OR REPLACE INTO preannotations (case_id, round, file, sha256, model, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (case_id, info.idx, project.relative(artifact), digest, tag, time.time()),
                )
            store.add_event(conn, "export_picks", f"round {info.idx}: {len(exported)} pick(s) exported to {out}",
                            cases=[e.case_id for e in exported], out=str(out))
    return exported


def export_picks_zip(project: Project, *, predictor: Predictor | None = None, device: str = "auto") -> bytes:
    """`export_picks` as the bytes of one zip file (the dashboard's download), same layout.

    Raises:
        as `export_picks`.
    """
    tmp_root = project.artifact_path("tmp")
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="export-", dir=tmp_root))
    try:
        folder = work / "picks"
        export_picks(project, folder, predictor=predictor, device=device)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                rel = path.relative_to(folder).as_posix()
                if path.is_dir():
                    zf.writestr(rel + "/", b"")
                else:
                    zf.write(path, rel)
        return buf.getvalue()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def why_picked(strategy: str, explanation: dict[str, Any]) -> str:
    """One line from a pick's stored explanation (strategy, score, KG and ASD ranks, δ, nearest labelled)."""
    parts = [f"strategy {strategy}"]
    for key, label in (("score", "score"), ("kg_rank", "KG rank"), ("asd_rank", "ASD rank"), ("delta", "diversity δ")):
        value = explanation.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:.3f}")
    if explanation.get("nearest_labelled_id"):
        parts.append(f"nearest labelled {explanation['nearest_labelled_id']}")
    return "; ".join(parts)


def import_labels(project: Project, folder: str | os.PathLike[str]) -> ImportReport:
    """Store every corrected label file of `folder` whose name matches an exported pick.

    Files directly in `folder` are considered (for an export folder itself, those in its
    `labels/`). Each `<case>.nii.gz` (or `.nii`) of a case with a stored pre-annotation is
    validated against the case's image like `assft label` and stored as a new version, in its
    own transaction together with its effort; a file with another name, or one that fails, is
    refused with the reason and stores nothing. Files are only read.

    Args:
        project: the open project.
        folder: the folder holding the returned label files.

    Returns:
        `ImportReport`: the effort of each stored label, the refused files with why, and the
        exported picks no file was found for.

    Raises:
        DataError: when `folder` is not a folder.
        StateError: when nothing was exported this round (`assft export-picks` first).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give the folder holding the corrected <case>.nii.gz files.")
    if (root / MANIFEST).is_file() and (root / LABELS_DIR).is_dir():
        root = root / LABELS_DIR
    pre = _preannotations(project)
    if not pre:
        raise StateError(f"{project.folder}: no picks were exported; run `assft export-picks -p {project.folder} OUT` "
                         "first, label from its pre-annotations, then import the folder.")
    expected = {label_file_name(c): c for c in pre} | {c + ".nii": c for c in pre}
    report = ImportReport()
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    found: set[str] = set()
    for path in files:
        case_id = expected.get(path.name)
        if case_id is None:
            names = ", ".join(sorted(label_file_name(c) for c in pre))
            report.refused[path.name] = (f"{path}: its name matches no exported pick; nothing was stored. Fix: name it "
                                         f"after its case, one of: {names}.")
            continue
        if case_id in found:
            report.refused[path.name] = (f"{path}: a second file for {case_id!r}; nothing was stored from it. Fix: keep "
                                         "one file per case (.nii.gz or .nii).")
            continue
        found.add(case_id)
        try:
            report.stored.append(_import_one(project, case_id, path, pre[case_id]))
        except (DataError, StateError) as exc:
            report.refused[path.name] = str(exc)
    current = rounds.current_round(project).idx
    report.missing = sorted(c for c, row in pre.items() if row["round"] == current and c not in found)
    return report


def import_label_uploads(project: Project, files: Sequence[tuple[str, bytes]]) -> ImportReport:
    """`import_labels` for uploaded files (dashboard): each written under its sanitised name to a
    temporary folder inside the project, imported, then the temporary folder is removed.

    Args:
        files: (file name, bytes) per upload.

    Raises:
        StateError: as `import_labels`.
    """
    from assft_core.session.paths import sanitize_filename

    tmp_root = project.artifact_path("tmp")
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix="uploads-", dir=tmp_root))
    refused: dict[str, str] = {}
    originals: dict[str, str] = {}  # sanitised name -> the user's file name
    try:
        for name, data in files:
            try:
                safe = sanitize_filename(name)
            except DataError as exc:
                refused[name] = str(exc)
                continue
            if (tmp_dir / safe).exists():
                refused[name] = f"{name}: a second upload named {safe}; nothing was stored from it. Fix: one file per case."
                continue
            (tmp_dir / safe).write_bytes(data)
            originals[safe] = name
        report = import_labels(project, tmp_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    report.refused = {originals.get(safe, safe): labels.user_words(why, tmp_dir / safe, originals.get(safe, safe))
                      for safe, why in report.refused.items()}
    report.refused.update(refused)
    return report


@dataclass(frozen=True)
class PickFiles:
    """The files an expert needs to label one approved pick.

    Attributes:
        case_id: the case.
        site: its site.
        images: the original image file(s), never modified.
        preannotation: the stored pre-annotation (the model's prediction on the image's grid,
            made by `export_picks`), or None before the picks were prepared.
        model: the model that made it ("" without one).
    """

    case_id: str
    site: str
    images: tuple[Path, ...]
    preannotation: Path | None
    model: str


def pick_files(project: Project) -> list[PickFiles]:
    """The image and stored pre-annotation of each approved pick of the current round, by rank."""
    cases = {c.case_id: c for c in list_cases(project, usable_only=False)}
    pre = _preannotations(project)
    current = rounds.current_round(project).idx
    out = []
    for q in rounds.list_queries(project):
        if q.status is not QueryStatus.APPROVED or q.case_id not in cases:
            continue
        row = pre.get(q.case_id)
        file = project.resolve(row["file"]) if row is not None and row["round"] == current else None
        out.append(PickFiles(q.case_id, cases[q.case_id].site, cases[q.case_id].image_paths,
                             file if file is not None and file.is_file() else None, row["model"] if file else ""))
    return out


def _import_one(project: Project, case_id: str, path: Path, pre_row: sqlite3.Row) -> AnnotationEffort:
    from assft_core.data.io import load_label

    pre_file = project.resolve(pre_row["file"])
    if not pre_file.is_file():
        raise StateError(f"{case_id}: its stored pre-annotation {pre_file} is missing; export the picks again "
                         f"(`assft export-picks -p {project.folder} OUT`).")
    pre = load_label(pre_file).array[0]
    result: dict[str, AnnotationEffort] = {}

    def record(conn: sqlite3.Connection, version: labels.LabelVersion) -> None:
        final = load_label(version.file).array[0]
        voxels, slices, dice = effort(pre, final)
        current = int(conn.execute("SELECT MAX(idx) FROM rounds").fetchone()[0])
        result["effort"] = AnnotationEffort(case_id, version.version, current, voxels, slices, int(final.shape[-1]), dice)
        conn.execute(
            "INSERT OR REPLACE INTO annotation_effort (case_id, label_version, round, preannotation_sha256, "
            "changed_voxels, changed_slices, total_slices, dice, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (case_id, version.version, current, pre_row["sha256"], voxels, slices, int(final.shape[-1]), dice,
             time.time()),
        )

    labels.label_case(project, case_id, path, on_stored=record)
    return result["effort"]


def record_oracle_effort(
    project: Project, versions: Sequence[labels.LabelVersion], *, predictor: Predictor | None = None,
    device: str = "auto",
) -> list[AnnotationEffort]:
    """The effort an expert would have spent on oracle-labelled picks (demo and benchmark mode).

    Each case's pre-annotation is what `export_picks` would hand out (the current model's
    prediction on the image's own grid); the final label is the oracle's reference label. The
    numbers go into the same table as an expert's (`round_efforts`, `assft status`), so strategies
    can be compared by annotation effort as well as by the count of scans (issue #19).

    Args:
        project: an oracle project.
        versions: the label versions `labels.label_with_oracle` just stored.
        predictor: as in `export_picks` (default the current model f_t).
        device: device of the default predictor.

    Returns:
        One `AnnotationEffort` per version, in order.

    Raises:
        DataError: a prediction and its label disagree in shape (a grid mismatch).
    """
    from assft_core.data.io import load_label

    if not versions:
        return []
    predictor = predictor or model_predictor(device)
    cases = {c.case_id: c for c in list_cases(project, usable_only=False)}
    rows: list[tuple[AnnotationEffort, str]] = []
    for v in versions:
        pred, _tag = predictor(project, list(cases[v.case_id].image_paths))
        final = load_label(v.file).array[0]
        voxels, slices, dice = effort(pred, final)
        digest = hashlib.sha256(np.ascontiguousarray(pred, dtype=np.uint8).tobytes()).hexdigest()  # kept in memory only
        rows.append((AnnotationEffort(v.case_id, v.version, v.round, voxels, slices, int(final.shape[-1]), dice), digest))
    with store.transaction(project.db) as conn:
        for e, digest in rows:
            conn.execute(
                "INSERT OR REPLACE INTO annotation_effort (case_id, label_version, round, preannotation_sha256, "
                "changed_voxels, changed_slices, total_slices, dice, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (e.case_id, e.label_version, e.round, digest, e.changed_voxels, e.changed_slices, e.total_slices,
                 e.dice, time.time()),
            )
    return [e for e, _ in rows]


def _preannotations(project: Project) -> dict[str, sqlite3.Row]:
    """Case id -> its latest stored pre-annotation row."""
    with store.reading(project.db) as conn:
        rows = conn.execute("SELECT * FROM preannotations ORDER BY round, created_at").fetchall()
    return {r["case_id"]: r for r in rows}


def case_efforts(project: Project, round_idx: int | None = None) -> list[AnnotationEffort]:
    """The recorded effort of each case's latest measured label version (optionally one round's)."""
    with store.reading(project.db) as conn:
        rows = conn.execute(
            "SELECT * FROM annotation_effort e WHERE label_version = (SELECT MAX(label_version) FROM "
            "annotation_effort f WHERE f.case_id = e.case_id AND f.round = e.round) AND (? IS NULL OR round = ?) "
            "ORDER BY round, case_id",
            (round_idx, round_idx),
        ).fetchall()
    return [AnnotationEffort(r["case_id"], r["label_version"], r["round"], r["changed_voxels"], r["changed_slices"],
                             r["total_slices"], r["dice"]) for r in rows]


@dataclass(frozen=True)
class RoundEffort:
    """A round's annotation effort: totals over its cases' latest measured labels.

    Attributes:
        round: the round.
        cases: cases with a measured label.
        changed_voxels: total changed voxels.
        changed_slices: total changed slices.
        mean_dice: mean pre-annotation vs final Dice over those cases.
    """

    round: int
    cases: int
    changed_voxels: int
    changed_slices: int
    mean_dice: float


def round_efforts(project: Project) -> dict[int, RoundEffort]:
    """Round -> its annotation effort (rounds with at least one measured label only)."""
    by_round: dict[int, list[AnnotationEffort]] = {}
    for e in case_efforts(project):
        by_round.setdefault(e.round, []).append(e)
    return {
        r: RoundEffort(r, len(es), sum(e.changed_voxels for e in es), sum(e.changed_slices for e in es),
                       float(np.mean([e.dice for e in es])))
        for r, es in sorted(by_round.items())
    }


def format_effort(e: AnnotationEffort) -> str:
    """One line per case: `p1 v2: 5 voxel(s), 2/8 slice(s) changed, Dice 0.950 (pre-annotation vs final)`."""
    return (f"{e.case_id} v{e.label_version}: {e.changed_voxels} voxel(s), {e.changed_slices}/{e.total_slices} "
            f"slice(s) changed, Dice {e.dice:.3f} (pre-annotation vs final)")


def _write_preannotation(pred: np.ndarray, image: Path, path: Path) -> None:
    """`pred` as uint8 NIfTI on the image's grid: its affine and qform/sform codes, no scaling."""
    pred = np.asarray(pred)
    src = nib.load(str(image))
    if pred.shape != tuple(src.shape[:3]):
        raise DataError(f"pre-annotation shape {pred.shape} differs from {image}'s grid {tuple(src.shape[:3])}.")
    if pred.size and (pred.min() < 0 or pred.max() > 255):
        raise DataError(f"pre-annotation of {image} holds class indices outside 0..255.")
    affine = np.asarray(src.affine, dtype=np.float64)
    img = nib.Nifti1Image(pred.astype(np.uint8), affine)
    header = src.header
    if isinstance(header, nib.Nifti1Header):  # keep the image's codes: the tools place both files alike
        img.set_sform(affine, code=int(header["sform_code"]) or 2)
        img.set_qform(affine, code=int(header["qform_code"]) or 2)
        img.header.set_xyzt_units(*header.get_xyzt_units())
    img.header.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    atomic_write(path, lambda t: nib.save(img, str(t) + LABEL_SUFFIX) or os.replace(str(t) + LABEL_SUFFIX, t))
