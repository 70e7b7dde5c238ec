"""ASSFT Studio dashboard: `streamlit run app/main.py -- --project DIR`.

The entry script only chooses the project (see `app.ui`) and the pages; each page in `pages/` is a
thin view over `assft_core`. A page appears when its file exists, so adding one is one entry in
`PAGES`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAVICON = Path(__file__).resolve().parent / "favicon.png"
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/, not the repository, on the path
    sys.path.insert(0, str(ROOT))

import importlib  # noqa: E402
import os  # noqa: E402

import streamlit as st  # noqa: E402

from app.jobs_widget import jobs_sidebar  # noqa: E402
from app.safety import project_allowed, show_unexpected, unsafe_settings  # noqa: E402
from app.ui import PROJECT_KEY, project_arg  # noqa: E402
from assft_core.errors import AssftError  # noqa: E402
from assft_core.session.project import open_project  # noqa: E402

# Every engine module a page imports, imported here once, before any page runs, so which page a
# session opens first never decides the import order (the engine's import graph is acyclic too:
# tests/engine/test_import_order.py).
ENGINE_MODULES: tuple[str, ...] = (
    "assft_core.bench.schema",
    "assft_core.config",
    "assft_core.data.records",
    "assft_core.errors",
    "assft_core.models.card",
    "assft_core.models.inference",
    "assft_core.query.strategies.base",
    "assft_core.query.table",
    "assft_core.session.estimate",
    "assft_core.session.evaluation",
    "assft_core.session.jobs",
    "assft_core.session.model_views",
    "assft_core.session.paths",
    "assft_core.session.pick_words",
    "assft_core.session.progress",
    "assft_core.session.project",
    "assft_core.session.query",
    "assft_core.session.round_change",
    "assft_core.session.rounds",
    "assft_core.session.views",
    "assft_core.session.workspace",
    "assft_core.viz.coverage",
    "assft_core.viz.curves",
    "assft_core.viz.embedding",
    "assft_core.viz.slices",
)


def import_engine() -> None:
    """Import `ENGINE_MODULES` and the built-in query strategies (idempotent, thread-safe)."""
    for name in ENGINE_MODULES:
        importlib.import_module(name)
    importlib.import_module("assft_core.query.strategies.base").list_strategies()


import_engine()

# (file under pages/, title, icon): the working loop first, then the views that explain it.
PAGES: tuple[tuple[str, str, str], ...] = (
    ("project.py", "Project", ":material/folder_open:"),
    ("query.py", "Query", ":material/manage_search:"),
    ("labels.py", "Labels", ":material/label:"),
    ("finetune.py", "Fine-tune", ":material/model_training:"),
    ("embedding.py", "Embedding", ":material/scatter_plot:"),
    ("viewer.py", "Viewer", ":material/view_in_ar:"),
    ("compare.py", "Compare", ":material/leaderboard:"),
)


def available_pages(pages_dir: Path = ROOT / "pages") -> list[tuple[Path, str, str]]:
    """The `PAGES` entries whose file exists, as (absolute path, title, icon), in `PAGES` order."""
    return [(pages_dir / name, title, icon) for name, title, icon in PAGES if (pages_dir / name).is_file()]


def main() -> None:
    """Set up the page, the project chooser and background jobs in the sidebar, and run the selected page."""
    # A local file: a `:material/…:` page icon makes the browser fetch the favicon from
    # fonts.gstatic.com, and the dashboard never asks anything of a host beyond 127.0.0.1.
    st.set_page_config(page_title="ASSFT Studio", page_icon=str(FAVICON), layout="wide")
    st.set_option("client.showErrorDetails", "none")  # whatever the launch folder: no traceback in the browser
    problems = unsafe_settings(st.get_option)
    if problems:  # started without the safe options (another folder, no flags): serve no project data
        for problem in problems:
            st.error(f"Not serving project data: {problem}")
        st.stop()
    if PROJECT_KEY not in st.session_state:
        st.session_state[PROJECT_KEY] = project_arg(sys.argv[1:], os.environ) or ""
    with st.sidebar:
        st.text_input(
            "Project folder",
            key=PROJECT_KEY,
            help="The folder made by `assft init` (or `assft demo project`). Also: `--project DIR` or $ASSFT_PROJECT.",
        )
        folder = st.session_state[PROJECT_KEY]
        if folder and project_allowed(folder, project_arg(sys.argv[1:], os.environ)):
            try:
                jobs_sidebar(open_project(folder))
            except AssftError:
                pass  # a missing or invalid folder is explained on the page itself
    pages = [st.Page(str(path), title=title, icon=icon) for path, title, icon in available_pages()]
    page = st.navigation(pages)
    try:
        page.run()
    except Exception as exc:  # noqa: BLE001 - the last guard: a short line in the browser, the traceback in the log
        show_unexpected(exc, st.error)


if __name__ == "__main__":  # Streamlit runs the script as __main__; importing it (tests) runs nothing
    main()
