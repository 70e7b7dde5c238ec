"""`assft bench dashboard`: how long the dashboard takes to switch pages and to move a slice.

On a synthetic scored project of N pool cases (`dashboard_project.scored_project`, or
`--project` for an existing one), every page script (pages/*.py) is run under Streamlit's
AppTest with the project in `st.session_state`, as the dashboard's entry script leaves it:

    page switch   a fresh AppTest run of the page (a new script run; the process's Streamlit
                  caches stay, as in a running server). The first run of each page is reported
                  apart (cold caches: the UMAP fit, the case load); the median and max are over
                  the `--repeats` runs after it.
    slice move    on the Viewer: set the axial slice slider to another index and rerun the same
                  AppTest (what a drag of the slider costs), median and max over `--moves` moves.

Two clocks per run: the page script's own run (`script_s`, the number judged against the goals:
what the server spends on a switch or a rerun) and AppTest's wall time around `run()`, which
adds AppTest's set-up (a fresh AppTest scans the installed Streamlit components: ~0.4 s on the
2-core machine, paid once by a real server; `apptest_floor` is that for a one-line page).
Either way only the server side is measured: sending the figures to the browser and the
browser's paint are not in these numbers. The engine modules are imported first (`app.main`
imports them, as the entry script does before any page), and that time is reported apart.

The JSON holds the machine, the load average at the start, the exact command and the timings;
a Markdown table is written beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DASHBOARD_VERSION = 1
VIEWER_PAGE = "viewer"
SLICE_KEY_PREFIX = "viewer-axial-"  # the Viewer's axial slice slider: `viewer-axial-<case id>`
# The goals (#18), on a scored 200-case project: what the table's verdict column checks.
SWITCH_GOAL_S = 1.0
SLICE_GOAL_S = 0.5


def dashboard_pages(root: Path | None = None) -> list[Path]:
    """The dashboard's page files (`app.main.PAGES` that exist), from the repository at `root`
    (default: this checkout), which is put on `sys.path` (pages import `app`, not an installed
    package).

    Raises:
        StateError: when the dashboard is not in this checkout (an installed wheel has no pages).
    """
    from assft_core.errors import StateError

    root = root or Path(__file__).resolve().parents[2]
    if not (root / "app" / "main.py").is_file():
        raise StateError(f"no dashboard at {root / 'app'}; the dashboard benchmark runs from a source checkout.")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from app.main import available_pages

    return [path for path, _title, _icon in available_pages(root / "pages")]


def timing(times: Sequence[float], first_s: float | None = None) -> dict[str, Any]:
    """Median, max and every timing (seconds), with the first run kept apart when given.

    Raises:
        ValueError: when `times` is empty.
    """
    if not times:
        raise ValueError("no timings")
    out: dict[str, Any] = {"median_s": statistics.median(times), "max_s": max(times), "times_s": list(times)}
    if first_s is not None:
        out["first_s"] = first_s
    return out


@dataclasses.dataclass
class RunTime:
    """One AppTest run: `wall_s` around `AppTest.run` (AppTest's own set-up included: a fresh
    AppTest scans the installed Streamlit components, which a server does once), `script_s` of
    the page script's run alone (what a page switch or rerun costs the server), `script_cpu_s`
    the CPU seconds of the script's thread in that run (hardly moved by other processes on a
    shared machine, where the wall clock of the same run varies several-fold), and the
    exceptions the page showed."""

    wall_s: float
    script_s: float
    script_cpu_s: float
    exceptions: list[str]


@contextmanager
def page_runs(project_dir: Path, timeout_s: float = 120.0) -> Iterator[tuple[Callable[[Path], Any], Callable[[Any], RunTime]]]:
    """Timed AppTest runs of dashboard pages on one project, set up as the dashboard runs them.

    Yields `(new, run)`: `new(page)` is a fresh AppTest of a page script with the project folder
    in `st.session_state` (not run); `run(at)` runs it (the first time: a page switch; again: a
    rerun, e.g. after a widget change) and returns the run's `RunTime`. While the block runs, $ASSFT_PROJECT names the project (as
    `--project DIR` at the server's start does: the pages open only a project so named or under
    the allowed roots), the dashboard folder is importable, Streamlit's warning about session
    state set before a run is filtered, and the script runner's run is timed. All of it is
    undone afterwards (and `sys.modules["__main__"]`, which AppTest points at the page it ran,
    restored).
    """
    from streamlit.runtime.scriptrunner import script_runner
    from streamlit.testing.v1 import AppTest

    dashboard_pages()  # puts the checkout on sys.path, or says there is no dashboard here
    from app.ui import PROJECT_ENV, PROJECT_KEY

    # Setting session_state before a run is what AppTest is for; streamlit still warns about it
    # (a filter, not a level: streamlit resets its loggers' levels when it loads its config).
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: "missing ScriptRunContext" not in record.getMessage()
    )
    # The script's own time: AppTest runs it in a thread through ScriptRunner._run_script (a
    # Streamlit internal, wrapped only inside this block), so its set-up stays out.
    script_times: list[tuple[float, float]] = []  # (wall, CPU of the script's thread)
    runner_run = script_runner.ScriptRunner._run_script

    def timed_script(self: Any, rerun_data: Any) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            runner_run(self, rerun_data)
        finally:
            script_times.append((time.perf_counter() - start, time.thread_time() - cpu))

    def new(page: Path) -> Any:
        at = AppTest.from_file(str(page), default_timeout=timeout_s)
        at.session_state[PROJECT_KEY] = str(project_dir)
        return at

    def run(at: Any) -> RunTime:
        before = len(script_times)
        start = time.perf_counter()
        at.run()
        wall = time.perf_counter() - start
        # One script run per AppTest run (a rerun the page asks for would add one: counted in).
        mine = script_times[before:]
        return RunTime(wall, sum(w for w, _ in mine), sum(c for _, c in mine), [str(e.value) for e in at.exception])

    main_module, named = sys.modules["__main__"], os.environ.get(PROJECT_ENV)
    os.environ[PROJECT_ENV] = str(project_dir)
    script_runner.ScriptRunner._run_script = timed_script
    try:
        yield new, run
    finally:
        script_runner.ScriptRunner._run_script = runner_run
        sys.modules["__main__"] = main_module
        if named is None:
            os.environ.pop(PROJECT_ENV, None)
        else:
            os.environ[PROJECT_ENV] = named


def _timings(runs: Sequence[RunTime], first: RunTime | None = None) -> dict[str, Any]:
    """`timing` of the script times; under "cpu" of the script's CPU seconds, under "wall" of
    AppTest's wall times."""
    return {**timing([r.script_s for r in runs], first.script_s if first else None),
            "cpu": timing([r.script_cpu_s for r in runs], first.script_cpu_s if first else None),
            "wall": timing([r.wall_s for r in runs], first.wall_s if first else None)}


