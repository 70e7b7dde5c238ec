"""Fixtures of the dashboard tests: tiny projects and the way pages are run under AppTest.

How a page is tested: the app is a multipage `st.navigation` app, so each page script is run on
its own with `AppTest.from_file("pages/<page>.py")`. Pages read the project folder from
`st.session_state[app.ui.PROJECT_KEY]` (what `app/main.py` sets from `--project` / $ASSFT_PROJECT /
the sidebar), so a test sets that key before `run()` (`run_page` below). $ASSFT_PROJECT is
removed for every test so the developer's environment cannot leak in.

Projects (`app_factories`): built once per session, copied for each test (`oracle_project`,
`expert_project`). Job kinds the pages start get a do-nothing handler and a launch recorder
(`fake_jobs`), so clicks are checked against the store without starting processes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `app` is not an installed package: pages import it from the repository
    sys.path.insert(0, str(ROOT))

from app_factories import PAGE_TIMEOUT_S, make_dataset, make_model_dir  # noqa: E402
from project_copies import oracle_and_expert_fixtures  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from app.ui import PROJECT_ENV, PROJECT_KEY  # noqa: E402
from assft_core.config import ProjectConfig  # noqa: E402
from assft_core.session import jobs  # noqa: E402
from assft_core.session.project import create_project  # noqa: E402



def _template(root: Path, oracle: bool) -> Path:
    # Expert mode imports every pool label as given: there only p0 comes labelled.
    data = make_dataset(root / "data", unlabelled=() if oracle else ("p1", "p2", "p3"))
    model = make_model_dir(root / "model")
    create_project(root / "proj", data, model, config=ProjectConfig(budget=2), oracle=oracle)
    return root / "proj"


_oracle_template, _expert_template, oracle_project, expert_project = oracle_and_expert_fixtures(_template)


@pytest.fixture(autouse=True)
def _no_project_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    # The tests' projects live under pytest's temporary folder: the dashboard may open them.
    monkeypatch.setenv("ASSFT_PROJECT_ROOTS", str(tmp_path_factory.getbasetemp()))


@pytest.fixture()
def run_page() -> Callable[..., AppTest]:
    """`run_page("query", folder)`: run pages/query.py with the project folder injected."""

    def run(page: str, folder: Path | str | None) -> AppTest:
        at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=PAGE_TIMEOUT_S)
        if folder is not None:
            at.session_state[PROJECT_KEY] = str(folder)
        return at.run()

    return run


@pytest.fixture()
def fake_jobs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The job kinds the pages start (score, train, evaluate) with a do-nothing handler, and
    `launch_detached` replaced by a recorder, so a click queues a real job in the store but no
    process starts. Returns the list of launched job ids.

    The kinds go into the engine's registry dict directly (restored after the test): the real
    handlers may be registered in this process by other tests, and `register_job_kind` refuses a
    second handler for a kind.
    """
    launched: list[int] = []
    for kind in ("score", "train", "evaluate"):
        monkeypatch.setitem(jobs._REGISTRY, kind, lambda ctx: {})
    monkeypatch.setattr(jobs, "launch_detached", lambda project, job_id: launched.append(job_id) or 0)
    return launched
