"""Fixtures of the round-engine tests: the tiny demo corpus, a tiny model, projects made from them.

Heavy artefacts are built once per session (corpus, model, a project scored at round 0); each
test gets a fresh copy of a project, so tests never share state. The model is a random two-level
BatchNorm UNet saved with `save_model` (made here, never shipped); training runs a handful of
32³ steps, so the numbers are plumbing checks, not accuracy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from assft_core.session.project import Project, create_project

from project_copies import project_copy
from engine_factories import CLASSES, PATCH, ROI, CliRun, engine_config, run_cli, tiny_model  # noqa: F401


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random UNet's model folder (read-only for tests)."""
    return tiny_model(tmp_path_factory.mktemp("tiny_model") / "model")


@pytest.fixture(scope="session")
def _fresh_template(tmp_path_factory: pytest.TempPathFactory, tiny_demo_corpus: Path, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("engine_fresh") / "proj"
    create_project(root, tiny_demo_corpus, tiny_model_dir, config=engine_config(), oracle=True)
    return root


@pytest.fixture(scope="session")
def scored_template(tmp_path_factory: pytest.TempPathFactory, _fresh_template: Path) -> tuple[Path, CliRun]:
    """The fresh project after `assft score -p PROJECT` (the slow step most tests share), with that
    command's run. Read-only: tests copy it (`scored_project`)."""
    root = tmp_path_factory.mktemp("engine_scored") / "proj"
    shutil.copytree(_fresh_template, root)
    return root, run_cli("score", "-p", root, "--device", "cpu")


@pytest.fixture()
def fresh_project(tmp_path: Path, _fresh_template: Path) -> Project:
    """An oracle project on the tiny demo corpus with the tiny model, round 0 open."""
    return project_copy(_fresh_template, tmp_path)


@pytest.fixture()
def scored_project(tmp_path: Path, scored_template: tuple[Path, CliRun]) -> Project:
    """The same project with round 0 scored (query table stored)."""
    return project_copy(scored_template[0], tmp_path)


@pytest.fixture()
def labelled_project(scored_project: Project) -> Project:
    """The scored project after round 0's query (2 picks), approval and oracle labels."""
    from assft_core.session import labels, rounds
    from assft_core.session.query import propose_round

    propose_round(scored_project, budget=2)
    rounds.approve(scored_project)
    labels.label_with_oracle(scored_project)
    return scored_project
