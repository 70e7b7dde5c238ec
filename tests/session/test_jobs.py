"""Jobs: one active job per kind (even under concurrency), detached runs with progress, cancel,
stale-heartbeat detection and resume from the last checkpoint."""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from assft_core.config import ProjectConfig
from assft_core.errors import StateError
from assft_core.session import jobs, store
from assft_core.session.jobs import JobStatus
from assft_core.session.project import save_config

HERE = Path(__file__).parent


@pytest.fixture()
def project(oracle_project, monkeypatch):
    """The oracle project with fast heartbeats and the test job kinds visible to child processes."""
    monkeypatch.setenv(jobs.JOB_MODULES_ENV, "session_test_jobs")
    monkeypatch.setenv("PYTHONPATH", f"{HERE}:{Path.cwd()}")
    return save_config(oracle_project, ProjectConfig(heartbeat_s=0.1, stale_after_s=1.0))


def _wait_for(pred, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_every_job_module_exists_and_the_round_kinds_are_the_sessions() -> None:
    from assft_core.session import job_kinds

    for name in jobs.JOB_MODULES:
        importlib.import_module(name)
    assert jobs.job_handler("score") is job_kinds.run_score_job
    assert jobs.job_handler("train") is job_kinds.run_train_job
    assert jobs.job_handler("evaluate") is job_kinds.run_evaluate_job


def test_a_missing_job_module_is_an_error_not_skipped(monkeypatch) -> None:
    monkeypatch.setenv(jobs.JOB_MODULES_ENV, "assft_core.session.no_such_job_module")
    with pytest.raises(ModuleNotFoundError, match="no_such_job_module"):
        jobs.job_handler("a kind nobody registers")


def test_second_active_job_of_a_kind_is_refused(project) -> None:
    first = jobs.submit_job(project, "test_count", {"steps": 1})
    with pytest.raises(StateError, match=rf"'test_count' job \(#{first}\) is already queued"):
        jobs.submit_job(project, "test_count", {"steps": 1})
    other = jobs.submit_job(project, "test_boom")  # another kind is fine
    assert other == first + 1
    with pytest.raises(StateError, match="unknown job kind 'nope'"):
        jobs.submit_job(project, "nope")
    params = (jobs.get_job(project, first).run_dir / "params.json").read_text()
    assert '"steps": 1' in params


def test_concurrent_submissions_admit_exactly_one(project) -> None:
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def submit() -> None:
        barrier.wait()
        try:
            jobs.submit_job(project, "test_count", {"steps": 1})
            outcomes.append("ok")
        except StateError:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]
    assert [j.status for j in jobs.list_jobs(project)] == [JobStatus.QUEUED]


def test_in_process_failure_is_recorded(project) -> None:
    job_id = jobs.submit_job(project, "test_boom")
    assert jobs.run_job(project, job_id) is JobStatus.FAILED
    job = jobs.get_job(project, job_id)
    assert job.status is JobStatus.FAILED and "RuntimeError: handler exploded" in job.error
    with pytest.raises(StateError, match="only a queued job can run"):
        jobs.run_job(project, job_id)


def test_stale_heartbeat_with_gone_process_is_dead(project) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ids = [jobs.submit_job(project, k) for k in ("test_count", "test_boom")]
    now = time.time()
    with store.transaction(project.db) as conn:
        # ids[0]: process gone, heartbeat stale -> dead. ids[1]: stale but process alive -> running.
        for pid, job_id in ((gone.pid, ids[0]), (1, ids[1])):
            conn.execute(
                "UPDATE jobs SET status='running', pid=?, host=NULL, heartbeat=? WHERE id=?", (pid, now - 5, job_id)
            )
    assert jobs.reap_dead_jobs(project, now=now - 4.5) == []  # heartbeat 0.5 s old: not stale yet
    assert jobs.reap_dead_jobs(project) == [ids[0]]
    assert jobs.get_job(project, ids[0]).status is JobStatus.DEAD
    assert jobs.get_job(project, ids[1]).status is JobStatus.RUNNING
    jobs.submit_job(project, "test_count", {"steps": 1})  # the dead job no longer blocks its kind


