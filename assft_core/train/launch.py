"""Start `torchrun` on this node: the command line, and a blocking launcher.

One node (`nnodes=1`) uses torchrun's `--standalone` rendezvous, which picks a free port on
localhost itself. Several nodes use the c10d rendezvous at `rdzv_endpoint` (host:port of any
node that every node can reach); run the same command on every node (docs/distributed.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from assft_core.train.distributed import DistributedError

ENTRY_MODULE = "assft_core.train.ddp_entry"


def torchrun_command(
    nproc: int,
    entry_args: Sequence[str],
    *,
    target: str = ENTRY_MODULE,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "assft",
) -> list[str]:
    """The argv of `python -m torch.distributed.run … <target> <entry_args>` for this interpreter.

    Args:
        nproc: processes on this node (one per GPU; any number on CPU).
        entry_args: arguments of the target, e.g. `["train", "run/ddp_train.json"]`.
        target: a module name (run with `-m`), or a path to a `.py` script.
        nnodes: number of nodes in the job.
        rdzv_endpoint: "host:port" of the rendezvous; required when `nnodes > 1`.
        rdzv_id: job id shared by the nodes of one job.

    Returns:
        The command as a list, ready for `subprocess`.

    Raises:
        DistributedError: `nproc` or `nnodes` below 1, or several nodes without an endpoint.
    """
    if nproc < 1 or nnodes < 1:
        raise DistributedError(f"nproc={nproc}, nnodes={nnodes}: both must be at least 1.")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise DistributedError(
                f"{nnodes} nodes need a rendezvous endpoint. Fix: pass rdzv_endpoint='host:port' of a "
                "node every node can reach (the same on every node)."
            )
        cmd += ["--nnodes", str(nnodes), "--rdzv-backend", "c10d"]
        cmd += ["--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", rdzv_id]
    cmd += [target] if target.endswith(".py") else ["-m", target]
    return cmd + [str(a) for a in entry_args]


def launch_torchrun(
    nproc: int,
    module_args: Sequence[str],
    *,
    target: str = ENTRY_MODULE,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "assft",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    capture_output: bool = False,
    timeout_s: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `torchrun_command(...)` to the end (this node's part of the job).

    Workers inherit this process's environment plus `env`; torchrun stops every worker as soon as
    one fails, and its exit code is non-zero then. On CPU, torchrun sets OMP_NUM_THREADS=1 per
    worker unless `env` says otherwise.

    Args:
        nproc, module_args, target, nnodes, rdzv_endpoint, rdzv_id: see `torchrun_command`
            (`module_args` = `entry_args`).
        env: extra environment variables for the workers.
        cwd: working folder of the workers (default: this process's).
        capture_output: capture stdout/stderr as text (rank 0 prints progress as JSON lines).
        timeout_s: kill the launcher after this many seconds (None: no limit).

    Returns:
        The finished process (`returncode`, and `stdout`/`stderr` when captured).

    Raises:
        DistributedError: see `torchrun_command`.
        subprocess.TimeoutExpired: `timeout_s` passed.
    """
    cmd = torchrun_command(
        nproc, module_args, target=target, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id
    )
    return subprocess.run(
        cmd,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=capture_output,
        text=True,
        timeout=timeout_s,
        check=False,
    )
