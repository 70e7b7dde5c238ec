"""Labels: expert uploads validated against their image, or the oracle in demo mode; versioned.

A label file is checked with the data layer's `check_pair` (shape, affine, classes) before
anything is stored; on error nothing is written. A valid file is copied (never moved or
modified) into `artifacts/labels/<case_id>/<sha256><suffix>` and recorded as the case's next
version; a re-upload keeps every older version. Training reads labels only from this table
(`current_labels`), so in oracle mode the dataset's reference labels of pool cases stay hidden
until the oracle "labels" them, and those labels carry `source = "oracle"` everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assft_core.data.records import Problem
from assft_core.errors import DataError, StateError
from assft_core.fsutil import atomic_copy
from assft_core.session import store
from assft_core.session.paths import nifti_suffix, sanitize_filename, sha256_file
from assft_core.session.project import Project, problems_from_json, problems_to_json
from assft_core.session.rounds import settle_labelled


@dataclass(frozen=True)
class LabelVersion:
    """One stored label version.

    Attributes:
        case_id: the labelled case.
        version: 1, 2, ... (highest = current).
        file: the stored copy (absolute path inside `artifacts/labels/`).
        sha256: hex digest of the file's bytes (also its stored name).
        source: "expert" (upload) or "oracle" (dataset reference label, demo/benchmark mode).
        original_name: the uploaded or reference file's name, for the record.
        validation: warnings of the check (errors are never stored).
        round: the round current when it was stored (imported labels: the first round).
        created_at: unix time (s).
    """

    case_id: str
    version: int
    file: Path
    sha256: str
    source: str
    original_name: str
    validation: list[Problem]
    round: int | None
    created_at: float


def label_case(
    project: Project,
    case_id: str,
    file: str | os.PathLike[str],
    *,
    on_stored: Callable[[sqlite3.Connection, LabelVersion], None] | None = None,
) -> LabelVersion:
    """Validate an expert label file against the case's image and store it as a new version.

    Allowed for an approved pick of the current round, or for a case already labelled (a
    correction: the old version is kept). Uploading the same bytes again adds no version.

    Args:
        case_id: the case.
        file: the label map (NIfTI), same grid as the image; read only, never modified.
        on_stored: called with the open transaction and the stored version, before the commit
            (e.g. to record the annotation effort in the same transaction; whatever it raises
            rolls the label back too).

    Returns:
        The stored (or unchanged current) version.

    Raises:
        StateError: when the case may not be labelled now (names the next step).
        DataError: when the file is missing or fails validation (each problem with its fix);
            nothing is stored then.
    """
    src = Path(file)
    if not src.is_file():
        raise DataError(f"label file {src} does not exist.")
    case = _case(project, case_id)
    _require_labelable(project, case_id)
    from assft_core.data.integrity import check_pair

    report = check_pair(
        [Path(p) for p in json.loads(case["image_paths"])],
        src,
        project.classes or None,
        case_id=case_id,
        cfg=project.config.preprocess,
    )
    if not report.ok:
        details = "\n  ".join(str(p) for p in report.errors)
        raise DataError(f"label {src} for case {case_id!r} was not stored:\n  {details}")
    with store.transaction(project.db) as conn:
        # Checked again under the write lock: the round may have moved since.
        _require_labelable(project, case_id, conn)
        version = insert_label(conn, project, case_id, src, source="expert", validation=report.problems)
        if on_stored is not None:
            on_stored(conn, version)
        settle_labelled(conn)
    return version


def label_upload(project: Project, case_id: str, data: bytes, filename: str) -> LabelVersion:
    """`label_case` for uploaded bytes (dashboard): written under a sanitised name to a temporary
    folder inside the project, validated and stored, then the temporary copy is removed.

    Raises:
        StateError, DataError: as `label_case`.
    """
    tmp_root = project.artifact_path("tmp")
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix="upload-", dir=tmp_root))
    try:
        path = tmp_dir / sanitize_filename(filename)
        path.write_bytes(data)
        try:
            return label_case(project, case_id, path)
        except DataError as exc:
            raise DataError(user_words(str(exc), path, filename)) from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def user_words(message: str, copy: Path, name: str) -> str:
    """A message about the temporary copy of an upload, naming the user's own file instead.

    Args:
        message: the engine's message (may hold the copy's path).
        copy: where the upload was written for validation.
        name: the file name as the user uploaded it.
    """
    return message.replace(str(copy), name).replace(str(copy.parent), "the upload")


@dataclass(frozen=True)
class UploadPreview:
    """An uploaded label checked against its case's image, before anything is stored.

    Attributes:
        case_id: the case.
        file_name: the user's file name.
        errors: why it would be refused (each with its fix), naming the user's file; [] when valid.
        warnings: what would be stored with it as a warning.
        image: (X, Y, Z) float32 first image channel on the image's own grid, None when invalid.
        label: (X, Y, Z) uint8 label on the same grid, None when invalid.
        affine: (4, 4) voxel -> world (mm) of that grid, None when invalid.
    """

    case_id: str
    file_name: str
    errors: list[str]
    warnings: list[str]
    image: np.ndarray | None = None
    label: np.ndarray | None = None
    affine: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        """True when storing it would pass validation."""
        return not self.errors


def preview_upload(project: Project, case_id: str, data: bytes, filename: str) -> UploadPreview:
    """Validate an uploaded label against the case's image like `label_upload`, storing nothing,
    and load both on the image's grid for a look before it is stored.

    Raises:
        DataError: when the case is unknown.
    """
    from assft_core.data.integrity import check_pair
    from assft_core.data.io import load_image, load_label

    case = _case(project, case_id)
    images = [Path(p) for p in json.loads(case["image_paths"])]
    tmp_root = project.artifact_path("tmp")
    tmp_root.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix="preview-", dir=tmp_root))
    try:
        try:
            path = tmp_dir / sanitize_filename(filename)
        except DataError as exc:
            return UploadPreview(case_id, filename, [str(exc)], [])
        path.write_bytes(data)
        report = check_pair(images, path, project.classes or None, case_id=case_id, cfg=project.config.preprocess)
        errors = [user_words(str(p), path, filename) for p in report.errors]
        warnings = [user_words(str(p), path, filename) for p in report.warnings]
        if errors:
            return UploadPreview(case_id, filename, errors, warnings)
        limit = project.config.preprocess.max_voxels
        image = load_image(images, max_voxels=limit)
        label = load_label(path, max_voxels=limit)
        return UploadPreview(case_id, filename, [], warnings, image.array[0].astype(np.float32),
                             label.array[0].astype(np.uint8), np.asarray(image.affine))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def label_with_oracle(project: Project, case_ids: Iterable[str] | None = None) -> list[LabelVersion]:
    """Label cases with the dataset's reference labels (demo/benchmark mode), in one transaction.

    Args:
        case_ids: approved picks of the current round to label; default every approved pick
            without a label.

    Raises:
        StateError: when the project is not in oracle mode, or a case is not an approved pick.
        DataError: when a case has no reference label.
    """
    if not project.oracle:
        raise StateError(
            f"{project.folder} is not an oracle (demo/benchmark) project; upload expert labels with "
            "`assft label PROJECT CASE FILE`."
        )
    out: list[LabelVersion] = []
    with store.transaction(project.db) as conn:
        current = conn.execute("SELECT MAX(idx) FROM rounds").fetchone()[0]
        if case_ids is None:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT case_id FROM queries q WHERE round = ? AND status = 'approved' "
                    "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.case_id = q.case_id) ORDER BY rank",
                    (current,),
                )
            ]
        else:
            ids = list(case_ids)
        for case_id in ids:
            _require_labelable(project, case_id, conn)
            case = _case(project, case_id, conn)
            if not case["has_reference_label"]:
                raise DataError(
                    f"case {case_id!r} has no reference label in the dataset; the oracle cannot label it. Fix: give "
                    f"its label file (`assft label -p {project.folder} {case_id} FILE`)."
                )
            out.append(
                insert_label(
                    conn,
                    project,
                    case_id,
                    Path(case["reference_label"]),
                    source="oracle",
                    validation=problems_from_json(case["integrity"]),
                )
            )
        settle_labelled(conn)
    return out


def insert_label(
    conn: sqlite3.Connection,
    project: Project,
    case_id: str,
    src: Path,
    *,
    source: str,
    validation: list[Problem],
) -> LabelVersion:
    """Copy an already validated label file into the artifacts and record its next version.

    Runs inside the caller's transaction. Same bytes as the current version: nothing is added.
    """
    digest = sha256_file(src)
    latest = conn.execute(
        "SELECT * FROM labels WHERE case_id = ? ORDER BY version DESC LIMIT 1", (case_id,)
    ).fetchone()
    if latest is not None and latest["sha256"] == digest:
        return _version(project, latest)
    dst = project.artifact_path("labels", case_id, digest + nifti_suffix(src))
    if not dst.exists():  # content-addressed: an existing file has these very bytes
        atomic_copy(src, dst)
    version = 1 if latest is None else latest["version"] + 1
    current_round = conn.execute("SELECT MAX(idx) FROM rounds").fetchone()[0]
    conn.execute(
        "INSERT INTO labels (case_id, version, file, sha256, source, original_name, validation, round, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            case_id,
            version,
            project.relative(dst),
            digest,
            source,
            src.name,
            problems_to_json(validation),
            current_round,
            time.time(),
        ),
    )
    store.add_event(conn, "label", f"{case_id} labelled (v{version}, {source})", case_id=case_id, version=version)
    row = conn.execute("SELECT * FROM labels WHERE case_id = ? AND version = ?", (case_id, version)).fetchone()
    return _version(project, row)


def label_versions(project: Project, case_id: str) -> list[LabelVersion]:
    """Every stored version of a case's label, oldest first."""
    with store.reading(project.db) as conn:
        rows = conn.execute("SELECT * FROM labels WHERE case_id = ? ORDER BY version", (case_id,)).fetchall()
    return [_version(project, r) for r in rows]


