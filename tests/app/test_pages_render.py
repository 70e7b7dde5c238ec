"""Every page renders on a missing folder, an invalid folder and a fresh project, without exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.ui import NO_PROJECT

PAGES = ["project", "query", "labels", "finetune"]


@pytest.mark.parametrize("page", PAGES)
def test_page_without_project_says_what_to_do(run_page, page: str) -> None:
    at = run_page(page, None)
    assert not at.exception
    assert [i.value for i in at.info] == [NO_PROJECT]


@pytest.mark.parametrize("page", PAGES)
def test_page_on_a_folder_that_is_not_a_project(run_page, page: str, tmp_path: Path) -> None:
    at = run_page(page, tmp_path)
    assert not at.exception
    assert "is not an ASSFT project" in at.error[0].value
    assert at.info[0].value == NO_PROJECT


@pytest.mark.parametrize("page", PAGES)
def test_page_on_a_fresh_project(run_page, page: str, oracle_project) -> None:
    at = run_page(page, oracle_project.folder)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
