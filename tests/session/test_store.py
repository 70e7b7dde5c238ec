"""The store: schema versioning, clear errors on open, and all-or-nothing transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from assft_core.config import ProjectConfig
from assft_core.errors import DataError, StateError
from assft_core.session import labels, rounds, store
from assft_core.session.project import create_project, open_project, save_config

TABLES = ("meta", "cases", "rounds", "queries", "labels", "jobs", "events")


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table (the whole observable state of the store)."""
    with store.reading(db) as conn:
        return {t: [tuple(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY rowid")] for t in TABLES}


def test_new_store_is_wal_at_current_schema(oracle_project) -> None:
    with store.reading(oracle_project.db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert {r for r in dump(oracle_project.db)} == set(TABLES)


def test_open_errors_name_the_problem(tmp_path: Path, oracle_project) -> None:
    with pytest.raises(StateError, match="is not an ASSFT project"):
        open_project(tmp_path / "nowhere")
    with store.reading(oracle_project.db) as conn:
        conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="newer than this ASSFT Studio"):
        open_project(oracle_project.folder)


def test_create_refuses_existing_project_and_missing_inputs(oracle_project, tmp_path: Path, model_config) -> None:
    with pytest.raises(StateError, match="already a project"):
        create_project(oracle_project.folder, tmp_path / "data", model_config)
    with pytest.raises(DataError, match="does not exist"):
        create_project(tmp_path / "new", tmp_path / "data", tmp_path / "missing.json")
    (tmp_path / "empty_data").mkdir()
    with pytest.raises(DataError, match="no NIfTI images"):  # the data layer's error, unchanged
        create_project(tmp_path / "new", tmp_path / "empty_data", model_config)
    assert not (tmp_path / "new").exists()  # nothing half-created


def test_config_round_trips_through_the_store(oracle_project) -> None:
    cfg = ProjectConfig(budget=5, strategy="random")
    cfg.train.steps = 7
    reopened = save_config(oracle_project, cfg)
    assert (reopened.config.budget, reopened.config.strategy, reopened.config.train.steps) == (5, "random", 7)
    assert reopened.oracle is True and reopened.classes == {0: "background", 1: "blob"}


def test_transaction_rolls_back_every_step(oracle_project) -> None:
    before = dump(oracle_project.db)
    with pytest.raises(RuntimeError):
        with store.transaction(oracle_project.db) as conn:
            conn.execute("UPDATE rounds SET state = 'scored'")
            store.add_event(conn, "x", "half done")
            raise RuntimeError("crash between steps")
    assert dump(oracle_project.db) == before


def test_failed_swap_leaves_store_unchanged(oracle_project) -> None:
    project = oracle_project
    rounds.mark_scored(project, None)
    rounds.propose(project, [{"case_id": "p0"}, {"case_id": "p1"}], "manual")
    before = dump(project.db)

    def broken_strategy(pool, n):
        raise RuntimeError("strategy crashed after the reject was written")

    with pytest.raises(RuntimeError):
        rounds.swap(project, "p0", broken_strategy, "manual")
    assert dump(project.db) == before
    with pytest.raises(StateError, match="only usable, unlabelled pool cases"):  # a bad pick also undoes the reject
        rounds.swap(project, "p0", lambda pool, n: [{"case_id": "t0"}], "manual")
    assert dump(project.db) == before


def test_failed_oracle_batch_stores_no_label(oracle_project) -> None:
    project = oracle_project
    rounds.mark_scored(project, None)
    rounds.propose(project, [{"case_id": "p0"}, {"case_id": "p1"}], "manual")
    rounds.approve(project)
    with store.transaction(project.db) as conn:  # p1's reference label vanished from the dataset
        conn.execute("UPDATE cases SET has_reference_label = 0 WHERE case_id = 'p1'")
    before = dump(project.db)
    with pytest.raises(DataError, match="no reference label"):
        labels.label_with_oracle(project)  # p0 is labelled first, then p1 fails
    assert dump(project.db) == before
    assert labels.current_labels(project) == {}


def test_busy_writer_waits_instead_of_failing(oracle_project) -> None:
    """A second writer blocks on the busy timeout (not 'database is locked') until the first commits."""
    import threading

    results: list[str] = []
    with store.transaction(oracle_project.db) as conn:
        conn.execute("INSERT INTO events (time, kind, message) VALUES (0, 'a', 'first')")
        t = threading.Thread(target=lambda: (rounds.mark_scored(oracle_project, None), results.append("ok")))
        t.start()
        t.join(0.3)
        assert results == []  # still waiting for our lock
    t.join(10)
    assert results == ["ok"]
    assert rounds.current_round(oracle_project).state is rounds.RoundState.SCORED


def test_migrations_are_complete_statements() -> None:
    """Each migration splits into statements that sqlite accepts on a fresh database."""
    conn = sqlite3.connect(":memory:")
    for script in store.MIGRATIONS:
        for statement in store._statements(script):
            conn.execute(statement)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert set(TABLES) <= names


def test_list_cases_hides_pool_reference_labels(oracle_project) -> None:
    from assft_core.data.records import Split
    from assft_core.session.project import list_cases

    cases = {c.case_id: c for c in list_cases(oracle_project)}
    assert sorted(cases) == ["p0", "p1", "p2", "p3", "t0", "t1"]
    assert all(cases[c].reference_label is None for c in ("p0", "p1", "p2", "p3"))
    assert cases["t0"].reference_label.name == "t0.nii.gz" and cases["t1"].site == "B"
    assert [c.case_id for c in list_cases(oracle_project, Split.TEST)] == ["t0", "t1"]
