"""Fine-tune page: launch with the chosen settings, live progress and loss curve from the store,
results with the SSFT admissions, cancel / resume, evaluation and the next round."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from app_factories import drive_oracle_round

from assft_core.session import jobs, rounds
from assft_core.session.jobs import JobContext, JobStatus
from assft_core.session.rounds import RoundState

EVENTS = [
    {"step": s, "total": 3, "loss": 1.0 / s, "lr": 1e-3, "phase": "supervised", "eta_s": 3.0 - s} for s in (1, 2, 3)
]
# Rows as the train job writes them (`session.training_round._case_rows`), in no particular order.
SSFT_CASES = [
    {"case_id": "p3", "site": "B", "confidence": 0.75, "distance": 0.30, "reliability": 0.25, "admitted": False,
     "reason": "rank 2 of 2 by reliability: outside the top ρ = 0.5", "kept_fraction": 0.6, "kept_accuracy": None},
    {"case_id": "p2", "site": "B", "confidence": 0.81, "distance": 0.12, "reliability": 0.9, "admitted": True,
     "reason": "rank 1 of 2 by reliability: in the top ρ = 0.5", "kept_fraction": 0.7, "kept_accuracy": None},
]


WARNING = "only 1 unlabelled scan trusted for pseudo-labels (R), fewer than 2"


def _values(array: list | dict) -> list:
    """A plotly JSON array as a list (plotly writes numeric arrays as base64 with a dtype)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def _fake_training(ctx: JobContext) -> dict:
    """Writes the progress file a train job keeps, one event per step, and returns SSFT results."""
    with open(ctx.run_dir / "progress.jsonl", "a", encoding="utf-8") as fh:
        for event in EVENTS:
            fh.write(json.dumps(event) + "\n")
            ctx.progress(event["step"] / event["total"], f"step {event['step']}", eta_s=event["eta_s"])
        fh.write('{"step": 4, "lo')  # a line cut short by a concurrent write is skipped
    return {"final_loss": 1 / 3, "mean_dice": 0.61, "labelled": 2, "unlabelled": 2, "admitted": 1,
            "ssft_mode": "selective", "ssft_warnings": [WARNING],
            "ssft_cases": SSFT_CASES, "wall_s": {"supervised": 65.0}, "parent": "f0"}


def test_labelled_round_launches_training_with_the_chosen_settings(run_page, oracle_project, fake_jobs) -> None:
    drive_oracle_round(oracle_project, RoundState.LABELLED)
    at = run_page("finetune", oracle_project.folder)
    assert any("Device: CPU" in i.value for i in at.info)
    at.number_input(key="ft-sup").set_value(7)
    at.number_input(key="ft-ssft").set_value(3)
    at.selectbox(key="ft-mode").set_value(at.selectbox(key="ft-mode").options[1])  # "none: ..."
    at.button(key="train").click().run()
    assert not at.exception
    (job,) = jobs.list_jobs(oracle_project)
    assert job.kind == "train" and fake_jobs == [job.id]
    assert job.params == {"round": 0, "supervised_steps": 7, "ssft_steps": 3, "ssft_mode": "none", "device": "auto",
                          "nproc": 1}


def test_a_page_opened_too_early_says_what_to_do(run_page, oracle_project) -> None:
    at = run_page("finetune", oracle_project.folder)
    assert "Label the approved cases first" in at.warning[0].value
    assert not at.button


def test_finished_job_shows_progress_loss_curve_and_admitted_cases(run_page, oracle_project, monkeypatch) -> None:
    drive_oracle_round(oracle_project, RoundState.LABELLED)
    monkeypatch.setitem(jobs._REGISTRY, "train", _fake_training)
    job_id = jobs.submit_job(oracle_project, "train", {"round": 0})
    assert jobs.run_job(oracle_project, job_id) is JobStatus.DONE  # in this process, the real job path
    at = run_page("finetune", oracle_project.folder)
    assert not at.exception
    (bar,) = at.get("progress")
    assert bar.proto.value == 100 and bar.proto.text.startswith(f"train job #{job_id}: done")
    (chart,) = at.get("plotly_chart")
    figure = json.loads(chart.proto.spec)
    loss = next(t for t in figure["data"] if t["name"].startswith("loss"))
    assert _values(loss["x"]) == [1, 2, 3]  # the cut-short line is not drawn
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Mean Dice"], metrics["Final loss"], metrics["Admitted by SSFT"]) == ("0.610", "0.3333", "1 of 2")
    assert at.warning[0].value == WARNING
    (cases,) = [d.value for d in at.dataframe if "reason" in d.value.columns]
    assert cases.to_dict("records") == [SSFT_CASES[1], SSFT_CASES[0]]  # admitted first, then by reliability
    assert "supervised 1 min 05 s" in at.caption[-1].value


