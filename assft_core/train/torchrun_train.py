"""`train` on N processes, called from one: write a spec, run torchrun, stream progress, load weights.

`train_with_torchrun` has `train`'s signature plus the model card and the process count, so a
caller that runs `train` in one process (a round's training job, `assft train --nproc N`) can
swap it in unchanged. The network is trained in place (its weights are replaced by the result),
progress events arrive through `on_progress` as the ranks make them, and `should_stop` stops
every rank cleanly at the next step, with a checkpoint to resume from (docs/distributed.md).

Layout under `run_dir` (the trainer's run folder): `config.json` and `checkpoint.pt` as for
`train`, `torchrun.log` (the launcher's and the workers' stderr), and, while the job runs,
`ddp/` (the spec, the training arrays and the starting model), removed after a finished run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from assft_core.config import TrainConfig
from assft_core.models.card import ModelCard
from assft_core.models.loaded import save_model
from assft_core.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from assft_core.train.data import TrainData
from assft_core.train.ddp_spec import write_train_spec
from assft_core.train.distributed import DistributedError
from assft_core.train.launch import torchrun_command
from assft_core.train.trainer import ProgressEvent, TrainResult

SPEC_DIR = "ddp"
LOG_NAME = "torchrun.log"
STOP_NAME = "STOP"
_LOG_TAIL_LINES = 15


def train_with_torchrun(
    cfg: TrainConfig,
    network: nn.Module,
    data: TrainData,
    *,
    card: ModelCard,
    nproc: int,
    run_dir: Path,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume_from: Path | None = None,
    phase: str | None = None,
    sync_batchnorm: bool = True,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str = "assft",
    env: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train `network` with DDP on `nproc` processes of this node (and `nnodes` nodes).

    The effective batch is `nproc · nnodes · cfg.batch_size` (per-rank batch in `cfg`); with one
    process this is `train` itself, run in a child process.

    Args:
        cfg, network, data, run_dir, on_progress, should_stop, resume_from, phase: as `train`;
            `on_progress` is called on the node of rank 0 only.
        card: the network's model card (how each rank builds it).
        nproc: processes on this node, one per GPU (any number on CPU).
        sync_batchnorm: BatchNorm as SyncBatchNorm with several CUDA ranks (see `TrainSpec`).
        nnodes, rdzv_endpoint, rdzv_id: several nodes (see `torchrun_command`); `run_dir` must then
            be on storage every node sees.
        env: extra environment variables for the workers (e.g. NCCL_SOCKET_IFNAME).

    Returns:
        As `train`; `network` holds the trained weights, in eval mode.

    Raises:
        DistributedError: torchrun or a rank failed (the message quotes the rank's error and names
            the log), or bad `nproc` / `nnodes` / rendezvous settings.
    """
    run_dir = Path(run_dir)
    work = run_dir / SPEC_DIR
    if work.exists():
        shutil.rmtree(work)  # left by a killed job; rebuilt from the arguments
    model_dir = save_model(network, dataclasses.replace(card, checkpoint="model.pt", source_stats=None), work / "model")
    spec = write_train_spec(
        work, model_dir=model_dir, data=data, cfg=cfg, run_dir=run_dir, phase=phase, sync_batchnorm=sync_batchnorm
    )
    stop_file = work / STOP_NAME
    args = ["train", str(spec), "--stop-file", str(stop_file)]
    if resume_from is not None:
        args += ["--resume-from", str(Path(resume_from).resolve())]
    cmd = torchrun_command(nproc, args, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint, rdzv_id=rdzv_id)
    log = run_dir / LOG_NAME
    done = _run(cmd, log, {**os.environ, **(env or {})}, stop_file, on_progress, should_stop)
    state = load_checkpoint(run_dir)
    network.load_state_dict(state["model"])
    network.eval()
    shutil.rmtree(work)
    return TrainResult(
        step=int(state["step"]),
        loss=float(state["loss"]),
        checkpoint_path=run_dir / CHECKPOINT_NAME,
        history=[ProgressEvent(**e) for e in state["history"]],
        stopped=bool(done.get("stopped", False)),
    )


def _run(
    cmd: list[str],
    log: Path,
    env: dict[str, str],
    stop_file: Path,
    on_progress: Callable[[ProgressEvent], None] | None,
    should_stop: Callable[[], bool] | None,
) -> dict[str, Any]:
    """Run torchrun, relaying rank 0's JSON lines; returns its "done" message.

    stderr goes to `log` (a pipe could fill and stall the workers); other stdout lines too.
    An exception in a callback (a cancelled job) terminates torchrun, which stops every rank.
    """
    done: dict[str, Any] = {}
    with log.open("w", encoding="utf-8") as log_fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_fh, text=True, env=env)
        try:
            for line in proc.stdout or ():
                message = _message(line)
                if message is None:
                    log_fh.write(line)
                elif message.pop("event") == "progress":
                    if on_progress is not None:
                        on_progress(ProgressEvent(**message))
                    if should_stop is not None and should_stop():
                        stop_file.touch()
                else:
                    done = message
            code = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
    if code != 0:
        raise DistributedError(f"torchrun exited with code {code}: {_failure(log)} (full log: {log})")
    return done


def _message(line: str) -> dict[str, Any] | None:
    """A JSON line of the entry point, or None for any other output."""
    if not line.startswith("{"):
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "event" in message else None


def _failure(log: Path) -> str:
    """The ranks' own error lines, or the log's last lines when no rank printed one."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    errors = [line for line in lines if line.startswith("error (rank")]
    return " | ".join(errors or lines[-_LOG_TAIL_LINES:])
