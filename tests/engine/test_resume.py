"""A train job killed mid-phase (kill -9 of its detached process) resumes from its last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import assft_core.train.ssft as ssft
from assft_core.config import SSFTMode
from assft_core.session import jobs, rounds
from assft_core.session.loop import run_job_here
from assft_core.session.rounds import RoundState
from assft_core.session.training_round import ROUND_DIR, TrainRequest

STEPS = 12  # checkpoints every 2 steps (engine_config): killed after the first


def _wait(predicate: Any, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while not predicate():
        if time.time() > deadline:
            pytest.fail("timed out waiting for the detached job")
        time.sleep(0.05)


def test_killed_train_job_resumes_from_its_checkpoint(labelled_project, monkeypatch: pytest.MonkeyPatch) -> None:
    project = labelled_project
    request = TrainRequest(supervised_steps=STEPS, ssft_steps=0, ssft_mode=SSFTMode.NONE, device="cpu", evaluate=False)
    params = {"round": 0, **request.to_params()}
    job_id = jobs.submit_job(project, "train", params)
    pid = jobs.launch_detached(project, job_id)
    run_dir = jobs.get_job(project, job_id).run_dir
    checkpoint = run_dir / ROUND_DIR / ssft.SUPERVISED_DIR / "checkpoint.pt"
    _wait(checkpoint.is_file, timeout_s=180)
    os.killpg(pid, signal.SIGKILL)  # the runner leads its own process group
    _wait(lambda: jobs.reap_dead_jobs(project) == [job_id] or jobs.get_job(project, job_id).status is jobs.JobStatus.DEAD, 30)
    saved_step = int(torch.load(checkpoint, weights_only=True)["step"])
    assert 2 <= saved_step < STEPS
    assert jobs.latest_checkpoint(run_dir) == checkpoint  # what `assft job resume` reports

    calls: list[dict[str, Any]] = []
    real_train = ssft.train

    def spy(*args: Any, **kwargs: Any) -> Any:
        call: dict[str, Any] = {"resume_from": kwargs["resume_from"], "steps": []}
        calls.append(call)
        inner = kwargs["on_progress"]
        kwargs["on_progress"] = lambda e: (call["steps"].append(e.step), inner(e))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(ssft, "train", spy)
    job = run_job_here(project, "train", params)

    assert job.id == job_id and job.status is jobs.JobStatus.DONE  # the same job, resumed
    assert calls[0]["resume_from"] == checkpoint.parent
    assert calls[0]["steps"][0] == saved_step + 1 and calls[0]["steps"][-1] == STEPS  # continued, not restarted
    assert int(torch.load(checkpoint, weights_only=True)["step"]) == STEPS
    logged = [json.loads(line)["step"] for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    assert logged == list(range(1, STEPS + 1))  # steps repeated after the checkpoint are logged once
    info = rounds.current_round(project)
    assert info.state is RoundState.TRAINED and Path(project.resolve(info.checkpoint), "model.pt").is_file()