def test_cancelled_job_can_be_resumed_from_the_page(run_page, oracle_project, fake_jobs) -> None:
    drive_oracle_round(oracle_project, RoundState.LABELLED)
    job_id = jobs.submit_job(oracle_project, "train", {"round": 0})
    assert jobs.cancel_job(oracle_project, job_id, grace_s=0.0) is JobStatus.CANCELLED
    at = run_page("finetune", oracle_project.folder)
    assert "from the start (no checkpoint yet)" in at.caption[-1].value
    at.button(key=f"resume-{job_id}").click().run()
    assert not at.exception
    assert jobs.get_job(oracle_project, job_id).status is JobStatus.QUEUED
    assert fake_jobs == [job_id]


@pytest.mark.parametrize("state", [RoundState.TRAINED, RoundState.EVALUATED])
def test_after_training_evaluate_then_open_the_next_round(run_page, oracle_project, fake_jobs, state) -> None:
    drive_oracle_round(oracle_project, state)
    at = run_page("finetune", oracle_project.folder)
    if state is RoundState.TRAINED:
        at.button(key="evaluate").click().run()
        (job,) = jobs.list_jobs(oracle_project)
        assert (job.kind, job.params, fake_jobs) == ("evaluate", {"round": 0}, [job.id])
    else:
        assert at.metric[0].value == "0.600"
        assert at.button(key="next-round").label == "Start round 1"
        at.button(key="next-round").click().run()
        info = rounds.current_round(oracle_project)
        assert (info.idx, info.state) == (1, RoundState.OPEN)
        assert "Round 1 opened" in at.success[0].value
    assert not at.exception


def test_a_new_round_does_not_show_the_last_rounds_job(run_page, oracle_project, monkeypatch) -> None:
    drive_oracle_round(oracle_project, RoundState.EVALUATED)
    monkeypatch.setitem(jobs._REGISTRY, "train", _fake_training)
    job_id = jobs.submit_job(oracle_project, "train", {"round": 0})
    jobs.run_job(oracle_project, job_id)
    assert len(run_page("finetune", oracle_project.folder).get("progress")) == 1
    rounds.start_next_round(oracle_project)
    at = run_page("finetune", oracle_project.folder)
    assert not at.exception and at.get("progress") == []
    assert "Label the approved cases first (round 1: open, the pool is not scored yet)" in at.warning[0].value


def test_the_evaluated_round_shows_hd95_with_the_missed_count(run_page, oracle_project, fake_jobs) -> None:
    import json

    from assft_core.session import store

    drive_oracle_round(oracle_project, RoundState.EVALUATED)
    with store.transaction(oracle_project.db) as conn:
        metrics = json.loads(conn.execute("SELECT metrics FROM rounds WHERE idx = 0").fetchone()[0])
        metrics["overall"].update(mean_hd95_mm=0.0, missed_total=1)
        conn.execute("UPDATE rounds SET metrics = ? WHERE idx = 0", (json.dumps(metrics),))
    at = run_page("finetune", oracle_project.folder)
    assert not at.exception
    assert "HD95 0.0 mm (1 structure missed, not in the mean)" in [c.value for c in at.caption]


def test_expected_time_is_shown_before_launch_and_the_quick_demo_preset_states_its_time(
    run_page, oracle_project, monkeypatch
) -> None:
    from types import SimpleNamespace

    from assft_core.session import estimate

    drive_oracle_round(oracle_project, RoundState.LABELLED)
    at = run_page("finetune", oracle_project.folder)
    (expected,) = [i.value for i in at.info if i.value.startswith("Expected time")]
    assert "a first guess: these steps have not run in this project yet" in expected
    quick = at.button(key="ft-quick")
    assert quick.label.startswith(f"Quick demo: {estimate.QUICK_DEMO.supervised_steps} + "
                                  f"{estimate.QUICK_DEMO.ssft_steps} steps, about ")
    quick.click().run()
    assert at.number_input(key="ft-sup").value == estimate.QUICK_DEMO.supervised_steps
    assert at.number_input(key="ft-ssft").value == estimate.QUICK_DEMO.ssft_steps
    assert not jobs.list_jobs(oracle_project)  # a preset starts nothing

    # Measured: a finished train job's wall time per step and per unlabelled case replaces the guesses.
    done = SimpleNamespace(kind="train", status=JobStatus.DONE, params={"supervised_steps": 10, "ssft_steps": 5},
                           metrics={"wall_s": {"supervised": 20.0, "scoring": 3.0, "ssft": 15.0, "job": 40.0},
                                    "unlabelled": 2}, created_at=1000.0, finished_at=1052.0)
    monkeypatch.setattr(jobs, "list_jobs", lambda project, reap=True: [done])
    rates = estimate.measured_rates(oracle_project)
    assert rates == {"supervised": 2.0, "pseudo-labels": 1.5, "ssft": 3.0, "startup": 12.0}
    plan = estimate.training_estimate(oracle_project, 30, 20, "selective")
    by_phase = {p.phase: p for p in plan.phases}
    assert by_phase["supervised"].seconds == 60.0 and by_phase["ssft"].seconds == 60.0
    assert by_phase["pseudo-labels"].units == 2 and not by_phase["evaluation"].measured  # no evaluation yet
    assert plan.fixed_s == 12.0 and plan.fixed_measured
    at.run()
    (expected,) = [i.value for i in at.info if i.value.startswith("Expected time")]
    assert "partly measured" in expected
