"""A trivial job kind for the job tests, imported through $ASSFT_JOB_MODULES by detached runners."""

from __future__ import annotations

import os
import time
from typing import Any

from assft_core.session.jobs import JobContext, register_job_kind


def count(ctx: JobContext) -> dict[str, Any]:
    """Count to `steps` with 0.05 s sleeps; checkpoint every `checkpoint_every` steps.

    Params: steps, checkpoint_every, crash_at (os._exit there: a killed process), ignore_stop.
    Resumes from the step in the checkpoint file's name.
    """
    p = ctx.params
    start = 0
    if ctx.resume_from is not None:
        start = int(ctx.resume_from.read_text())
    step = start
    for step in range(start + 1, p["steps"] + 1):
        if ctx.should_stop() and not p.get("ignore_stop"):
            return {"stopped_at": step - 1, "started_at_step": start}
        time.sleep(0.05)
        if step == p.get("crash_at"):
            os._exit(3)
        if step % p.get("checkpoint_every", 10**9) == 0:
            target = ctx.checkpoint_path(step)
            tmp = target.with_name(".tmp-" + target.name)
            tmp.write_text(str(step))
            os.replace(tmp, target)
        ctx.progress(step / p["steps"], f"step {step}", step=step)
    return {"final_step": step, "started_at_step": start}


def boom(ctx: JobContext) -> None:
    raise RuntimeError("handler exploded")


register_job_kind("test_count", count)
register_job_kind("test_boom", boom)
