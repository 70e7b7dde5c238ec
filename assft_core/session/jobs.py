"""Jobs: long work (scoring, training, benchmarks) as detached processes tracked in the store.

A job is submitted (`queued`), launched as `python -m assft_core.session.runner --project P ID`
(what `assft job run` does) in its own session, so it outlives the shell or the dashboard that
started it, and run by `run_job`, which calls the handler registered for its kind with a
`JobContext`. The runner writes a
heartbeat every `ProjectConfig.heartbeat_s` seconds; a job whose heartbeat is older than
`stale_after_s` and whose process is gone is marked `dead` and can be resumed from the last
checkpoint in its run folder. At most one job of a kind is queued or running per project: a
partial unique index in the store refuses the second one, whichever thread or process asks.
"""

from __future__ import annotations

import enum
import importlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assft_core.config import to_dict
from assft_core.errors import StateError
from assft_core.fsutil import atomic_write_bytes
from assft_core.session import store
from assft_core.session.project import Project, open_project

# Modules that register job kinds when imported; each must exist (a missing one is an error).
# The round's kinds are the session's own; the benchmark sits above the session, so it registers
# its kind from its own package. Extra modules (plugins, tests) are named in $ASSFT_JOB_MODULES,
# comma-separated.
JOB_MODULES = (
    "assft_core.session.job_kinds",  # score, train, evaluate
    "assft_core.bench.jobs",  # bench
)
JOB_MODULES_ENV = "ASSFT_JOB_MODULES"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step_"
LOG_NAME = "job.log"
TRAINER_CHECKPOINT = "checkpoint.pt"  # assft_core.train.checkpoint.CHECKPOINT_NAME (not imported: no torch here)


class JobStatus(str, enum.Enum):
    """Life of a job; `queued` and `running` are the active states."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"  # process gone without a final status (crash, kill -9, reboot): resumable


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
RESUMABLE = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED)


class JobCancelled(Exception):
    """Raised inside a job's process when it receives SIGTERM (the cancel fallback)."""


