"""Job kind "bench": the strategy benchmark as a detached job, so the dashboard can launch one.

Parameters (all optional): `config` ("tiny", "default", "full"), `ssft` (bool: add the SSFT
ablation), `strategies`, `seeds`, `pools` (overrides), `datasets` ({pool: folder}), `model`
(folder; default the demo model), `device`, `max_units`. Results go to `<run folder>/results`
(the Compare page reads `strategies.json` there). A cancelled, killed or resumed job continues
the same benchmark: finished runs are kept and skipped (`runs.RunStore`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assft_core.session.jobs import JobContext, get_job, register_job_kind

BENCH_KIND = "bench"
RESULTS_DIR = "results"


def run_bench_job(ctx: JobContext) -> dict[str, Any]:
    """Run (or continue) the benchmark asked for in `ctx.params`; the files written as metrics.

    Raises:
        AssftError: for bad parameters, datasets or models, or a failed run (the job fails).
    """
    from assft_core.bench.strategy_cli import bench_config, run_benchmark

    params = ctx.params
    cfg = bench_config(
        str(params.get("config", "default")),
        ssft=bool(params.get("ssft", False)),
        strategies=params.get("strategies"),
        seeds=params.get("seeds"),
        pools=params.get("pools"),
    )
    out = ctx.run_dir / RESULTS_DIR
    outcome = run_benchmark(
        cfg,
        out,
        datasets={pool: Path(folder) for pool, folder in (params.get("datasets") or {}).items()},
        model=Path(params["model"]) if params.get("model") else None,
        device=str(params.get("device", "auto")),
        command=["assft", "job", "run", str(ctx.job_id), f"(kind {BENCH_KIND})"],
        resume=True,  # the job's own folder: a resumed job continues its benchmark
        max_units=params.get("max_units"),
        log=lambda line: ctx.progress(_fraction(ctx), line),
        should_stop=ctx.should_stop,
        on_progress=lambda fraction, message: ctx.progress(fraction, message, units_done_fraction=fraction),
    )
    return {
        "results": str(out),
        "computed": len(outcome.computed),
        "skipped": len(outcome.skipped),
        "remaining": len(outcome.remaining),
        "files": {stem: [str(p) for p in w.files] for stem, w in outcome.reports.items()},
        "png_errors": {stem: w.png_error for stem, w in outcome.reports.items() if w.png_error},
    }


def _fraction(ctx: JobContext) -> float:
    """The job's last recorded fraction (a log line must not move the bar back to 0)."""
    return get_job(ctx.project, ctx.job_id).progress


register_job_kind(BENCH_KIND, run_bench_job)
