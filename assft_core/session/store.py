"""The project store: one SQLite file (WAL) with ordered schema migrations.

Every call opens its own short-lived connection (`connect`) with a busy timeout, because
Streamlit runs each browser session as a thread and detached jobs run as processes: no connection
is ever shared. Every multi-step change runs inside `transaction`, which takes the write lock up
front (`BEGIN IMMEDIATE`) and rolls everything back if any step raises, so the store is never left
half-changed (docs/architecture.md, "The store").
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from assft_core.errors import StateError

STORE_NAME = "project.sqlite"
BUSY_TIMEOUT_MS = 30_000
BACKUPS_DIR = "backups"  # beside the store, in the project folder
KEEP_BACKUPS = 10  # most recent backups kept; older ones are removed when a new one is made
SQLITE_MAGIC = b"SQLite format 3\x00"

# Ordered migrations: entry i brings the schema from version i to i + 1. Never edit a released
# entry; append a new one (old projects are upgraded on open).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE cases (
        case_id TEXT PRIMARY KEY,
        image_paths TEXT NOT NULL,            -- JSON list of the user's original files
        reference_label TEXT,                 -- the dataset's label file (oracle / evaluation)
        site TEXT NOT NULL DEFAULT 'unknown',
        split TEXT NOT NULL DEFAULT 'pool',
        integrity TEXT NOT NULL DEFAULT '[]', -- JSON list of problems
        usable INTEGER NOT NULL DEFAULT 1,
        has_reference_label INTEGER NOT NULL DEFAULT 0,
        imported_at REAL NOT NULL
    );
    CREATE TABLE rounds (
        idx INTEGER PRIMARY KEY,
        state TEXT NOT NULL,
        state_times TEXT NOT NULL DEFAULT '{}', -- JSON state -> unix time entered
        score_table TEXT,                     -- artifact path of the round's ScoreTable
        checkpoint TEXT,                      -- artifact path of f_{t+1}
        metrics TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE queries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        round INTEGER NOT NULL REFERENCES rounds(idx),
        case_id TEXT NOT NULL REFERENCES cases(case_id),
        status TEXT NOT NULL CHECK (status IN ('proposed', 'approved', 'rejected', 'swapped')),
        strategy TEXT NOT NULL,
        explanation TEXT NOT NULL DEFAULT '{}',
        rank INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (round, case_id)
    );
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        case_id TEXT NOT NULL REFERENCES cases(case_id),
        version INTEGER NOT NULL,
        file TEXT NOT NULL,                   -- path relative to the project folder
        sha256 TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('expert', 'oracle')),
        original_name TEXT NOT NULL,
        validation TEXT NOT NULL DEFAULT '[]',
        round INTEGER,
        created_at REAL NOT NULL,
        UNIQUE (case_id, version)
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'dead')),
        progress REAL NOT NULL DEFAULT 0,
        message TEXT NOT NULL DEFAULT '',
        metrics TEXT NOT NULL DEFAULT '{}',
        heartbeat REAL,
        pid INTEGER,
        host TEXT,
        run_dir TEXT NOT NULL DEFAULT '',
        resume_from TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    -- One active job of a kind per project, enforced by the store itself, so two dashboard
    -- sessions (threads) or two shells (processes) cannot both start a training.
    CREATE UNIQUE INDEX one_active_job_per_kind ON jobs(kind) WHERE status IN ('queued', 'running');
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        payload TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # 2: the annotation round trip (`assft export-picks` / `import-labels`) and DICOM sources.
    """
    CREATE TABLE preannotations (
        case_id TEXT NOT NULL REFERENCES cases(case_id),
        round INTEGER NOT NULL REFERENCES rounds(idx),
        file TEXT NOT NULL,                   -- path relative to the project folder
        sha256 TEXT NOT NULL,
        model TEXT NOT NULL,                  -- tag of the model that predicted it (f0, round1, ...)
        created_at REAL NOT NULL,
        PRIMARY KEY (case_id, round)
    );
    CREATE TABLE annotation_effort (
        case_id TEXT NOT NULL REFERENCES cases(case_id),
        label_version INTEGER NOT NULL,
        round INTEGER NOT NULL,               -- the round current when the label was stored
        preannotation_sha256 TEXT NOT NULL,
        changed_voxels INTEGER NOT NULL,
        changed_slices INTEGER NOT NULL,      -- slices along the third array axis with a change
        total_slices INTEGER NOT NULL,
        dice REAL NOT NULL,                   -- pre-annotation vs final, mean over foreground classes
        created_at REAL NOT NULL,
        PRIMARY KEY (case_id, label_version)
    );
    ALTER TABLE cases ADD COLUMN dicom_series_uid TEXT;  -- SeriesInstanceUID of a DICOM-imported image
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def connect(db_path: Path) -> sqlite3.Connection:
    """A fresh connection to the store with WAL, foreign keys and a busy timeout.

    Autocommit mode (`isolation_level=None`): transactions are explicit (`transaction`).
    """
    conn = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def transaction(db_path: Path) -> Iterator[sqlite3.Connection]:
    """One atomic change: `BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` if the body raises.

    Taking the write lock at the start (not at the first write) makes read-then-write checks
    (state machine moves, one-job-per-kind) safe against a concurrent writer.
    """
    conn = connect(db_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


@contextmanager
def reading(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A short-lived connection for reads (closed on exit)."""
    conn = connect(db_path)
    try:
        yield conn
    finally:
        conn.close()


def initialise(db_path: Path) -> None:
    """Create a new store at `db_path` with the current schema (WAL journal).

    Raises:
        StateError: if a store already exists there.
    """
    if db_path.exists():
        raise StateError(f"{db_path} already exists; open the project instead of creating it.")
    conn = connect(db_path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    migrate(db_path, create=True)


def _damaged(db_path: Path, what: str) -> StateError:
    """The error for a store that cannot be opened: the file, what is wrong, and the fix."""
    backups = list_backups(db_path)
    restore = (
        f"restore it from a backup (newest: {backups[-1]}; copy it over {db_path.name} with the dashboard and "
        "jobs stopped)" if backups else f"restore it from your own backup of {db_path.parent}"
    )
    return StateError(
        f"{db_path}: {what}. Fix: {restore}; `assft doctor -p {db_path.parent}` lists what is damaged and "
        "repairs what it can."
    )


def connect_read_only(db_path: Path) -> sqlite3.Connection:
    """A read-only connection (`mode=ro`): checks and diagnoses never write to the file."""
    uri = "file:" + urllib.parse.quote(str(Path(db_path).absolute())) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    return conn


def check_store(db_path: Path) -> None:
    """Refuse a store file that is not an intact ASSFT Studio store, reading it only.

    Checked: the file is not empty and starts with SQLite's header, `PRAGMA quick_check` is ok,
    and the schema version is set (0 means a foreign or blank SQLite file: no schema is ever
    created inside an existing file; `initialise` makes new stores).

    Raises:
        StateError: naming the file, what is wrong and the fix (restore from a backup, `assft doctor`).
    """
    try:
        size = db_path.stat().st_size
        with open(db_path, "rb") as fh:
            magic = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise _damaged(db_path, f"cannot be read ({exc.strerror})") from None
    if size == 0:
        raise _damaged(db_path, "is empty (0 bytes): the project store was lost or truncated")
    if magic != SQLITE_MAGIC:
        raise _damaged(db_path, "is not an SQLite database (damaged, or overwritten by another file)")
    try:
        conn = connect_read_only(db_path)
        try:
            result = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)")]
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise _damaged(db_path, f"is damaged ({exc})") from None
    if result != ["ok"]:
        raise _damaged(db_path, f"is damaged (integrity check: {'; '.join(result)})")
    if version == 0:
        raise _damaged(db_path, "holds no ASSFT Studio schema (schema version 0: not a project store)")


def list_backups(db_path: Path) -> list[Path]:
    """The store's backups in `<project>/backups/`, oldest first."""
    folder = db_path.parent / BACKUPS_DIR
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{db_path.stem}-*.sqlite"), key=lambda p: (p.stat().st_mtime, p.name))


def backup(db_path: Path, reason: str) -> Path:
    """Copy the store with SQLite's online backup API into `<project>/backups/` (temp, then rename).

    Consistent even while other connections write; keeps the `KEEP_BACKUPS` newest.

    Args:
        db_path: the store.
        reason: a short tag in the file name, e.g. "before-migration-2", "before-round-3".

    Returns:
        The backup file, `backups/project-<UTC time>-<reason>.sqlite`.
    """
    folder = db_path.parent / BACKUPS_DIR
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
    final = folder / f"{db_path.stem}-{stamp}-{reason}.sqlite"
    tmp = folder / f".{final.name}.tmp"
    src = connect(db_path)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
        os.replace(tmp, final)
    finally:
        src.close()
        tmp.unlink(missing_ok=True)
    for old in list_backups(db_path)[:-KEEP_BACKUPS]:
        old.unlink(missing_ok=True)
    return final


def schema_version(db_path: Path) -> int:
    """The store's `PRAGMA user_version`."""
    with reading(db_path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(db_path: Path, *, create: bool = False) -> int:
    """Apply the pending migrations in order, each in one transaction; returns the new version.

    An existing store (version ≥ 1) is backed up (`backup`) before it is upgraded.

    Args:
        db_path: the store.
        create: allow version 0 (a store `initialise` has just made); otherwise version 0 is refused.

    Raises:
        StateError: when the store was written by a newer ASSFT Studio (schema version above
            `SCHEMA_VERSION`): upgrade the package instead of downgrading the project; or when it
            holds no schema and `create` is False.
    """
    version = schema_version(db_path)
    if version > SCHEMA_VERSION:
        raise StateError(
            f"{db_path} has schema version {version}, newer than this ASSFT Studio understands "
            f"({SCHEMA_VERSION}); upgrade assft-studio to open it."
        )
    if version == 0 and not create:
        raise _damaged(db_path, "holds no ASSFT Studio schema (schema version 0: not a project store)")
    if 0 < version < SCHEMA_VERSION:
        backup(db_path, f"before-migration-{version + 1}")
    for target in range(version, SCHEMA_VERSION):
        with transaction(db_path) as conn:
            # Re-read under the write lock: another process may have migrated meanwhile.
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) != target:
                continue
            for statement in _statements(MIGRATIONS[target]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target + 1}")
    return SCHEMA_VERSION


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit our transaction)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines():
        buf += line.split("--", 1)[0] + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf.strip()[:80]}")
    return out


def add_event(conn: sqlite3.Connection, kind: str, message: str, /, **payload: Any) -> None:
    """Record one event (inside the caller's transaction, so it commits or rolls back with it)."""
    conn.execute(
        "INSERT INTO events (time, kind, message, payload) VALUES (?, ?, ?, ?)",
        (time.time(), kind, message, json.dumps(payload, default=str)),
    )