def current_labels(project: Project) -> dict[str, LabelVersion]:
    """The labelled set L: case id -> its current (highest) label version."""
    with store.reading(project.db) as conn:
        rows = conn.execute(
            "SELECT * FROM labels l WHERE version = (SELECT MAX(version) FROM labels m WHERE m.case_id = l.case_id) "
            "ORDER BY case_id"
        ).fetchall()
    return {r["case_id"]: _version(project, r) for r in rows}


def _version(project: Project, row: sqlite3.Row) -> LabelVersion:
    return LabelVersion(
        case_id=row["case_id"],
        version=row["version"],
        file=project.resolve(row["file"]),
        sha256=row["sha256"],
        source=row["source"],
        original_name=row["original_name"],
        validation=problems_from_json(row["validation"]),
        round=row["round"],
        created_at=row["created_at"],
    )


def _case(project: Project, case_id: str, conn: sqlite3.Connection | None = None) -> sqlite3.Row:
    if conn is None:
        with store.reading(project.db) as own:
            return _case(project, case_id, own)
    row = conn.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
    if row is None:
        raise DataError(f"unknown case {case_id!r}; `assft status -p {project.folder}` lists the cases.")
    if not row["usable"]:
        raise DataError(
            f"case {case_id!r} is unusable (integrity errors at import); fix its files and run `assft import`."
        )
    return row


def _require_labelable(project: Project, case_id: str, conn: sqlite3.Connection | None = None) -> None:
    """A case may get a label if it is approved this round or already labelled (a correction)."""
    if conn is None:
        with store.reading(project.db) as own:
            return _require_labelable(project, case_id, own)
    _case(project, case_id, conn)
    if conn.execute("SELECT 1 FROM labels WHERE case_id = ?", (case_id,)).fetchone():
        return None
    current = conn.execute("SELECT idx, state FROM rounds ORDER BY idx DESC LIMIT 1").fetchone()
    approved = conn.execute(
        "SELECT 1 FROM queries WHERE round = ? AND case_id = ? AND status = 'approved'", (current["idx"], case_id)
    ).fetchone()
    if not approved or current["state"] not in ("approved", "labelled"):
        raise StateError(
            f"cannot label {case_id!r}: only approved picks of the current round (round {current['idx']}, "
            f"'{current['state']}') or already labelled cases take a label; approve it first "
            f"(`assft approve -p {project.folder} {case_id}`)."
        )
    return None
