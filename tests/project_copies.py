"""Fresh project copies for tests: a project is built once per session as a template (import and
checks take ~0.5 s), and each test gets its own copy."""

from __future__ import annotations

import shutil
from pathlib import Path

from assft_core.session.project import Project, open_project


def project_copy(template: Path, tmp_path: Path) -> Project:
    """A copy of the template project in `tmp_path/proj`, opened; stored model paths still point
    at the template's (shared, read-only) model."""
    shutil.copytree(template, tmp_path / "proj")
    return open_project(tmp_path / "proj")
