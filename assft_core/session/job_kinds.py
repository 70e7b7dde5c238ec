"""The session's job kinds: "score", "train" and "evaluate", the three job steps of a round.

Each handler checks that the job still belongs to the project's current round, then calls the
session function that does the work; `assft_core.session.jobs` imports this module (it is first
in `JOB_MODULES`), so `assft job run` in a detached process registers the same kinds.

"score" parameters: `round` (optional; refused when the project is in another round), `device`
("auto", "cpu", "cuda[:i]"). See `assft_core.session.scoring_round.score_round`.
"train" parameters: `round`, `supervised_steps`, `ssft_steps`, `ssft_mode`, `device`, `evaluate`
(see `TrainRequest`); resumed by `assft job resume` from the phase checkpoints in its run folder.
"evaluate" parameters: `round` (evaluate the round's trained model and mark it evaluated), or
`baseline: true` (f_0 on the test split, round 0 of the protocol); `device`.
"""

from __future__ import annotations

from typing import Any

from assft_core.session.evaluation import evaluate_baseline, evaluate_round
from assft_core.session.jobs import JobContext, register_job_kind
from assft_core.session.progress import Echo
from assft_core.session.scoring_round import score_round
from assft_core.session.training_round import TrainRequest, train_round
from assft_core.session.workspace import check_job_round

SCORE_KIND = "score"
TRAIN_KIND = "train"
EVALUATE_KIND = "evaluate"


def run_score_job(ctx: JobContext) -> dict[str, Any]:
    """Score the current round with f_0 (cached) and f_t, store the query table, mark it scored.

    Raises:
        StateError: the round moved on, or is not `open` / `scored`.
    """
    check_job_round(ctx.project, ctx.params)
    summary = score_round(ctx.project, ctx, device=str(ctx.params.get("device", "auto")), echo=Echo())
    return summary.to_metrics()


def run_train_job(ctx: JobContext) -> dict[str, Any]:
    """Fine-tune f_t on the round's labels (+ SSFT), save f_{t+1}, evaluate it.

    Raises:
        StateError: the round moved on, or is not `labelled`.
    """
    check_job_round(ctx.project, ctx.params)
    request = TrainRequest.from_params(ctx.project, ctx.params)
    return train_round(ctx.project, request, run_dir=ctx.run_dir, sink=ctx, echo=Echo())


def run_evaluate_job(ctx: JobContext) -> dict[str, Any]:
    """Evaluate the round's trained model (or f_0 with `baseline`) and store the metrics.

    Raises:
        StateError: the round moved on, or is not `trained` (round evaluation).
    """
    device = str(ctx.params.get("device", "auto"))
    if ctx.params.get("baseline"):
        ctx.progress(0.0, "evaluating f_0 on the test split")
        return {"baseline": evaluate_baseline(ctx.project, device=device, sink=ctx)}
    check_job_round(ctx.project, ctx.params)
    ctx.progress(0.0, "evaluating the round's model")
    info = evaluate_round(ctx.project, device=device, sink=ctx)
    return {key: info.metrics.get(key) for key in ("mean_dice", "mean_hd95_mm", "evaluated_on", "n_cases", "labelled")}


register_job_kind(SCORE_KIND, run_score_job)
register_job_kind(TRAIN_KIND, run_train_job)
register_job_kind(EVALUATE_KIND, run_evaluate_job)