def time_pages(project_dir: Path, pages: Sequence[Path], *, repeats: int = 3,
               timeout_s: float = 120.0) -> dict[str, dict[str, Any]]:
    """Page-switch times: per page, a first fresh AppTest run, then `repeats` fresh runs.

    Args:
        project_dir: an open-able project folder.
        pages: page scripts, timed in this order.
        repeats: timed runs after the first, ≥ 1.
        timeout_s: AppTest's limit per run.

    Returns:
        {page stem: script seconds as `timing(...)` (first run apart), "wall": the same of
        AppTest's wall seconds, "exceptions": the messages the last run showed on the page}.
    """
    out: dict[str, dict[str, Any]] = {}
    with page_runs(project_dir, timeout_s) as (new, run):
        for page in pages:
            first = run(new(page))
            runs = [run(new(page)) for _ in range(repeats)]
            out[page.stem] = {**_timings(runs, first), "exceptions": runs[-1].exceptions}
    return out


def time_apptest_floor(folder: Path, *, repeats: int = 3, timeout_s: float = 120.0) -> dict[str, Any]:
    """AppTest's wall seconds for a fresh run of a one-line page (`st.write`), written to
    `folder`: the part of every page's wall time that is AppTest's own set-up, not the page."""
    from streamlit.testing.v1 import AppTest

    page = folder / "empty_page.py"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text('import streamlit as st\n\nst.write("empty page")\n')
    AppTest.from_file(str(page), default_timeout=timeout_s).run()  # the first also imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        AppTest.from_file(str(page), default_timeout=timeout_s).run()
        times.append(time.perf_counter() - start)
    return timing(times)


def slice_indices(current: int, top: int, moves: int) -> list[int]:
    """`moves` slice indices in [0, top] to move to from `current`, each differing from the one
    before (a slider drag: one step at a time, turning at the ends)."""
    out, index, step = [], current, 1
    for _ in range(moves):
        if not 0 <= index + step <= top:
            step = -step
        index = min(max(index + step, 0), top)
        out.append(index)
    return out


def time_slice_moves(project_dir: Path, viewer: Path, *, moves: int = 5, timeout_s: float = 120.0) -> dict[str, Any]:
    """Slice-move times on the Viewer: one run to open the case, then `moves` reruns of the same
    AppTest after setting the axial slider (`SLICE_KEY_PREFIX`) to the next index of `slice_indices`.

    Returns:
        Script seconds of the moves as `timing(...)`, "wall" the same of AppTest's wall seconds,
        with "case_id", "open_s" (the opening run's script seconds) and "indices".

    Raises:
        RuntimeError: when the Viewer shows no axial slider (no scores, or the page failed; the
            page's exceptions are in the message), or fails after a move.
    """
    with page_runs(project_dir, timeout_s) as (new, run):
        at = new(viewer)
        opened = run(at)
        sliders = [s for s in at.slider if str(s.key or "").startswith(SLICE_KEY_PREFIX)]
        if not sliders:
            raise RuntimeError(f"the Viewer shows no axial slice slider on {project_dir} (exceptions: {opened.exceptions})")
        key = sliders[0].key
        indices = slice_indices(int(sliders[0].value), int(sliders[0].max), moves)
        runs = []
        for index in indices:
            at.slider(key=key).set_value(index)
            runs.append(run(at))
        if runs[-1].exceptions:
            raise RuntimeError(f"the Viewer failed after a slice move: {runs[-1].exceptions}")
    return {**_timings(runs), "case_id": key.removeprefix(SLICE_KEY_PREFIX), "open_s": opened.script_s,
            "indices": indices}


