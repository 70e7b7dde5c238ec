"""The active-learning loop headless: score → query → approve → oracle label → train + SSFT → evaluate.

`run_rounds` drives a demo/benchmark (oracle) project from whatever state it is in until it has
the asked number of evaluated rounds, running every job in this process through the registered
job handlers (`run_job_here`), exactly as a detached job would. Stopped at any point (Ctrl-C,
kill), called again it continues: an interrupted job with the same parameters is resumed from its
checkpoints, a finished step is never redone (ASSFT, METHOD.md §5 protocol).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from assft_core.config import SSFTMode
from assft_core.errors import StateError
from assft_core.session import annotation, jobs, labels, rounds
from assft_core.session.evaluation import baseline_metrics
from assft_core.session.jobs import JobInfo, JobStatus
from assft_core.session.project import Project
from assft_core.session.query import propose_round
from assft_core.session.rounds import RoundInfo, RoundState
from assft_core.session.training_round import TrainRequest

Log = Callable[[str], None]


@dataclass(frozen=True)
class RoundRow:
    """One line of the loop's table.

    Attributes:
        round: 0 for f_0 as it is; t + 1 for the model fine-tuned in round t.
        labelled: pool cases labelled when the model was trained.
        mean_dice: mean foreground Dice (test split, or the biased fallback; None when none).
        per_site: site -> mean Dice.
        wall_s: seconds of the round's jobs (scoring, training, evaluation; None for f_0).
        evaluated_on: "test" or "new_labels_biased".
        ssft_admitted: unlabelled cases the SSFT phase trained on (None for f_0).
    """

    round: int
    labelled: int
    mean_dice: float | None
    per_site: dict[str, float | None] = field(default_factory=dict)
    wall_s: float | None = None
    evaluated_on: str = "test"
    ssft_admitted: int | None = None


def run_job_here(project: Project, kind: str, params: Mapping[str, Any], *, log: Log | None = None) -> JobInfo:
    """Run a job of `kind` in this process through its registered handler.

    The latest job of this kind, if interrupted (dead, failed or cancelled) with the same
    parameters, is resumed (from its checkpoints) instead of starting over. A job still marked
    active whose process is gone is first given time to be detected as dead (its heartbeat going
    stale, `ProjectConfig.stale_after_s`).

    Returns:
        The finished job.

    Raises:
        StateError: when the job fails or is cancelled (naming its log and how to resume), or
            another job of this kind stays active.
    """
    _wait_for_active(project, kind, log)
    job_id = _resume_or_submit(project, kind, params, launch=False, log=log).id
    status = jobs.run_job(project, job_id)
    job = jobs.get_job(project, job_id)
    if status is JobStatus.DONE:
        return job
    if status is JobStatus.FAILED:
        first = (job.error or "unknown error").strip().splitlines()[0]
        log_path = job.run_dir / jobs.LOG_NAME
        # Run in this process, its traceback went to the terminal only: the log named must hold it.
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(job.error or "unknown error\n")
        raise StateError(f"{kind} job #{job_id} failed: {first} (log: {log_path}).")
    raise StateError(f"{kind} job #{job_id} was {status.value}; run again (or `assft job resume {job_id}`) to continue.")


def launch_job(project: Project, kind: str, params: Mapping[str, Any], *, log: Log | None = None) -> JobInfo:
    """Start a job of `kind` as a detached process (it outlives this shell); returns it.

    As `run_job_here`, an interrupted latest job with the same parameters is resumed instead.

    Raises:
        StateError: when a job of this kind is already active.
    """
    return _resume_or_submit(project, kind, params, launch=True, log=log)


def _resume_or_submit(
    project: Project, kind: str, params: Mapping[str, Any], *, launch: bool, log: Log | None
) -> JobInfo:
    """Resume the latest job of `kind` if it was interrupted with these parameters, else submit one."""
    params = json.loads(json.dumps(dict(params), default=str))
    previous = next((j for j in jobs.list_jobs(project) if j.kind == kind), None)
    if previous is not None and previous.status in jobs.RESUMABLE and previous.params == params:
        job = jobs.resume_job(project, previous.id, launch=launch)
        if log is not None:
            log(f"resuming {kind} job #{job.id} ({previous.status.value}) from {job.resume_from or 'its run folder'}")
        return job
    job_id = jobs.submit_job(project, kind, params)
    if launch:
        jobs.launch_detached(project, job_id)
    return jobs.get_job(project, job_id)


def _wait_for_active(project: Project, kind: str, log: Log | None) -> None:
    """Wait until no job of `kind` is active, or one whose process is gone is marked dead."""
    cfg = project.config
    deadline = time.time() + cfg.stale_after_s + 2 * cfg.heartbeat_s
    told = False
    while True:
        active = [j for j in jobs.list_jobs(project) if j.kind == kind and j.status in jobs.ACTIVE]
        if not active:
            return
        if time.time() > deadline:
            raise StateError(
                f"a {kind} job (#{active[0].id}, pid {active[0].pid}) is still running in {project.folder}; "
                f"wait for it, or cancel it with `assft job cancel -p {project.folder} {active[0].id}`."
            )
        if log is not None and not told:
            log(f"{kind} job #{active[0].id} is marked active; waiting up to {cfg.stale_after_s:.0f} s for its heartbeat")
            told = True
        time.sleep(min(1.0, cfg.heartbeat_s))


def run_rounds(
    project: Project,
    rounds_total: int,
    budget: int,
    strategy: str | None = None,
    *,
    ssft_mode: SSFTMode | str | None = None,
    supervised_steps: int | None = None,
    ssft_steps: int | None = None,
    device: str = "auto",
    on_row: Callable[[RoundRow], None] | None = None,
    log: Log | None = None,
    measure_effort: bool = True,
) -> list[RoundRow]:
    """Run the loop on an oracle project until it has `rounds_total` evaluated rounds.

    Per round t: score (f_0 cached, f_t) → propose `budget` picks with `strategy` → approve all →
    label them with the oracle → fine-tune + SSFT → evaluate (ASSFT, METHOD.md §5). Starts with
    f_0's evaluation (row 0). Picks up wherever the project stands (a rerun continues).

    Args:
        project: an oracle (demo/benchmark) project.
        rounds_total: evaluated rounds wanted in total (rounds already done count).
        budget: b, picks per round.
        strategy: registered strategy name (default: the project's).
        ssft_mode / supervised_steps / ssft_steps: training settings (default: the project's).
        device: "auto", "cpu" or "cuda[:i]".
        on_row: called with each row as soon as it is known (rows of earlier runs first).
        log: progress lines for people (None: silent).
        measure_effort: also record the annotation effort of each round's picks: f_t's
            pre-annotation against the oracle's label (`annotation.record_oracle_effort`; one
            inference per pick).

    Returns:
        Row 0 (f_0) and one row per evaluated round, in order.

    Raises:
        StateError: the project is not in oracle mode, a job fails, or the pool runs out.
    """
    if not project.oracle:
        raise StateError(
            f"{project.folder} labels with expert uploads; the headless loop needs an oracle (demo/benchmark) "
            "project (`assft init ... --oracle`)."
        )
    if rounds_total < 0 or budget < 1:
        raise StateError(f"rounds must be ≥ 0 and budget ≥ 1 (got {rounds_total} and {budget}).")
    request = TrainRequest.from_params(
        project,
        {"ssft_mode": SSFTMode(ssft_mode).value if ssft_mode else None, "supervised_steps": supervised_steps,
         "ssft_steps": ssft_steps, "device": device},
    )
    emit = on_row or (lambda row: None)
    say = log or (lambda line: None)
    rows: list[RoundRow] = []

    baseline = baseline_metrics(project)
    if baseline is None:
        say("evaluating f_0 (the pre-trained model) on the test split")
        run_job_here(project, "evaluate", {"baseline": True, "device": device}, log=log)
        baseline = baseline_metrics(project)
    rows.append(_row(0, 0, baseline or {}, None))
    emit(rows[-1])

    while True:
        info = rounds.current_round(project)
        done = [r for r in rounds.list_rounds(project) if r.state is RoundState.EVALUATED]
        for r in done[len(rows) - 1 :]:
            rows.append(_row(r.idx + 1, int(r.metrics.get("labelled", 0)), r.metrics, _round_wall(project, r.idx)))
            emit(rows[-1])
        if len(done) >= rounds_total:
            return rows
        params = {"round": info.idx, "device": device}
        if info.state is RoundState.EVALUATED:
            rounds.start_next_round(project)
        elif info.state is RoundState.OPEN:
            say(f"round {info.idx}: scoring")
            run_job_here(project, "score", params, log=log)
        elif info.state is RoundState.SCORED:
            picks = propose_round(project, strategy, budget)
            say(f"round {info.idx}: proposed {', '.join(q.case_id for q in picks) or 'nothing'}")
        elif info.state is RoundState.PROPOSED:
            rounds.approve(project)
            if rounds.current_round(project).state is RoundState.PROPOSED:  # nothing was left to pick
                raise StateError(
                    f"round {info.idx} has no pick to approve: every unlabelled pool case is labelled or "
                    "excluded; stop here, or import more cases (`assft import`)."
                )
        elif info.state is RoundState.APPROVED:
            labelled = labels.label_with_oracle(project)
            say(f"round {info.idx}: oracle labelled " + ", ".join(v.case_id for v in labelled))
            if measure_effort:
                efforts = annotation.record_oracle_effort(project, labelled, device=device)
                say(f"round {info.idx}: annotation effort from f_{info.idx}'s pre-annotations: "
                    f"{sum(e.changed_voxels for e in efforts)} voxel(s), {sum(e.changed_slices for e in efforts)} "
                    "slice(s) to change")
        elif info.state is RoundState.LABELLED or _trained_by_job(project, info):
            say(f"round {info.idx}: fine-tuning ({request.ssft_mode.value}, {request.supervised_steps}"
                f"+{request.ssft_steps} steps)")
            run_job_here(project, "train", {**params, **request.to_params()}, log=log)
        else:  # trained elsewhere without evaluation
            run_job_here(project, "evaluate", params, log=log)


def _trained_by_job(project: Project, info: RoundInfo) -> bool:
    """The round is `trained` by a train job that was to evaluate too (killed in between)."""
    if info.state is not RoundState.TRAINED:
        return False
    latest = next((j for j in jobs.list_jobs(project) if j.kind == "train"), None)
    return latest is not None and latest.params.get("round") == info.idx and bool(latest.params.get("evaluate", True)) \
        and latest.status is not JobStatus.DONE


def _row(model_round: int, labelled: int, metrics: Mapping[str, Any], wall_s: float | None) -> RoundRow:
    per_site = {
        str(site): summary.get("mean_dice")
        for site, summary in (metrics.get("per_site") or {}).items()
        if isinstance(summary, Mapping)
    }
    return RoundRow(
        round=model_round,
        labelled=labelled,
        mean_dice=metrics.get("mean_dice"),
        per_site=per_site,
        wall_s=wall_s,
        evaluated_on=str(metrics.get("evaluated_on", "test")),
        ssft_admitted=metrics.get("ssft_admitted"),
    )


def _round_wall(project: Project, round_idx: int) -> float | None:
    """Seconds of the round's finished jobs (last attempt of each)."""
    spans = [
        j.finished_at - j.started_at
        for j in jobs.list_jobs(project, reap=False)
        if j.params.get("round") == round_idx and j.status is JobStatus.DONE and j.started_at and j.finished_at
    ]
    return float(sum(spans)) if spans else None


def format_table(rows: list[RoundRow]) -> str:
    """The loop's table for a terminal: round, labelled, mean Dice, per-site Dice, wall time."""
    sites = sorted({s for r in rows for s in r.per_site})
    head = f"{'round':>5} {'labelled':>8} {'mean Dice':>9} " + " ".join(f"{s:>7}" for s in sites) + f" {'wall s':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        dice = "n/a" if r.mean_dice is None else f"{r.mean_dice:.3f}"
        site = " ".join(f"{'n/a' if r.per_site.get(s) is None else f'{r.per_site[s]:.3f}':>7}" for s in sites)
        wall = "-" if r.wall_s is None else f"{r.wall_s:.0f}"
        mark = " (biased: new labels only)" if r.evaluated_on != "test" else ""
        lines.append(f"{r.round:>5} {r.labelled:>8} {dice:>9} {site} {wall:>7}{mark}")
    return "\n".join(lines)