@dataclass(frozen=True)
class JobInfo:
    """One row of the jobs table.

    Attributes:
        id: job id.
        kind: registered job kind ("score", "train", ...).
        params: the handler's parameters (JSON).
        status: see `JobStatus`.
        progress: fraction done in [0, 1].
        message: the handler's latest progress message.
        metrics: the handler's latest metrics (merged over progress calls, then its result).
        heartbeat: unix time (s) of the latest heartbeat, or None.
        pid / host: the process running it.
        run_dir: the job's folder (log, checkpoints, outputs).
        resume_from: checkpoint the current attempt resumes from, or None.
        cancel_requested: a cancel was asked for.
        error: the failure's message and traceback, or None.
        created_at / started_at / finished_at: unix times (s).
    """

    id: int
    kind: str
    params: dict[str, Any]
    status: JobStatus
    progress: float
    message: str
    metrics: dict[str, Any]
    heartbeat: float | None
    pid: int | None
    host: str | None
    run_dir: Path
    resume_from: Path | None
    cancel_requested: bool
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class JobContext:
    """What a job handler gets: the project, its parameters, progress, stop flag, run folder.

    Attributes:
        project: the open project.
        job_id: this job's id.
        params: the parameters given at submission.
        run_dir: this job's folder: write checkpoints via `checkpoint_path`, outputs anywhere in it.
        resume_from: the last checkpoint of an earlier attempt (None on a first run).
    """

    def __init__(
        self,
        project: Project,
        job_id: int,
        params: dict[str, Any],
        run_dir: Path,
        resume_from: Path | None,
        stop_event: threading.Event,
    ) -> None:
        self.project = project
        self.job_id = job_id
        self.params = params
        self.run_dir = run_dir
        self.resume_from = resume_from
        self._stop = stop_event

    def progress(self, fraction: float, message: str = "", **metrics: Any) -> None:
        """Record progress (fraction in [0, 1], clipped), a message and metrics (merged), and beat."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        with store.transaction(self.project.db) as conn:
            old = json.loads(conn.execute("SELECT metrics FROM jobs WHERE id = ?", (self.job_id,)).fetchone()[0])
            old.update(metrics)
            conn.execute(
                "UPDATE jobs SET progress = ?, message = ?, metrics = ?, heartbeat = ? WHERE id = ?",
                (fraction, message, json.dumps(old, default=float), time.time(), self.job_id),
            )

    def should_stop(self) -> bool:
        """True once a cancel was requested: save what is needed and return soon."""
        return self._stop.is_set()

    def checkpoint_path(self, step: int) -> Path:
        """Where the checkpoint of `step` goes (`run_dir/checkpoints/step_00000050.pt`).

        Write to a temporary name in the same folder and `os.replace` it here, so a kill never
        leaves a truncated checkpoint under this name; `latest_checkpoint` finds the highest step.
        """
        folder = self.run_dir / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{CHECKPOINT_PREFIX}{step:08d}.pt"


# A handler returns final metrics (or None); it raises to fail the job.
JobHandler = Callable[[JobContext], Mapping[str, Any] | None]
_REGISTRY: dict[str, JobHandler] = {}


def register_job_kind(kind: str, handler: JobHandler) -> None:
    """Register the handler of a job kind (in a module listed in `JOB_MODULES` or $ASSFT_JOB_MODULES,
    so the detached process registers it too).

    Raises:
        ValueError: when `kind` is registered to another handler already.
    """
    if _REGISTRY.get(kind, handler) is not handler:
        raise ValueError(f"job kind {kind!r} is already registered")
    _REGISTRY[kind] = handler


def job_handler(kind: str) -> JobHandler:
    """The handler of `kind`, importing job modules only until it is registered (a job module
    imports what its jobs run, torch included: a job should not pay for the others).

    Raises:
        StateError: naming the known kinds when `kind` is not registered.
        ModuleNotFoundError: when a module of `JOB_MODULES` or $ASSFT_JOB_MODULES does not exist.
    """
    for name in _job_module_names():
        if kind in _REGISTRY:
            break
        importlib.import_module(name)
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise StateError(f"unknown job kind {kind!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'}") from None


def _job_module_names() -> list[str]:
    extra = [m.strip() for m in os.environ.get(JOB_MODULES_ENV, "").split(",") if m.strip()]
    return [*extra, *JOB_MODULES]


def submit_job(project: Project, kind: str, params: Mapping[str, Any] | None = None) -> int:
    """Queue a job; its run folder gets `params.json` and the project's `config.json`.

    Returns:
        The new job's id.

    Raises:
        StateError: when the kind is unknown, or a job of this kind is already queued or running
            in the project (refused by the store, so concurrent callers cannot both succeed).
    """
    job_handler(kind)
    params = dict(params or {})
    try:
        with store.transaction(project.db) as conn:
            cur = conn.execute(
                "INSERT INTO jobs (kind, params, status, created_at) VALUES (?, ?, 'queued', ?)",
                (kind, json.dumps(params, default=str), time.time()),
            )
            job_id = int(cur.lastrowid or 0)
            run_dir = project.artifact_path("runs", f"job-{job_id:05d}")
            conn.execute("UPDATE jobs SET run_dir = ? WHERE id = ?", (project.relative(run_dir), job_id))
            store.add_event(conn, "job", f"job {job_id} ({kind}) queued", job_id=job_id, kind=kind)
    except sqlite3.IntegrityError:
        active = active_job_id(project, kind)
        raise StateError(
            f"a {kind!r} job (#{active}) is already queued or running in {project.folder}; wait for it, "
            f"or cancel it with `assft job cancel --project {project.folder} {active}`."
        ) from None
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "params.json", json.dumps(params, indent=2, default=str).encode())
    atomic_write_bytes(run_dir / "config.json", json.dumps(to_dict(project.config), indent=2).encode())
    return job_id


def launch_detached(project: Project, job_id: int) -> int:
    """Start the job in a new process and session (`python -m assft_core.session.runner --project P
    ID`, the same as `assft job run`, with a lighter start-up); returns its pid.

    stdout and stderr go to `job.log` in the job's run folder (appended on a resume).

    Raises:
        StateError: when the job is not queued.
    """
    job = get_job(project, job_id)
    if job.status is not JobStatus.QUEUED:
        raise StateError(f"job {job_id} is {job.status.value}, not queued; only a queued job can be launched.")
    job.run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "assft_core.session.runner", "--project", str(project.folder), str(job_id)]
    with open(job.run_dir / LOG_NAME, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    _CHILDREN.append(proc)
    _reap_children()
    with store.transaction(project.db) as conn:
        # The runner overwrites pid when it starts; until then this lets a crashed start be seen.
        conn.execute(
            "UPDATE jobs SET pid = ?, host = ?, heartbeat = ? WHERE id = ? AND status = 'queued'",
            (proc.pid, socket.gethostname(), time.time(), job_id),
        )
    return proc.pid


# Popen objects of launched jobs, polled so finished children do not stay zombies in a
# long-lived launcher (the dashboard).
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _reap_children() -> None:
    _CHILDREN[:] = [p for p in _CHILDREN if p.poll() is None]


def run_job(project: Project, job_id: int) -> JobStatus:
    """Run a queued job in this process (what `assft job run` does); returns its final status.

    Marks it running, beats in a background thread (which also picks up a cancel request), calls
    the handler, and records done / cancelled / failed with the handler's metrics or the error.
    SIGTERM raises `JobCancelled` in the handler (the cancel fallback).

    Raises:
        StateError: when the job is not queued (already run, or running elsewhere).
    """
    with store.transaction(project.db) as conn:
        row = _row(conn, job_id)
        if row["status"] != JobStatus.QUEUED.value:
            raise StateError(f"job {job_id} is {row['status']}; only a queued job can run (resume a dead one).")
        now = time.time()
        conn.execute(
            "UPDATE jobs SET status = 'running', pid = ?, host = ?, heartbeat = ?, started_at = ?, "
            "progress = 0, error = NULL WHERE id = ?",
            (os.getpid(), socket.gethostname(), now, now, job_id),
        )
        store.add_event(conn, "job", f"job {job_id} ({row['kind']}) started", job_id=job_id, pid=os.getpid())
    job = get_job(project, job_id)
    stop = threading.Event()
    if job.cancel_requested:  # cancelled between launch and start
        stop.set()
    done = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(project, job_id, stop, done), daemon=True)
    beat.start()
    previous = _install_sigterm()
    metrics: Mapping[str, Any] | None = None
    error: str | None = None
    try:
        ctx = JobContext(project, job_id, job.params, job.run_dir, job.resume_from, stop)
        metrics = job_handler(job.kind)(ctx)
        status = JobStatus.CANCELLED if stop.is_set() else JobStatus.DONE
    except JobCancelled:
        status = JobStatus.CANCELLED
    except Exception as exc:  # any handler failure is recorded, never lost with the process
        status = JobStatus.FAILED
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        print(error, file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, previous)
        done.set()
        beat.join()
    _finish(project, job_id, status, metrics, error)
    return status


def _install_sigterm() -> Any:
    def on_term(signum: int, frame: Any) -> None:
        raise JobCancelled()

    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM)  # signals can only be handled in the main thread
    return signal.signal(signal.SIGTERM, on_term)


def _heartbeat(project: Project, job_id: int, stop: threading.Event, done: threading.Event) -> None:
    """Beat every `heartbeat_s` until `done`; turn a stored cancel request into `stop`."""
    while not done.wait(project.config.heartbeat_s):
        try:
            with store.transaction(project.db) as conn:
                conn.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", (time.time(), job_id))
                if _row(conn, job_id)["cancel_requested"]:
                    stop.set()
        except sqlite3.OperationalError as exc:  # a busy store must not kill the job: beat again later
            print(f"heartbeat skipped: {exc}", file=sys.stderr)


def _finish(
    project: Project, job_id: int, status: JobStatus, metrics: Mapping[str, Any] | None, error: str | None
) -> None:
    with store.transaction(project.db) as conn:
        merged = json.loads(_row(conn, job_id)["metrics"])
        merged.update(metrics or {})
        conn.execute(
            "UPDATE jobs SET status = ?, metrics = ?, error = ?, finished_at = ?, heartbeat = ?, "
            "progress = CASE WHEN ? = 'done' THEN 1.0 ELSE progress END WHERE id = ?",
            (status.value, json.dumps(merged, default=float), error, time.time(), time.time(), status.value, job_id),
        )
        store.add_event(conn, "job", f"job {job_id} {status.value}", job_id=job_id, error=(error or "")[:500])


def cancel_job(project: Project, job_id: int, *, grace_s: float = 10.0) -> JobStatus:
    """Cancel a job: a queued one at once; a running one by the flag its `should_stop` sees, then
    SIGTERM to its process group if it has not stopped after `grace_s` seconds.

    Returns:
        The job's status afterwards (`cancelled`, or `running` if even SIGTERM was not enough yet).

    Raises:
        StateError: when the job is already finished.
    """
    with store.transaction(project.db) as conn:
        row = _row(conn, job_id)
        status = JobStatus(row["status"])
        if status not in ACTIVE:
            raise StateError(f"job {job_id} is already {status.value}; nothing to cancel.")
        conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        if status is JobStatus.QUEUED and not _pid_alive(row["pid"], row["host"]):
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?", (time.time(), job_id)
            )
        elif status is JobStatus.RUNNING and _pid_gone(row["pid"], row["host"]):
            # Killed (kill -9, OOM) before its heartbeat went stale: nothing will ever see the flag.
            conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?, "
                "message = 'cancelled: its process had already ended' WHERE id = ?",
                (time.time(), job_id),
            )
        store.add_event(conn, "job", f"job {job_id} cancel requested", job_id=job_id)
    deadline = time.time() + grace_s
    while time.time() < deadline:
        job = get_job(project, job_id)
        if job.status not in ACTIVE:
            return job.status
        time.sleep(0.05)
    job = get_job(project, job_id)
    if job.status in ACTIVE and job.pid is not None and _pid_alive(job.pid, job.host):
        _terminate(job.pid)
        for _ in range(100):
            job = get_job(project, job_id)
            if job.status not in ACTIVE:
                break
            time.sleep(0.05)
    return get_job(project, job_id).status


def _terminate(pid: int) -> None:
    """SIGTERM a detached job's process group (its pid leads it), or the process alone when it
    was started in a shell's group (`assft job run` in a terminal)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def reap_dead_jobs(project: Project, *, now: float | None = None) -> list[int]:
    """Mark active jobs dead when their heartbeat is stale and their process is gone.

    Stale = older than `ProjectConfig.stale_after_s`. A process on another host cannot be checked:
    there a stale heartbeat alone decides.

    Returns:
        Ids newly marked dead.
    """
    now = time.time() if now is None else now
    limit = now - project.config.stale_after_s
    dead: list[int] = []
    with store.transaction(project.db) as conn:
        rows = conn.execute(
            "SELECT * FROM jobs WHERE status IN ('queued', 'running') AND COALESCE(heartbeat, created_at) < ?",
            (limit,),
        ).fetchall()
        for row in rows:
            if row["pid"] is None and row["status"] == JobStatus.QUEUED.value:
                continue  # submitted but never launched: waiting, not dead
            if _pid_alive(row["pid"], row["host"]):
                continue
            conn.execute("UPDATE jobs SET status = 'dead', finished_at = ? WHERE id = ?", (now, row["id"]))
            store.add_event(conn, "job", f"job {row['id']} dead (no heartbeat, process gone)", job_id=row["id"])
            dead.append(int(row["id"]))
    return dead


