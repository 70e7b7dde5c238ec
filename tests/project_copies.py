"""Fresh project copies for tests: a project is built once per session as a template (import and
checks take ~0.5 s), and each test gets its own copy."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from assft_core.session.project import Project, open_project


def project_copy(template: Path, tmp_path: Path) -> Project:
    """A copy of the template project in `tmp_path/proj`, opened; stored model paths still point
    at the template's (shared, read-only) model."""
    shutil.copytree(template, tmp_path / "proj")
    return open_project(tmp_path / "proj")


def oracle_and_expert_fixtures(make_template: Callable[[Path, bool], Path]) -> tuple[object, ...]:
    """The fixtures `oracle_project` and `expert_project` (fresh copies of two session templates)
    for a test folder whose `make_template(root, oracle)` builds a project under `root`.

    Use in a conftest: `_oracle_template, _expert_template, oracle_project, expert_project =
    oracle_and_expert_fixtures(make)` (pytest finds fixtures by these names).
    """

    @pytest.fixture(scope="session")
    def _oracle_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return make_template(tmp_path_factory.mktemp("oracle"), True)

    @pytest.fixture(scope="session")
    def _expert_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return make_template(tmp_path_factory.mktemp("expert"), False)

    @pytest.fixture()
    def oracle_project(tmp_path: Path, _oracle_template: Path) -> Project:
        """A fresh demo-mode (oracle) project, round 0 open; every case has a reference label."""
        return project_copy(_oracle_template, tmp_path)

    @pytest.fixture()
    def expert_project(tmp_path: Path, _expert_template: Path) -> Project:
        """A fresh expert-mode project, round 0 open; only p0 of the pool came labelled."""
        return project_copy(_expert_template, tmp_path)

    return _oracle_template, _expert_template, oracle_project, expert_project
