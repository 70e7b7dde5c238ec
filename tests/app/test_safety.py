"""Dashboard settings that hold whatever the launch folder (issue 20, item 4)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.safety import SAFE_OPTIONS, launch_command, project_allowed, refusal, unsafe_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_launch_command_carries_every_safe_option() -> None:
    cmd = launch_command("/p", ["--server.port=8502"])
    assert cmd[cmd.index("run") + 1] == str(ROOT / "app" / "main.py")  # absolute: any folder works
    for flag in ("--server.address=127.0.0.1", "--browser.gatherUsageStats=false", "--server.maxUploadSize=2048",
                 "--client.showErrorDetails=none"):
        assert flag in cmd
    assert cmd[-3:] == ["--", "--project", "/p"] and cmd.index("--server.port=8502") < cmd.index("--")


def test_streamlits_defaults_outside_the_repository_are_refused() -> None:
    defaults = {"server.address": None, "browser.gatherUsageStats": True, "server.maxUploadSize": 200}
    problems = unsafe_settings(defaults.get, {})
    assert len(problems) == 3 and "every interface" in problems[0]
    assert unsafe_settings(SAFE_OPTIONS.get, {}) == []
    assert unsafe_settings({**SAFE_OPTIONS, "server.address": "0.0.0.0"}.get, {"ASSFT_SERVE_NETWORK": "1"}) == []


def test_main_serves_nothing_when_started_with_unsafe_settings(monkeypatch) -> None:
    import app.safety

    monkeypatch.setattr(app.safety, "SAFE_OPTIONS", {**SAFE_OPTIONS, "server.maxUploadSize": 10**9})
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception
    assert "Not serving project data" in at.error[0].value
    assert at.title == []  # no page ran


def _boom() -> None:
    from app.safety import show_unexpected
    import streamlit as st

    try:
        raise RuntimeError("/secret/install/path/module.py exploded")
    except RuntimeError as exc:
        show_unexpected(exc, st.error)


def test_an_unexpected_error_is_a_short_line_with_a_log_reference(caplog) -> None:
    at = AppTest.from_function(_boom).run()
    assert not at.exception
    (error,) = at.error
    assert "Reference `" in error.value and "/secret" not in error.value
    assert any("/secret" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_project_folders_are_restricted_to_the_roots(tmp_path: Path, run_page, oracle_project, monkeypatch) -> None:
    env = {"ASSFT_PROJECT_ROOTS": str(tmp_path / "allowed")}
    assert project_allowed(str(tmp_path / "allowed" / "p"), None, env)
    assert not project_allowed(str(tmp_path / "allowed" / ".." / "other"), None, env)
    assert project_allowed("/etc", "/etc", env)  # named on the command line by whoever started the server
    assert refusal("/etc", env) == refusal("/nonexistent", env).replace("/nonexistent", "/etc")
    monkeypatch.setenv("ASSFT_PROJECT_ROOTS", str(tmp_path / "allowed"))
    at = run_page("project", oracle_project.folder)
    assert not at.exception
    assert "outside the folders this dashboard may open" in at.error[0].value
