"""Progress of a round's long work: the sink it reports to and the per-step log the dashboard draws.

A job handler reports through a `ProgressSink` (a `JobContext` is one: progress and heartbeat in
the store, the stop flag from `assft job cancel`). Training steps also go, one JSON object a line,
to `progress.jsonl` in the job's folder, from which the dashboard draws the live loss curve and
which survives a page reload or a resumed job.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from assft_core.fsutil import atomic_write

PROGRESS_FILE = "progress.jsonl"


class ProgressSink(Protocol):
    """Where a round's work reports (satisfied by `assft_core.session.jobs.JobContext`)."""

    def progress(self, fraction: float, message: str = "", **metrics: Any) -> None:
        """Record the fraction done in [0, 1], a message and metrics (merged)."""
        ...

    def should_stop(self) -> bool:
        """True once a cancel was asked for: save what is needed and return soon."""
        ...


class StepLog:
    """The per-step training log `progress.jsonl` of one job folder.

    Each line is a `ProgressEvent.to_dict()` (phase, step, loss, lr, ETA ...). A resumed phase
    repeats the steps after its last checkpoint: the first repeated step drops the logged events
    it replaces, so the file always reads as one run.

    Args:
        run_dir: the job's folder.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / PROGRESS_FILE
        self.events: list[dict[str, Any]] = []
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    self.events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill

    def append(self, event: Mapping[str, Any]) -> None:
        """Log one step's event (dict with at least "phase" and "step")."""
        stale = [
            i for i, e in enumerate(self.events)
            if e.get("phase") == event["phase"] and int(e.get("step", 0)) >= int(event["step"])
        ]
        if stale:  # a resumed phase: drop the replaced steps and anything logged after them
            self.events = self.events[: stale[0]]
            self.events.append(dict(event))
            text = "".join(json.dumps(e) + "\n" for e in self.events)
            atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
            return
        self.events.append(dict(event))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(event)) + "\n")


class Echo:
    """Prints progress messages for people (terminal or `job.log`), at most one per `every_s`.

    Args:
        every_s: least seconds between two printed lines (the last line of a phase always prints).
        write: where lines go (default: stdout, flushed).
    """

    def __init__(self, every_s: float = 5.0, write: Callable[[str], None] | None = None) -> None:
        self.every_s = every_s
        self.write = write or (lambda line: print(line, file=sys.stdout, flush=True))
        self._last = 0.0

    def __call__(self, message: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            self.write(message)


def read_progress_events(run_dir: Path) -> list[dict[str, Any]]:
    """Training progress events of a job, from `run_dir/progress.jsonl` (one JSON object a line).

    The train job appends one `ProgressEvent.to_dict()` per step; a line cut short by a
    concurrent write (the last one) is skipped, so a live run can be read at any moment.

    Returns:
        Events in file order ([] when the file does not exist yet).
    """
    path = Path(run_dir) / PROGRESS_FILE
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


class CaseProgress:
    """Per-case progress of one phase, with a time-left estimate from the measured time per case.

    Reports `sink.progress(fraction, "<what>: done/total cases (case)", phase=..., cases_done=...,
    cases_total=..., eta_s=...)`, the fraction mapped into `share` of the job's bar, so a job made
    of several phases keeps one bar. `eta_s` is the mean time per finished case times the cases
    left, plus `later` units of the phases after this one at the same pace (None before the first
    case).

    Args:
        sink: where progress goes (None: nowhere, the calls are no-ops).
        phase: the phase's name in the job's metrics ("evaluate", "score:f0").
        what: the phase in words for the message ("evaluating f_0").
        total: the number of units (cases) the phase will do.
        share: (start, end) of the job's progress bar this phase covers.
        echo: prints each message for people (None: silent).
        later: units the job does after this phase at about this phase's pace (e.g. the second
            model of a scoring pass), counted in `eta_s`.
        clock: seconds (a monotonic clock; tests pass their own).
    """

    def __init__(self, sink: ProgressSink | None, phase: str, what: str, total: int,
                 share: tuple[float, float] = (0.0, 1.0), echo: Echo | None = None, later: int = 0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.sink, self.phase, self.what, self.total = sink, phase, what, max(int(total), 0)
        self.share, self.echo, self.later, self.clock = share, echo, max(int(later), 0), clock
        self.start = clock()

    def eta_s(self, done: int) -> float | None:
        """Seconds left after `done` units, from the mean time per unit so far (None before the first)."""
        if done <= 0 or self.total <= 0:
            return None
        return (self.clock() - self.start) / done * (max(self.total - done, 0) + self.later)

    def __call__(self, done: int, case_id: str = "", words: str = "cases") -> None:
        """Record that `done` of `total` units are finished (`case_id`: the last one)."""
        if self.sink is None:
            return
        lo, hi = self.share
        fraction = lo + (hi - lo) * (done / self.total if self.total else 1.0)
        message = f"{self.what}: {done}/{self.total} {words}" + (f" ({case_id})" if case_id else "")
        self.sink.progress(fraction, message, phase=self.phase, cases_done=done, cases_total=self.total,
                           eta_s=self.eta_s(done))
        if self.echo is not None:
            self.echo(message, force=done >= self.total)
