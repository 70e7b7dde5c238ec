"""`assft doctor`: what is damaged in a project, and the repairs that are safe to make.

Found: a store that cannot be opened (empty, foreign, `quick_check` failing, no schema: only a
backup helps, and the backups in `backups/` are listed), artefacts the store points at that are
gone (score tables, round models, label files, the model-config copy), and dangling rows (rows
whose foreign key points nowhere, as a hand edit or another tool can leave). Repaired with
`--repair`, after a backup of the store: dangling rows and label versions whose file is gone are
deleted (the case needs labelling again). A missing score table or model is not recreated here;
its finding says how (score again, retrain, or restore the folder from a backup).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from assft_core.errors import StateError
from assft_core.session import store

DAMAGED_STORE = "damaged_store"
MISSING_ARTIFACT = "missing_artifact"
DANGLING_ROW = "dangling_row"


@dataclass(frozen=True)
class Finding:
    """One problem of a project.

    Attributes:
        kind: `DAMAGED_STORE`, `MISSING_ARTIFACT` or `DANGLING_ROW`.
        what: what is wrong, naming the file or row.
        fix: what to do about it.
        repair: the (SQL, parameters) `repair` runs for it; None when it cannot be repaired here.
    """

    kind: str
    what: str
    fix: str
    repair: tuple[str, tuple[object, ...]] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.what}. Fix: {self.fix}"


def diagnose(folder: str | os.PathLike[str]) -> list[Finding]:
    """Every problem found in the project folder, reading only.

    Returns:
        The findings (empty for a healthy project). A damaged store gives one finding (nothing
        else can be read then).

    Raises:
        StateError: when `folder` holds no `project.sqlite`.
    """
    root = Path(folder).absolute()
    db = root / store.STORE_NAME
    if not db.is_file():
        raise StateError(f"{root} is not an ASSFT project (no {store.STORE_NAME}).")
    try:
        store.check_store(db)
    except StateError as exc:
        backups = store.list_backups(db)
        listed = ", ".join(p.name for p in backups) if backups else "none in backups/"
        return [Finding(DAMAGED_STORE, str(exc).split(" Fix: ")[0],
                        f"stop the dashboard and jobs, then copy a backup over {db} (backups: {listed})")]
    conn = store.connect_read_only(db)
    try:
        return _dangling(conn) + _missing(conn, root)
    finally:
        conn.close()


def missing_artifacts(folder: str | os.PathLike[str]) -> list[Finding]:
    """The `MISSING_ARTIFACT` findings of `diagnose` (what `assft status` reports)."""
    return [f for f in diagnose(folder) if f.kind == MISSING_ARTIFACT]


def repair(folder: str | os.PathLike[str]) -> list[Finding]:
    """Back up the store, then make every repair `diagnose` offers, in one transaction.

    Returns:
        The findings repaired (the others remain; `diagnose` again to list them).

    Raises:
        StateError: when the folder is not a project, or its store is damaged (restore a backup).
    """
    root = Path(folder).absolute()
    found = [f for f in diagnose(root) if f.repair is not None]
    if not found:
        return []
    db = root / store.STORE_NAME
    store.backup(db, "before-repair")
    with store.transaction(db) as conn:
        for finding in found:
            sql, params = finding.repair  # type: ignore[misc]
            conn.execute(sql, params)
        store.add_event(conn, "doctor", f"repaired {len(found)} problem(s)", repaired=[f.what for f in found])
    return found


def _dangling(conn: sqlite3.Connection) -> list[Finding]:
    out: list[Finding] = []
    for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check").fetchall():
        row = dict(conn.execute(f'SELECT * FROM "{table}" WHERE rowid = ?', (rowid,)).fetchone() or {})
        out.append(Finding(
            DANGLING_ROW,
            f"{table} row {rowid} {json.dumps(row, default=str)[:200]} points at a missing {parent} row",
            "`assft doctor --repair` deletes it",
            (f'DELETE FROM "{table}" WHERE rowid = ?', (rowid,)),
        ))
    return out


def _missing(conn: sqlite3.Connection, root: Path) -> list[Finding]:
    out: list[Finding] = []
    for r in conn.execute("SELECT idx, score_table, checkpoint FROM rounds ORDER BY idx"):
        if r["score_table"] and not (root / r["score_table"]).exists():
            out.append(Finding(MISSING_ARTIFACT, f"round {r['idx']}'s score table {r['score_table']} is missing",
                               f"restore it from a backup of {root}, or score the pool again (`assft score -p {root}`) "
                               "when it is the current round"))
        if r["checkpoint"] and not (root / r["checkpoint"]).exists():
            out.append(Finding(MISSING_ARTIFACT, f"round {r['idx']}'s model {r['checkpoint']} is missing",
                               f"restore the folder from a backup of {root}; without it this round's model cannot be "
                               "exported or scored with: retrain in a new project or restore"))
    for r in conn.execute("SELECT id, case_id, version, file FROM labels ORDER BY id"):
        if not (root / r["file"]).is_file():
            out.append(Finding(MISSING_ARTIFACT, f"label v{r['version']} of case {r['case_id']} ({r['file']}) is missing",
                               "restore the file from a backup, or `assft doctor --repair` forgets this version "
                               "(then label the case again if it has no other version)",
                               ("DELETE FROM labels WHERE id = ?", (r["id"],))))
    meta = {k: v for k, v in conn.execute("SELECT key, value FROM meta")}
    model = json.loads(meta.get("model", "{}"))
    if model.get("copy") and not (root / model["copy"]).is_file():
        out.append(Finding(MISSING_ARTIFACT, f"the project's model-config copy {model['copy']} is missing",
                           f"copy the model-config file back to {root / model['copy']}"))
    elif model.get("kind") == "dir" and model.get("path") and not Path(model["path"]).exists():
        out.append(Finding(MISSING_ARTIFACT, f"the model folder {model['path']} is missing",
                           "put the model folder back at that path (the project refers to it, it holds no copy)"))
    return out


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `assft doctor` to `assft`."""
    from assft_core.session.commands import PROJECT_ENV, with_project_option

    p = with_project_option(sub.add_parser(
        "doctor", help="list what is damaged in a project (store, missing artefacts, dangling rows); --repair",
        description="Check the store (quick_check, schema), the artefacts it points at and dangling rows. "
        "Exit 0 when nothing is wrong, 1 when something is (after --repair: something remains)."))
    p.add_argument("--repair", action="store_true",
                   help="back up the store, then delete dangling rows and label versions whose file is gone")
    p.set_defaults(func=_doctor, project_env=PROJECT_ENV)


def _doctor(args: argparse.Namespace) -> int:
    folder = Path(args.project or os.environ.get(args.project_env) or Path.cwd()).absolute()
    if args.repair:
        for finding in repair(folder):
            print(f"repaired: {finding.what}")
    found = diagnose(folder)
    for finding in found:
        print(f"{finding.kind.replace('_', ' ')}: {finding}")
    print(f"{folder}: {'no problem found' if not found else f'{len(found)} problem(s)'}")
    return 1 if found else 0
