"""The demo project: the demo corpus (built when missing) + the shipped demo model, in oracle mode.

Used by `assft demo project` (what `scripts/dashboard.sh` runs before opening the dashboard) and
`assft demo run` (the whole loop headless). A demo project labels with the corpus's reference
labels (the oracle), marked as such everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from assft_core.config import ProjectConfig
from assft_core.errors import StateError
from assft_core.fsutil import atomic_write_bytes
from assft_core.session.project import Project, create_project, open_project
from assft_core.session.store import STORE_NAME

DEFAULT_PROJECT = Path("demo_project")
RUN_SETTINGS = "demo_run.json"


def is_project(folder: Path) -> bool:
    """True when `folder` holds a project store."""
    return (Path(folder) / STORE_NAME).is_file()


def ensure_demo_project(
    folder: Path,
    corpus: Path,
    *,
    layout: str = "unbalanced",
    size: str = "full",
    seed: int = 0,
    model: Path | None = None,
    config: ProjectConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Project, bool]:
    """Open the demo project at `folder`, or create it (building the corpus first when missing).

    Args:
        folder: the project folder.
        corpus: the demo corpus folder (built with `layout`, `seed`, `size` when absent or empty).
        layout / size / seed: the corpus's parameters.
        model: model folder (default: the shipped demo model).
        config: project settings (default: `ProjectConfig()`).
        log: progress lines for people.

    Returns:
        The project and whether it was created now.

    Raises:
        DataError: when `corpus` holds something other than this demo corpus.
        ModelError: when the shipped demo model is missing and no `model` is given.
        StateError: when `folder` is a non-empty folder without a project.
    """
    from assft_core.data.demo.builder import build_demo_corpus

    say = log or (lambda line: None)
    if is_project(folder):
        return open_project(folder), False
    if model is None:
        from assft_core.models.pretrain import demo_model_dir

        model = demo_model_dir()
    say(f"demo corpus ({layout}, {size}, seed {seed}): {corpus} (built now if missing)")
    build_demo_corpus(corpus, layout=layout, seed=seed, size=size)
    say(f"creating the demo project {folder} (oracle mode, model {model})")
    return create_project(folder, corpus, model, config=config, oracle=True), True


def check_run_settings(project: Project, settings: Mapping[str, Any]) -> None:
    """Record a headless demo run's settings, or refuse different ones for the same project.

    A rerun continues the same experiment: its table must not mix strategies or step counts.

    Raises:
        StateError: naming the differing settings and the fix.
    """
    path = project.artifact_path(RUN_SETTINGS)
    wanted = json.loads(json.dumps(dict(settings), default=str))
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        if diff:
            shown = ", ".join(f"{k}: {saved.get(k)!r} then, {wanted.get(k)!r} now" for k in diff)
            raise StateError(
                f"{project.folder} holds a demo run with other settings ({shown}); rerun with the same "
                "settings to continue it, or pass --project NEW_FOLDER for a new run."
            )
        return
    atomic_write_bytes(path, json.dumps(wanted, indent=1).encode())
