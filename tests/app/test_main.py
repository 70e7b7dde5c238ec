"""The entry script: project selection and the page list."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.main import available_pages
from app.ui import NO_PROJECT, PROJECT_KEY, project_arg

ROOT = Path(__file__).resolve().parents[2]


def test_project_arg_prefers_the_command_line_then_the_environment() -> None:
    env = {"ASSFT_PROJECT": "/from/env"}
    assert project_arg(["--project", "/from/argv"], env) == "/from/argv"
    assert project_arg(["--server.port", "1", "--project=/x"], env) == "/x"  # unknown arguments ignored
    assert project_arg([], env) == "/from/env"
    assert project_arg([], {}) is None


def test_available_pages_follow_the_files_present(tmp_path: Path) -> None:
    for name in ("viewer.py", "project.py"):
        (tmp_path / name).write_text("")
    assert [(p.name, title) for p, title, _ in available_pages(tmp_path)] == [
        ("project.py", "Project"),
        ("viewer.py", "Viewer"),
    ]
    real = [p.name for p, _, _ in available_pages()]
    assert real[:4] == ["project.py", "query.py", "labels.py", "finetune.py"]


def test_main_opens_the_project_page_and_says_what_to_do_without_a_project() -> None:
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Project"
    assert NO_PROJECT in [i.value for i in at.info]
    assert at.sidebar.text_input[0].value == ""


def test_main_takes_the_project_from_the_environment(monkeypatch, oracle_project) -> None:
    monkeypatch.setenv("ASSFT_PROJECT", str(oracle_project.folder))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception
    assert at.session_state[PROJECT_KEY] == str(oracle_project.folder)
    assert "Round 0: **open, the pool is not scored yet**" in at.info[0].value


def test_sidebar_lists_active_jobs_on_every_page(monkeypatch, oracle_project, fake_jobs) -> None:
    from assft_core.session import jobs

    job_id = jobs.submit_job(oracle_project, "score", {"round": 0})
    monkeypatch.setenv("ASSFT_PROJECT", str(oracle_project.folder))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception
    (bar,) = at.sidebar.get("progress")
    assert bar.proto.text == f"score #{job_id}: queued"
    jobs.cancel_job(oracle_project, job_id, grace_s=0.0)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert at.sidebar.get("progress") == []


def test_main_imports_every_engine_module_a_page_imports() -> None:
    """The entry script imports the engine once, before any page (cold-start race, issue 20)."""
    import re

    from app.main import ENGINE_MODULES

    used = set()
    for path in [*(ROOT / "pages").glob("*.py"), *(ROOT / "app").glob("*.py")]:
        used |= set(re.findall(r"^from (assft_core\.[a-z_.]+) import", path.read_text(), re.M))
    packages = {"assft_core.session", "assft_core.query.strategies"}  # re-export packages: their modules are listed
    missing = sorted(m for m in used - packages if m not in ENGINE_MODULES)
    assert missing == []
