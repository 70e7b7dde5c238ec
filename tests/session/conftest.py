"""Fixtures of the session tests: a tiny MSD-style dataset (8³ NIfTI) and projects made from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assft_core.config import ProjectConfig
from assft_core.session.project import create_project

from project_copies import oracle_and_expert_fixtures
from session_factories import AFFINE, label_map, make_dataset, write_nifti  # noqa: F401


@pytest.fixture()
def model_config(tmp_path: Path) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"backbone": "unet", "channels": [8, 16]}))
    return path


def _template(root: Path, oracle: bool) -> Path:
    data = make_dataset(root / "data", pool_labels=oracle)
    model = root / "model.json"
    model.write_text(json.dumps({"backbone": "unet"}))
    create_project(root / "proj", data, model, config=ProjectConfig(budget=2), oracle=oracle)
    return root / "proj"


_oracle_template, _expert_template, oracle_project, expert_project = oracle_and_expert_fixtures(_template)
