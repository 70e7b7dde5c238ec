"""Long work as detached jobs, watched from the page without freezing it.

`start_job` queues a job in the store and launches it as its own process (it outlives the browser
tab and the dashboard). `job_panel` draws the newest job of a kind from the store, refreshing
itself every `POLL_S` seconds while the job is active (`st.fragment(run_every=...)`), so progress
survives a page reload; when the job ends, the whole page reruns once to show its results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from app.presenters import format_seconds
from app.ui import guard
from assft_core.errors import StateError
from assft_core.session import jobs
from assft_core.session.jobs import JobInfo, JobStatus
from assft_core.session.project import Project

POLL_S = 2.0


def start_job(project: Project, kind: str, params: Mapping[str, Any]) -> int:
    """Queue a job of `kind` and launch it as a detached process; returns its id.

    Raises:
        StateError: when the kind is unknown, a job of this kind is already active, or the
            process cannot be started (the queued job is then cancelled, so it blocks nothing).
    """
    job_id = jobs.submit_job(project, kind, params)
    try:
        jobs.launch_detached(project, job_id)
    except OSError as exc:
        jobs.cancel_job(project, job_id, grace_s=0.0)
        raise StateError(f"could not start the {kind} job's process ({exc}); check the Python environment.") from None
    return job_id


def latest_job(project: Project, kind: str, match: Mapping[str, Any] | None = None) -> JobInfo | None:
    """The newest job of `kind` (dead ones detected first), or None.

    Args:
        match: parameters the job must have been given, e.g. {"round": 2}, so a new round does
            not show the last round's job as its own.
    """
    for job in jobs.list_jobs(project):
        if job.kind == kind and all(job.params.get(k) == v for k, v in (match or {}).items()):
            return job
    return None


def is_active(project: Project, kind: str) -> bool:
    """Whether a job of `kind` is queued or running (its start button is then disabled)."""
    job = latest_job(project, kind)
    return job is not None and job.status in jobs.ACTIVE


def job_panel(
    project: Project,
    kind: str,
    extra: Callable[[JobInfo], None] | None = None,
    match: Mapping[str, Any] | None = None,
) -> JobInfo | None:
    """Live status of the newest job of `kind`, with cancel / resume; returns that job (or None).

    Args:
        project: the open project.
        kind: the job kind ("score", "train", "evaluate").
        extra: drawn under the status on every refresh (e.g. the loss curve).
        match: show only a job given these parameters (see `latest_job`).
    """
    job = latest_job(project, kind, match)
    if job is None:
        return None
    active = job.status in jobs.ACTIVE

    @st.fragment(run_every=POLL_S if active else None, key=f"assft-job-{kind}")
    def live() -> None:
        now = latest_job(project, kind, match) or job
        _status(project, now)
        if extra is not None:
            extra(now)
        seen = f"_assft_job_{now.id}_active"
        was_active = st.session_state.get(seen, False)
        st.session_state[seen] = now.status in jobs.ACTIVE
        if was_active and now.status not in jobs.ACTIVE:
            st.rerun()  # the job ended: redraw the whole page (round state, results)

    live()
    return job


def _status(project: Project, job: JobInfo) -> None:
    """Progress bar, timing, and the cancel / resume buttons of one job."""
    label = f"{job.kind} job #{job.id}: {job.status.value}" + (f" · {job.message}" if job.message else "")
    st.progress(min(max(job.progress, 0.0), 1.0), text=label)
    end = job.finished_at or time.time()
    c1, c2, c3 = st.columns(3)
    c1.metric("Elapsed", format_seconds(end - job.started_at) if job.started_at else "–")
    eta = job.metrics.get("eta_s") if job.status in jobs.ACTIVE else None
    c2.metric("Time left (est.)", format_seconds(eta) if isinstance(eta, (int, float)) else "–")
    if job.status in jobs.ACTIVE:
        beat = time.time() - job.heartbeat if job.heartbeat else None
        c3.metric("Last heartbeat", f"{format_seconds(beat)} ago" if beat is not None else "–")
    else:
        finished = time.strftime("%H:%M:%S", time.localtime(job.finished_at)) if job.finished_at else "–"
        c3.metric("Finished at", finished)
    if job.status in jobs.ACTIVE:
        if st.button("Cancel", key=f"cancel-{job.id}", help="Stops at the next step; resumable from the last checkpoint."):
            with guard(f"cancel job {job.id}"), st.spinner("Asking the job to stop…"):
                jobs.cancel_job(project, job.id, grace_s=3 * project.config.heartbeat_s)
                st.rerun()
        return
    if job.status is JobStatus.FAILED:
        first = (job.error or "unknown error").strip().splitlines()[0]
        st.error(f"The job failed: {first}. Full log: `{job.run_dir / jobs.LOG_NAME}`.")
    elif job.status is JobStatus.DEAD:
        st.warning("The job's process is gone (crash, kill or reboot) without finishing.")
    if job.status in jobs.RESUMABLE:
        checkpoint = jobs.latest_checkpoint(job.run_dir)
        where = f"from checkpoint `{checkpoint.name}`" if checkpoint else "from the start (no checkpoint yet)"
        if st.button(f"Resume job #{job.id}", key=f"resume-{job.id}", help=f"Continues {where}."):
            with guard(f"resume job {job.id}"):
                jobs.resume_job(project, job.id)
                st.rerun()
        st.caption(f"Resume continues {where}.")


def jobs_sidebar(project: Project) -> None:
    """The project's queued and running jobs, on every page, refreshed while any is active."""
    if not any(j.status in jobs.ACTIVE for j in jobs.list_jobs(project)):
        return

    @st.fragment(run_every=POLL_S, key="assft-sidebar-jobs")
    def live() -> None:
        running = [j for j in jobs.list_jobs(project, reap=False) if j.status in jobs.ACTIVE]
        st.caption("Background jobs" if running else "Background jobs: all finished")
        for job in running:
            st.progress(min(max(job.progress, 0.0), 1.0), text=f"{job.kind} #{job.id}: {job.message or job.status.value}")

    live()
