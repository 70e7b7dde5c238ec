"""Job kind "score": the scoring step of the current round, run by `assft job run` or in-process.

Parameters: `round` (optional; refused when the project is in another round), `device`
("auto", "cpu", "cuda[:i]"). See `assft_core.session.scoring_round.score_round`.
"""

from __future__ import annotations

from typing import Any

from assft_core.session.jobs import JobContext, register_job_kind
from assft_core.session.progress import Echo
from assft_core.session.scoring_round import score_round
from assft_core.session.workspace import check_job_round

SCORE_KIND = "score"


def run_score_job(ctx: JobContext) -> dict[str, Any]:
    """Score the current round with f_0 (cached) and f_t, store the query table, mark it scored.

    Raises:
        StateError: the round moved on, or is not `open` / `scored`.
    """
    check_job_round(ctx.project, ctx.params)
    summary = score_round(ctx.project, ctx, device=str(ctx.params.get("device", "auto")), echo=Echo())
    return summary.to_metrics()


register_job_kind(SCORE_KIND, run_score_job)
