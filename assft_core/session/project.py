"""A project: a folder holding the store (`project.sqlite`) and `artifacts/`.

`create_project` makes one from a dataset folder and a model; `open_project` opens it again (from
any thread or process). Case records come from the data layer (`import_dataset`, `check_pair`);
cases with integrity errors are kept, marked unusable, with their report.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assft_core.config import PreprocessConfig, ProjectConfig, from_dict, to_dict
from assft_core.data.records import DatasetManifest, IntegrityReport, Problem, Severity, Split
from assft_core.errors import DataError, StateError
from assft_core.fsutil import atomic_copy
from assft_core.session import store
from assft_core.session.paths import safe_join, sanitize_filename, sanitize_id

ARTIFACTS = "artifacts"
DICOM_DIR = "dicom"  # under artifacts/: DICOM series imported as NIfTI (`<case>.nii.gz` + `.json` sidecar)


@dataclass(frozen=True)
class Project:
    """An open project (cheap to make; holds no connection).

    Attributes:
        folder: the project folder (absolute).
        config: the project's settings as stored.
        oracle: demo/benchmark mode: pool labels come from the dataset's reference labels.
        classes: label index -> name (0 = background) of the imported dataset.
        dataset_root: the dataset folder imported last.
        model: {"kind": "dir" | "config", "path": absolute path, "copy": artifact copy or ""}.
    """

    folder: Path
    config: ProjectConfig
    oracle: bool
    classes: dict[int, str] = field(default_factory=dict)
    dataset_root: Path | None = None
    model: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        """The store file."""
        return self.folder / store.STORE_NAME

    @property
    def artifacts(self) -> Path:
        """The artifacts folder (labels, checkpoints, score tables, figures, job runs)."""
        return self.folder / ARTIFACTS

    def artifact_path(self, *parts: str) -> Path:
        """A path under `artifacts/`, refused if it would escape the project folder.

        Raises:
            DataError: if a part contains `..` or an absolute path leading outside.
        """
        return safe_join(self.artifacts, *parts)

    def relative(self, path: Path) -> str:
        """`path` relative to the project folder (stored so a project folder can be moved)."""
        return str(Path(path).resolve().relative_to(self.folder.resolve()))

    def resolve(self, stored: str) -> Path:
        """The absolute path of a path stored relative to the project folder."""
        return safe_join(self.folder, stored)


def create_project(
    folder: str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    model: str | os.PathLike[str],
    *,
    config: ProjectConfig | None = None,
    oracle: bool = False,
    classes: dict[int, str] | None = None,
) -> Project:
    """Create a project folder, its store, and import the dataset.

    Args:
        folder: the new project folder (created; may exist only if empty).
        dataset_dir: a dataset folder the data layer can import (folder of pairs, MSD, nnU-Net v2).
        model: a model folder (checkpoint + model card) or a model-config file (JSON/YAML); a
            config file is copied into `artifacts/model/` so later edits of the original do not
            change the project.
        config: project settings (default: `ProjectConfig()`).
        oracle: demo/benchmark mode (labels of pool cases come from the dataset, marked oracle).
        classes: the classes of a plain-folder dataset (index -> name, 0 = background); None: the
            model card's. Declared classes let a case lack a structure (a warning, not "not
            consecutive"). MSD / nnU-Net datasets declare their own in dataset.json.

    Returns:
        The open project.

    Raises:
        StateError: when `folder` already holds a project or other files.
        DataError: when the dataset or model path does not exist, or the dataset cannot be read.
    """
    root = Path(folder).absolute()
    if (root / store.STORE_NAME).exists():
        raise StateError(f"{root} is already a project; open it (e.g. `assft status -p {root}`).")
    if root.exists() and any(root.iterdir()):
        raise StateError(f"{root} is not empty; choose a new or empty folder for the project.")
    model_path = Path(model).absolute()
    if not model_path.exists():
        raise DataError(f"model {model_path} does not exist; pass a model folder or a model-config file.")
    dataset_path = Path(dataset_dir).absolute()
    if not dataset_path.is_dir():
        raise DataError(f"dataset folder {dataset_path} does not exist or is not a folder.")
    cfg = config or ProjectConfig()

    existed = root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:  # a failure leaves nothing behind (DICOM series are converted into the new folder)
        folder_classes = classes if classes is not None else _card_classes(model_path)
        manifest, reports = _scan(
            dataset_path, classes=None, cfg=cfg.preprocess, dicom_out=root / ARTIFACTS / DICOM_DIR,
            folder_classes=folder_classes,
        )
        _initialise(root, cfg, oracle, model_path, manifest, reports)
    except BaseException:
        _remove_created(root, keep_folder=existed)
        raise
    return open_project(root)


def _remove_created(root: Path, keep_folder: bool) -> None:
    """Undo a failed `create_project`: the folder was absent or empty before (checked first)."""
    if not keep_folder:
        shutil.rmtree(root, ignore_errors=True)
        return
    for child in root.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _initialise(
    root: Path,
    cfg: ProjectConfig,
    oracle: bool,
    model_path: Path,
    manifest: DatasetManifest,
    reports: dict[str, IntegrityReport],
) -> None:
    (root / ARTIFACTS).mkdir(exist_ok=True)
    store.initialise(root / store.STORE_NAME)
    model_info = {"kind": "dir" if model_path.is_dir() else "config", "path": str(model_path), "copy": ""}
    if model_info["kind"] == "config":
        copy = safe_join(root / ARTIFACTS, "model", sanitize_filename(model_path.name))
        atomic_copy(model_path, copy)
        model_info["copy"] = str(copy.relative_to(root))
    with store.transaction(root / store.STORE_NAME) as conn:
        _set_meta(conn, "config", to_dict(cfg))
        _set_meta(conn, "oracle", oracle)
        _set_meta(conn, "model", model_info)
        _set_meta(conn, "created_at", time.time())
        conn.execute(
            "INSERT INTO rounds (idx, state, state_times) VALUES (0, 'open', ?)",
            (json.dumps({"open": time.time()}),),
        )
        store.add_event(conn, "project", f"project created (oracle={oracle})", model=model_info)
    project = open_project(root)
    with store.transaction(project.db) as conn:
        _write_cases(conn, project, manifest, reports)


def open_project(folder: str | os.PathLike[str]) -> Project:
    """Open an existing project (upgrading an older schema in place, after a backup).

    The store is checked first (`store.check_store`: not empty, SQLite, `quick_check`, schema
    version); no schema is ever created inside an existing file.

    Raises:
        StateError: when `folder` is not a project, its store is damaged or foreign (the message
            names the file and the fix), or its store is newer than this package.
    """
    root = Path(folder).absolute()
    db = root / store.STORE_NAME
    if not db.is_file():
        raise StateError(
            f"{root} is not an ASSFT project (no {store.STORE_NAME}); create one with "
            "`assft init PROJECT --dataset DIR --model DIR` (or `--model-config FILE`)."
        )
    store.check_store(db)
    store.migrate(db)
    try:
        with store.reading(db) as conn:
            meta = {row["key"]: json.loads(row["value"]) for row in conn.execute("SELECT key, value FROM meta")}
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{db}: the store's tables cannot be read ({exc}); `assft doctor -p {root}` says what "
                         "is damaged; restore the file from a backup.") from None
    try:
        cfg = from_dict(ProjectConfig, meta.get("config", {}))
    except ValueError as exc:
        raise StateError(f"{db}: stored settings are invalid ({exc}).") from None
    dataset = meta.get("dataset", {})
    return Project(
        folder=root,
        config=cfg,
        oracle=bool(meta.get("oracle", False)),
        classes={int(k): v for k, v in dataset.get("classes", {}).items()},
        dataset_root=Path(dataset["root"]) if dataset.get("root") else None,
        model=meta.get("model", {}),
    )


def save_config(project: Project, config: ProjectConfig) -> Project:
    """Store new project settings (recorded as an event) and return the re-opened project."""
    with store.transaction(project.db) as conn:
        _set_meta(conn, "config", to_dict(config))
        store.add_event(conn, "config", "project settings changed", config=to_dict(config))
    return open_project(project.folder)


@dataclass(frozen=True)
class CaseInfo:
    """One imported case as the engine uses it.

    Attributes:
        case_id: the case's id.
        image_paths: the user's original image files (one per channel, or one 4D file).
        site: site / scanner / protocol.
        split: pool, test, source_train or source_test.
        usable: False when the import found integrity errors (`problems` says which).
        problems: the integrity report (errors and warnings).
        reference_label: the dataset's label file for evaluation; always None for pool cases,
            whose labels come only from the labels table (`labels.current_labels`), so the
            oracle's labels stay hidden from training until a case is labelled.
        series_uid: the SeriesInstanceUID of an image imported from a DICOM series (its
            `image_paths` then name the NIfTI stored in `artifacts/dicom/`), else None.
    """

    case_id: str
    image_paths: tuple[Path, ...]
    site: str
    split: Split
    usable: bool
    problems: list[Problem]
    reference_label: Path | None
    series_uid: str | None = None


def list_cases(project: Project, split: Split | None = None, *, usable_only: bool = True) -> list[CaseInfo]:
    """The project's cases (by id), optionally of one split, usable ones only by default."""
    query = "SELECT * FROM cases WHERE (? IS NULL OR split = ?) AND (? = 0 OR usable = 1) ORDER BY case_id"
    value = split.value if split is not None else None
    with store.reading(project.db) as conn:
        rows = conn.execute(query, (value, value, int(usable_only))).fetchall()
    return [
        CaseInfo(
            case_id=r["case_id"],
            image_paths=tuple(Path(x) for x in json.loads(r["image_paths"])),
            site=r["site"],
            split=Split(r["split"]),
            usable=bool(r["usable"]),
            problems=problems_from_json(r["integrity"]),
            reference_label=Path(r["reference_label"])
            if r["reference_label"] and r["split"] != Split.POOL.value
            else None,
            series_uid=r["dicom_series_uid"],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class ImportSummary:
    """What an import changed: ids added, ids updated, ids unusable (integrity errors)."""

    added: list[str]
    updated: list[str]
    unusable: list[str]


def import_dataset_into(project: Project, dataset_dir: str | os.PathLike[str]) -> ImportSummary:
    """Import (or re-import) a dataset folder's cases into the project, in one transaction.

    New case ids are added; known ids get fresh paths, site, split and integrity report; no case
    is deleted (labels and queries refer to them). Each case is checked with the data layer's
    `check_pair`; a case with errors is kept with `usable = 0` and its report. Outside oracle
    mode, a usable pool case's reference label becomes its expert label (version 1): the user
    already had it. In oracle mode those labels stay hidden until `label_with_oracle`.

    Raises:
        DataError: from the data layer when the folder cannot be parsed, or when its classes
            differ from the project's (a project has one label set).
    """
    manifest, reports = _scan(
        Path(dataset_dir).absolute(), classes=project.classes or None, cfg=project.config.preprocess,
        dicom_out=project.artifact_path(DICOM_DIR), folder_classes=project.classes or None,
    )
    with store.transaction(project.db) as conn:
        summary = _write_cases(conn, project, manifest, reports)
    return summary


def _card_classes(model_path: Path) -> dict[int, str] | None:
    """The classes of the model card at `model_path` (folder or card file); None when it cannot be
    read (the project is still created; scoring reports the card's problem)."""
    from assft_core.errors import ModelError
    from assft_core.models.card import ModelCard

    try:
        return dict(ModelCard.load(model_path).classes)
    except (ModelError, OSError, ValueError):
        return None


def _scan(
    dataset_dir: Path,
    classes: dict[int, str] | None,
    cfg: PreprocessConfig,
    dicom_out: Path | None = None,
    folder_classes: dict[int, str] | None = None,
) -> tuple[DatasetManifest, dict[str, IntegrityReport]]:
    """Parse a dataset folder and check every case (no store access: may be slow); DICOM series
    are written as NIfTI into `dicom_out`; a plain folder gets `folder_classes` (None: none declared)."""
    from assft_core.data.importers import import_dataset
    from assft_core.data.integrity import check_dataset

    manifest = import_dataset(dataset_dir, classes=folder_classes, dicom_out=dicom_out)
    if classes is not None and classes != manifest.classes:
        raise DataError(
            f"{manifest.root}: classes {manifest.classes} differ from the project's {classes}; "
            "a project has one label set: import a dataset with the same classes or create a new project."
        )
    for case in manifest.cases:
        try:
            sanitize_id(case.case_id)
        except DataError:
            raise DataError(
                f"{case.image_paths[0]}: its case id {case.case_id!r} has no usable characters; rename the file "
                "(letters, digits, '.', '_' or '-', not only dots)."
            ) from None
    reports = {
        sanitize_id(case.case_id): report
        for case, report in zip(manifest.cases, check_dataset(manifest, cfg=cfg), strict=True)
    }
    return manifest, reports


def _write_cases(
    conn: Any, project: Project, manifest: DatasetManifest, reports: dict[str, IntegrityReport]
) -> ImportSummary:
    """Insert or update the manifest's cases inside the caller's transaction."""
    from assft_core.session.labels import insert_label

    _set_meta(
        conn,
        "dataset",
        {
            "root": str(manifest.root),
            "name": manifest.name,
            "schema": manifest.schema,
            "classes": {str(k): v for k, v in manifest.classes.items()},
            "channel_names": manifest.channel_names,
            "modality": manifest.modality,
        },
    )
    added: list[str] = []
    updated: list[str] = []
    for case in manifest.cases:
        case_id = sanitize_id(case.case_id)
        report = reports[case_id]
        row = (
            json.dumps([str(p) for p in case.image_paths]),
            str(case.label_path) if case.label_path else None,
            case.site,
            Split(case.split).value,
            problems_to_json(report.problems),
            int(report.ok),
            int(case.label_path is not None),
            time.time(),
            case.series_uid,
            case_id,
        )
        if conn.execute("SELECT 1 FROM cases WHERE case_id = ?", (case_id,)).fetchone():
            conn.execute(
                "UPDATE cases SET image_paths=?, reference_label=?, site=?, split=?, integrity=?, "
                "usable=?, has_reference_label=?, imported_at=?, dicom_series_uid=? WHERE case_id=?",
                row,
            )
            updated.append(case_id)
        else:
            conn.execute(
                "INSERT INTO cases (image_paths, reference_label, site, split, integrity, usable, "
                "has_reference_label, imported_at, dicom_series_uid, case_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            added.append(case_id)
        given_label = not project.oracle and case.label_path is not None and report.ok
        if given_label and Split(case.split) is Split.POOL:
            insert_label(conn, project, case_id, Path(case.label_path), source="expert", validation=report.problems)
    unusable = sorted(c for c, r in reports.items() if not r.ok)
    store.add_event(
        conn,
        "import",
        f"imported {manifest.root}: {len(added)} new, {len(updated)} updated, {len(unusable)} unusable",
        added=added,
        updated=updated,
        unusable=unusable,
    )
    return ImportSummary(added=added, updated=updated, unusable=unusable)




def problems_from_json(text: str) -> list[Problem]:
    """The stored integrity / validation report back as `Problem`s."""
    return [
        Problem(severity=Severity(p["severity"]), file=p["file"], message=p["message"], fix=p["fix"])
        for p in json.loads(text)
    ]


def problems_to_json(problems: list[Problem]) -> str:
    """A report's problems as stored JSON."""
    return json.dumps(
        [{"severity": p.severity.value, "file": p.file, "message": p.message, "fix": p.fix} for p in problems]
    )


def _set_meta(conn: Any, key: str, value: Any) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, json.dumps(value)),
    )
