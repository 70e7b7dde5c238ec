"""Entry point of a detached job: `python -m assft_core.session.runner --project DIR JOB_ID`.

Does exactly what `assft job run` does, without building the whole `assft` parser (which imports
every engine package's commands: seconds of start-up on a busy machine before the first heartbeat).
Exit code 0 when the job ends done or cancelled, 1 when it fails or cannot run.
"""

from __future__ import annotations

import argparse
import sys

from assft_core.errors import AssftError
from assft_core.session.jobs import JobStatus, run_job_in_process


def main(argv: list[str] | None = None) -> int:
    """Run one queued job of a project in this process; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m assft_core.session.runner", description=__doc__)
    parser.add_argument("--project", required=True, metavar="DIR", help="project folder")
    parser.add_argument("job_id", type=int, metavar="JOB_ID")
    args = parser.parse_args(argv)
    try:
        status = run_job_in_process(args.project, args.job_id)
    except AssftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"job {args.job_id}: {status.value}")
    return 0 if status in (JobStatus.DONE, JobStatus.CANCELLED) else 1


if __name__ == "__main__":
    sys.exit(main())