def run_dashboard(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build (or open) the project, time every page and the slice moves; returns the report.

    Raises:
        StateError: when `--project` is not a project or there is no dashboard checkout.
    """
    from assft_core.bench.report import command_line, load_note, machine_info, utc_stamp
    from assft_core.session.project import list_cases, open_project

    note = load_note()  # before the build: the load the benchmark found, not the one it made
    with _work_folder(args.work) as work:
        build_s = None
        if args.project:
            project = open_project(args.project)
        else:
            from assft_core.bench.dashboard_project import scored_project

            start = time.perf_counter()
            project = scored_project(work, args.cases, n_test=args.test_cases, shape=tuple(args.shape), seed=args.seed)
            build_s = time.perf_counter() - start
            log(f"built a scored project of {args.cases} pool cases in {build_s:.0f} s: {project.folder}")
        start = time.perf_counter()
        pages = dashboard_pages()  # imports app.main, which imports the engine as the server does
        import_s = time.perf_counter() - start
        log(f"engine imported in {import_s:.1f} s; timing {len(pages)} pages × {1 + args.repeats} runs")
        per_page = time_pages(project.folder, pages, repeats=args.repeats, timeout_s=args.timeout)
        log(f"timing {args.moves} slice moves on the Viewer")
        slice_move = time_slice_moves(project.folder, next(p for p in pages if p.stem == VIEWER_PAGE),
                                      moves=args.moves, timeout_s=args.timeout)
        floor = time_apptest_floor(work / "apptest-floor", repeats=args.repeats, timeout_s=args.timeout)
        n_pool = sum(1 for c in list_cases(project) if c.split.value == "pool")
    return {
        "version": DASHBOARD_VERSION,
        "created_utc": utc_stamp(),
        "machine": dataclasses.asdict(machine_info("cpu")),
        "note": note + "; seconds of the page script's run on the server (AppTest), not the browser's paint",
        "command": command_line(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("func", "work", "out", "force")},
        "project": {"pool_cases": n_pool, "built_s": build_s, "synthetic": not args.project},
        "engine_import_s": import_s,
        "apptest_floor": floor,
        "goals": {"page_switch_s": SWITCH_GOAL_S, "slice_move_s": SLICE_GOAL_S},
        "pages": per_page,
        "slice_move": slice_move,
    }


@contextmanager
def _work_folder(work: str | None) -> Iterator[Path]:
    if work:
        yield Path(work)
        return
    with tempfile.TemporaryDirectory(prefix="assft-dashboard-") as tmp:
        yield Path(tmp) / "work"


def markdown_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: per page the script's first / median / max seconds and
    AppTest's median wall seconds, then the slice move, each against its goal."""

    def verdict(seconds: float, goal: float) -> str:
        return "meets" if seconds <= goal else "MISSES"

    switch, move = report["goals"]["page_switch_s"], report["goals"]["slice_move_s"]
    lines = [
        f"`{' '.join(report['command'])}` — {report['created_utc']}, {report['machine']['cpu_count']} CPU(s), "
        f"{report['project']['pool_cases']} pool cases; {report['note']}",
        "",
        f"| page | first run s | switch median s | switch max s | ≤ {switch:g} s (median) | CPU median s "
        "| AppTest wall median s | errors |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, t in report["pages"].items():
        lines.append(f"| {name} | {t['first_s']:.2f} | {t['median_s']:.2f} | {t['max_s']:.2f} | "
                     f"{verdict(t['median_s'], switch)} | {t['cpu']['median_s']:.2f} | {t['wall']['median_s']:.2f} | "
                     f"{len(t['exceptions'])} |")
    m = report["slice_move"]
    lines += [
        "",
        f"Slice move on the Viewer ({m['case_id']}, {len(m['times_s'])} moves): median {m['median_s']:.2f} s, "
        f"max {m['max_s']:.2f} s ({verdict(m['median_s'], move)} the ≤ {move:g} s goal; CPU median "
        f"{m['cpu']['median_s']:.2f} s; AppTest wall median {m['wall']['median_s']:.2f} s); opening the page "
        f"{m['open_s']:.2f} s.",
        "",
        f"Seconds are the page script's run (server side); CPU: its thread's CPU seconds (steady when other "
        f"processes share the machine). AppTest's wall time adds its own set-up: a fresh "
        f"AppTest of a one-line page takes {report['apptest_floor']['median_s']:.2f} s (median) here. Engine "
        f"import before the first page: {report['engine_import_s']:.1f} s.",
    ]
    return "\n".join(lines) + "\n"