def resume_job(project: Project, job_id: int, *, launch: bool = True) -> JobInfo:
    """Queue a dead, failed or cancelled job again, resuming from its last checkpoint, and launch it.

    Raises:
        StateError: when the job is active or done, or another job of its kind is active.
    """
    reap_dead_jobs(project)
    job = get_job(project, job_id)
    if job.status not in RESUMABLE:
        raise StateError(
            f"job {job_id} is {job.status.value}; only a dead, failed or cancelled job can be resumed."
        )
    checkpoint = latest_checkpoint(job.run_dir)
    try:
        with store.transaction(project.db) as conn:
            conn.execute(
                "UPDATE jobs SET status = 'queued', resume_from = ?, cancel_requested = 0, error = NULL, "
                "pid = NULL, finished_at = NULL WHERE id = ?",
                (project.relative(checkpoint) if checkpoint else None, job_id),
            )
            store.add_event(
                conn, "job", f"job {job_id} resumed from {checkpoint or 'the start'}", job_id=job_id
            )
    except sqlite3.IntegrityError:
        raise StateError(
            f"another {job.kind!r} job (#{active_job_id(project, job.kind)}) is active; wait or cancel it first."
        ) from None
    if launch:
        launch_detached(project, job_id)
    return get_job(project, job_id)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest step in `run_dir/checkpoints/` (temporary files ignored);
    without one, the newest trainer checkpoint (`checkpoint.pt`) in a phase folder of `run_dir`
    (training jobs resume each phase from its own folder)."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        trainer = [p for p in run_dir.glob(f"**/{TRAINER_CHECKPOINT}") if p.is_file()]
        return max(trainer, key=lambda p: p.stat().st_mtime) if trainer else None
    steps: list[tuple[int, Path]] = []
    for path in folder.glob(f"{CHECKPOINT_PREFIX}*"):
        digits = path.name[len(CHECKPOINT_PREFIX) :].split(".", 1)[0]
        if digits.isdigit():
            steps.append((int(digits), path))
    return max(steps)[1] if steps else None