def test_detached_job_runs_to_done_with_progress(project) -> None:
    job_id = jobs.submit_job(project, "test_count", {"steps": 30})
    jobs.launch_detached(project, job_id)
    seen: list[float] = []

    def running_with_progress() -> bool:
        job = jobs.get_job(project, job_id)
        if job.status is JobStatus.RUNNING and 0 < job.progress < 1:
            seen.append(job.progress)
        return job.status not in jobs.ACTIVE

    _wait_for(running_with_progress)
    job = jobs.get_job(project, job_id)
    assert job.status is JobStatus.DONE, (job.run_dir / jobs.LOG_NAME).read_text()
    assert seen, "progress was never observed while running"
    assert job.progress == 1.0 and job.message == "step 30"
    assert job.metrics == {"step": 30, "final_step": 30, "started_at_step": 0}
    assert "job %d: done" % job_id in (job.run_dir / jobs.LOG_NAME).read_text()


@pytest.mark.parametrize("ignore_stop", [False, True])
def test_cancel_by_flag_or_sigterm(project, ignore_stop: bool) -> None:
    job_id = jobs.submit_job(project, "test_count", {"steps": 2000, "ignore_stop": ignore_stop})
    jobs.launch_detached(project, job_id)
    _wait_for(lambda: jobs.get_job(project, job_id).progress > 0)
    # A cooperative handler stops on the flag within the grace period; one that ignores it is
    # stopped by SIGTERM after the grace period.
    status = jobs.cancel_job(project, job_id, grace_s=0.5 if ignore_stop else 20.0)
    assert status is JobStatus.CANCELLED
    job = jobs.get_job(project, job_id)
    if ignore_stop:
        assert "stopped_at" not in job.metrics  # interrupted by the signal, not by the handler
    else:
        assert job.metrics["stopped_at"] < 2000
    with pytest.raises(StateError, match="already cancelled"):
        jobs.cancel_job(project, job_id)


def test_killed_job_is_detected_and_resumes_from_checkpoint(project) -> None:
    job_id = jobs.submit_job(project, "test_count", {"steps": 12, "checkpoint_every": 5, "crash_at": 8})
    jobs.launch_detached(project, job_id)
    _wait_for(lambda: jobs.reap_dead_jobs(project) == [job_id])  # crashed at step 8, heartbeat went stale
    job = jobs.get_job(project, job_id)
    assert job.status is JobStatus.DEAD and job.metrics["step"] == 7
    assert jobs.latest_checkpoint(job.run_dir).name == "step_00000005.pt"
    with store.transaction(project.db) as conn:  # the second attempt must not crash again
        conn.execute("UPDATE jobs SET params = ? WHERE id = ?", ('{"steps": 12, "checkpoint_every": 5}', job_id))
    resumed = jobs.resume_job(project, job_id)
    assert resumed.resume_from.name == "step_00000005.pt"
    _wait_for(lambda: jobs.get_job(project, job_id).status not in jobs.ACTIVE)
    final = jobs.get_job(project, job_id)
    assert final.status is JobStatus.DONE
    assert (final.metrics["started_at_step"], final.metrics["final_step"]) == (5, 12)


def test_cancel_of_a_killed_unreaped_job_ends_at_once(project) -> None:
    """kill -9 left the job 'running' with a fresh heartbeat and a zombie (unreaped) process:
    cancelling it must not wait out the grace period and then report 'running' (issue 20)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    time.sleep(0.3)  # now a zombie: this process never waits for it
    job_id = jobs.submit_job(project, "test_count")
    with store.transaction(project.db) as conn:
        conn.execute("UPDATE jobs SET status='running', pid=?, host=NULL, heartbeat=? WHERE id=?",
                     (child.pid, time.time(), job_id))
    start = time.perf_counter()
    status = jobs.cancel_job(project, job_id, grace_s=5.0)
    assert status is JobStatus.CANCELLED
    assert time.perf_counter() - start < 2.0
    child.wait()


def test_a_job_failing_in_this_process_leaves_its_traceback_in_the_log_it_names(project) -> None:
    import re

    from assft_core.session.loop import run_job_here

    with pytest.raises(StateError, match=r"test_boom job #\d+ failed: RuntimeError: handler exploded \(log: ") as exc:
        run_job_here(project, "test_boom", {})
    log = Path(re.search(r"\(log: (.+)\)\.$", str(exc.value)).group(1))
    assert "Traceback" in log.read_text() and "handler exploded" in log.read_text()
