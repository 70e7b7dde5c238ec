"""Fixtures of the session tests: a tiny MSD-style dataset (8³ NIfTI) and projects made from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assft_core.config import ProjectConfig
from assft_core.session.project import Project, create_project

from project_copies import project_copy
from session_factories import AFFINE, label_map, make_dataset, write_nifti  # noqa: F401


@pytest.fixture()
def model_config(tmp_path: Path) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"backbone": "unet", "channels": [8, 16]}))
    return path


def _template(factory: pytest.TempPathFactory, oracle: bool) -> Path:
    """A project built once per test session; tests get copies (import + checks take ~0.5 s)."""
    root = factory.mktemp("oracle" if oracle else "expert")
    data = make_dataset(root / "data", pool_labels=oracle)
    model = root / "model.json"
    model.write_text(json.dumps({"backbone": "unet"}))
    create_project(root / "proj", data, model, config=ProjectConfig(budget=2), oracle=oracle)
    return root / "proj"


@pytest.fixture(scope="session")
def _oracle_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _template(tmp_path_factory, oracle=True)


@pytest.fixture(scope="session")
def _expert_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _template(tmp_path_factory, oracle=False)


@pytest.fixture()
def oracle_project(tmp_path: Path, _oracle_template: Path) -> Project:
    """A fresh copy of a demo-mode project on the tiny dataset (every case has a reference label)."""
    return project_copy(_oracle_template, tmp_path)


@pytest.fixture()
def expert_project(tmp_path: Path, _expert_template: Path) -> Project:
    """A fresh copy of an expert-mode project: only p0 of the pool came labelled."""
    return project_copy(_expert_template, tmp_path)