def get_job(project: Project, job_id: int) -> JobInfo:
    """One job.

    Raises:
        StateError: when there is no such job.
    """
    with store.reading(project.db) as conn:
        return _info(project, _row(conn, job_id))


def list_jobs(project: Project, *, reap: bool = True) -> list[JobInfo]:
    """Every job, newest first (dead ones detected first unless `reap` is False)."""
    if reap:
        reap_dead_jobs(project)
    with store.reading(project.db) as conn:
        return [_info(project, r) for r in conn.execute("SELECT * FROM jobs ORDER BY id DESC")]


def run_job_in_process(folder: str | os.PathLike[str], job_id: int) -> JobStatus:
    """Open the project at `folder` and `run_job` (the body of `assft job run`)."""
    return run_job(open_project(folder), job_id)


def _row(conn: sqlite3.Connection, job_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise StateError(f"no job {job_id} in this project; `assft job list` shows the jobs.")
    return row


def active_job_id(project: Project, kind: str) -> int | None:
    """The id of the queued or running job of `kind`, or None."""
    with store.reading(project.db) as conn:
        row = conn.execute(
            "SELECT id FROM jobs WHERE kind = ? AND status IN ('queued', 'running')", (kind,)
        ).fetchone()
    return int(row[0]) if row else None


def _info(project: Project, row: sqlite3.Row) -> JobInfo:
    return JobInfo(
        id=row["id"],
        kind=row["kind"],
        params=json.loads(row["params"]),
        status=JobStatus(row["status"]),
        progress=row["progress"],
        message=row["message"],
        metrics=json.loads(row["metrics"]),
        heartbeat=row["heartbeat"],
        pid=row["pid"],
        host=row["host"],
        run_dir=project.resolve(row["run_dir"]),
        resume_from=project.resolve(row["resume_from"]) if row["resume_from"] else None,
        cancel_requested=bool(row["cancel_requested"]),
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _pid_gone(pid: int | None, host: str | None) -> bool:
    """Whether process `pid` is known to have ended on this host (a zombie counts as ended); False
    when it cannot be checked (no pid, another host)."""
    if pid is None or (host is not None and host != socket.gethostname()):
        return False
    return not _pid_alive(pid, host)


def _pid_alive(pid: int | None, host: str | None) -> bool:
    """Whether process `pid` runs on this host (a zombie counts as gone). A process on another
    host cannot be checked or signalled from here: False, so the heartbeat alone decides."""
    if pid is None or (host is not None and host != socket.gethostname()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): the signal check above is all we have
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
