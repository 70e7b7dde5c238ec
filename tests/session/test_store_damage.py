"""A damaged project (issue 20, item 1): a truncated, empty or foreign store file, missing
artefacts and dangling rows are found and named with their fix; nothing is created inside an
existing file; `assft doctor` lists (and repairs what it can); backups before migrations and rounds."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from assft_core.cli import main
from assft_core.errors import StateError
from assft_core.session import doctor, labels, rounds, store
from assft_core.session.project import open_project


def _truncate(path: Path, fraction: float) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(int(path.stat().st_size * fraction))


def _checkpointed(project) -> Path:
    """The store with its WAL folded into the main file (as after a clean close)."""
    conn = sqlite3.connect(project.db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return project.db


def test_a_truncated_store_is_a_message_naming_the_file_and_the_fix(oracle_project, capsys) -> None:
    db = _checkpointed(oracle_project)
    _truncate(db, 0.5)
    with pytest.raises(StateError, match="damaged") as err:
        open_project(oracle_project.folder)
    assert str(db) in str(err.value) and "assft doctor" in str(err.value) and "backup" in str(err.value)
    assert main(["status", "-p", str(oracle_project.folder)]) == 1
    assert "damaged" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 10])
def test_an_empty_or_foreign_file_is_refused_and_left_as_it_is(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / store.STORE_NAME
    db.write_bytes(content)
    with pytest.raises(StateError, match=str(db)):
        open_project(tmp_path)
    assert db.read_bytes() == content  # no schema created inside it


def test_an_sqlite_file_without_the_schema_is_not_migrated_into_a_project(tmp_path: Path) -> None:
    db = tmp_path / store.STORE_NAME
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StateError, match="no ASSFT Studio schema"):
        open_project(tmp_path)
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]


def test_a_migration_is_preceded_by_a_backup(oracle_project, monkeypatch) -> None:
    old = store.SCHEMA_VERSION
    monkeypatch.setattr(store, "MIGRATIONS", (*store.MIGRATIONS, "CREATE TABLE extra (x INTEGER);"))
    monkeypatch.setattr(store, "SCHEMA_VERSION", len(store.MIGRATIONS))
    open_project(oracle_project.folder)
    (backup,) = store.list_backups(oracle_project.db)
    assert f"before-migration-{old + 1}" in backup.name
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == old
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert store.schema_version(oracle_project.db) == old + 1


def test_each_new_round_is_preceded_by_a_backup(oracle_project) -> None:
    with store.transaction(oracle_project.db) as conn:
        conn.execute("UPDATE rounds SET state = 'evaluated' WHERE idx = 0")
    rounds.start_next_round(oracle_project)
    (backup,) = store.list_backups(oracle_project.db)
    assert "before-round-1" in backup.name
    with sqlite3.connect(backup) as conn:
        assert conn.execute("SELECT COUNT(*) FROM rounds").fetchone()[0] == 1


def _trained_without_its_model(project) -> None:
    with store.transaction(project.db) as conn:
        conn.execute("UPDATE rounds SET state = 'trained', checkpoint = 'artifacts/models/round-000' WHERE idx = 0")


def test_status_reports_missing_artefacts_and_export_names_them(oracle_project, tmp_path: Path, capsys) -> None:
    _trained_without_its_model(oracle_project)
    assert main(["status", "-p", str(oracle_project.folder)]) == 0
    out = capsys.readouterr().out
    assert "missing" in out and "artifacts/models/round-000" in out and "assft doctor" in out
    assert main(["export", "-p", str(oracle_project.folder), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "artifacts/models/round-000" in err and not (tmp_path / "out").exists()


def test_doctor_lists_and_repairs_dangling_rows_and_missing_label_files(oracle_project, capsys) -> None:
    project = oracle_project
    conn = sqlite3.connect(project.db)  # foreign keys off, as a hand edit or another tool would
    conn.execute("INSERT INTO queries (round, case_id, status, strategy, rank, created_at, updated_at) "
                 "VALUES (0, 'ghost', 'proposed', 'random', 1, 0, 0)")
    conn.execute("INSERT INTO labels (case_id, version, file, sha256, source, original_name, created_at) "
                 "VALUES ('p1', 1, 'artifacts/labels/p1/gone.nii.gz', 'x', 'expert', 'gone.nii.gz', 0)")
    conn.commit()
    conn.close()
    _trained_without_its_model(project)
    found = doctor.diagnose(project.folder)
    kinds = sorted(f.kind for f in found)
    assert kinds == ["dangling_row", "missing_artifact", "missing_artifact"], [str(f) for f in found]
    assert main(["doctor", "-p", str(project.folder)]) == 1  # problems found, nothing changed
    out = capsys.readouterr().out
    assert "ghost" in out and "gone.nii.gz" in out and "round-000" in out
    assert main(["doctor", "-p", str(project.folder), "--repair"]) == 1  # the model stays missing
    out = capsys.readouterr().out
    assert "repaired" in out
    left = doctor.diagnose(project.folder)
    assert [f.kind for f in left] == ["missing_artifact"] and "round-000" in str(left[0])
    assert "p1" not in labels.current_labels(open_project(project.folder))
    assert any("before-repair" in b.name for b in store.list_backups(project.db))


def test_doctor_on_a_damaged_store_lists_the_backups(oracle_project, capsys) -> None:
    with store.transaction(oracle_project.db) as conn:
        conn.execute("UPDATE rounds SET state = 'evaluated' WHERE idx = 0")
    rounds.start_next_round(oracle_project)  # makes a backup
    _truncate(_checkpointed(oracle_project), 0.5)
    assert main(["doctor", "-p", str(oracle_project.folder)]) == 1
    out = capsys.readouterr().out
    assert "damaged" in out and "before-round-1" in out
