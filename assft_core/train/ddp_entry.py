"""`torchrun` entry point: fine-tuning and scoring passes on N processes, or one without a launcher.

    # 4 GPUs of one node (effective batch 4 · batch_size):
    python -m torch.distributed.run --standalone --nproc-per-node 4 -m assft_core.train.ddp_entry train SPEC
    # the same job in one process, no launcher:
    python -m assft_core.train.ddp_entry train SPEC
    # sharded scoring pass:
    python -m torch.distributed.run --standalone --nproc-per-node 4 -m assft_core.train.ddp_entry score SPEC

`train SPEC` takes `--resume` (the run folder's checkpoint, if any), `--resume-from CKPT` and
`--stop-file PATH` (a clean, checkpointed stop on every rank once the file exists).
SPEC is written by `assft_core.train.ddp_spec` (`write_train_spec`, `write_score_spec`);
`assft_core.train.launch.launch_torchrun` builds these commands, and
`assft_core.train.torchrun_train.train_with_torchrun` wraps all of it behind `train`'s signature.
Rank 0 prints one JSON object per
line on stdout: `{"event": "progress", ...ProgressEvent}` per step, then `{"event": "done", ...}`.
A user error is printed as `error: ...` on stderr with exit code 1 (torchrun then stops every rank).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from assft_core.errors import AssftError
from assft_core.query.sharded import score_cases_sharded
from assft_core.query.table import ScoreTable
from assft_core.train import distributed as ddp
from assft_core.train.checkpoint import CHECKPOINT_NAME
from assft_core.train.ddp_spec import load_train_data, read_score_spec, read_train_spec
from assft_core.train.trainer import ProgressEvent, TrainResult, train


def run_train_spec(
    spec_path: str | Path,
    *,
    resume_from: Path | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[TrainResult, nn.Module]:
    """Run the training job of a spec on this rank (joins the torchrun group when launched).

    The trained weights are in `<run_dir>/checkpoint.pt` (key "model"), written by rank 0.

    Args:
        spec_path: a spec written by `write_train_spec`.
        resume_from: a checkpoint (or run folder) of a killed or stopped run of this spec to
            continue from; read by every rank.
        on_progress: called on rank 0 with each step's event (losses of the global batch).
        should_stop: polled on rank 0 after each step; True stops every rank at that step
            (checkpoint written; continue with `resume_from`).

    Returns:
        The trainer's result and the trained network (eval mode), identical on every rank.

    Raises:
        SpecError: unreadable spec or samples.
        DistributedError: the ranks ended with different weights (checked by digest), or as
            `init_distributed`.
        StateError / ModelError / DataError / TrainingDiverged: as `train` and `load_model`.
    """
    from assft_core.models.loaded import load_model  # heavy imports only when a job runs

    spec = read_train_spec(spec_path)
    ctx = ddp.init_distributed(spec.train.device)
    network = load_model(spec.model_dir, device=str(ctx.device)).network
    if spec.sync_batchnorm and ctx.world_size > 1 and ctx.device.type == "cuda":
        # Batch statistics over the global batch (PyTorch's SyncBatchNorm runs on GPUs only).
        network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
    result = train(
        spec.train,
        network,
        load_train_data(spec),
        run_dir=spec.run_dir,
        on_progress=on_progress,
        should_stop=should_stop,
        resume_from=resume_from,
        phase=spec.phase,
    )
    digests = ddp.all_gather_objects(ddp.state_digest(network))
    if len(set(digests)) > 1:
        raise ddp.DistributedError(
            f"{spec_path}: the ranks ended with different weights (digests {sorted(set(digests))}). "
            "Fix: report this with the run folder; resume from its checkpoint in one process meanwhile."
        )
    return result, network


def run_score_spec(spec_path: str | Path) -> ScoreTable:
    """Run the scoring pass of a spec on this rank; rank 0 saves the table to the spec's `out_dir`.

    Each rank loads the model on its own device and preprocesses only its own cases.

    Returns:
        The whole table, in the spec's case order, on every rank.

    Raises:
        SpecError: unreadable spec. DataError / ModelError / DistributedError: as
        `load_case`, `load_model`, `score_cases` and `init_distributed`.
    """
    from assft_core.data.case_cache import load_case
    from assft_core.models.loaded import load_model

    spec = read_score_spec(spec_path)
    ctx = ddp.init_distributed(spec.inference.device)
    model = load_model(spec.model_dir, device=str(ctx.device))
    return score_cases_sharded(
        model,
        spec.cases,
        load_case=lambda record: load_case(record, spec.preprocess, cache_dir=spec.preprocess_cache),
        model_tag=spec.model_tag,
        cfg=spec.query,
        infer_cfg=dataclasses.replace(spec.inference, device=str(ctx.device)),
        out_dir=spec.out_dir,
        cache_key=spec.cache_key,
    )


def _run_checkpoint(spec_path: str) -> Path | None:
    """The spec's run-folder checkpoint, or None when the run never wrote one (start afresh)."""
    checkpoint = read_train_spec(spec_path).run_dir / CHECKPOINT_NAME
    return checkpoint if checkpoint.is_file() else None


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run `train SPEC [--resume | --resume-from CKPT] [--stop-file PATH]` or `score SPEC`; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m assft_core.train.ddp_entry",
        description="ASSFT Studio jobs under torchrun (or in one process without a launcher).",
    )
    sub = parser.add_subparsers(dest="job", required=True)
    p_train = sub.add_parser("train", help="fine-tune with DDP from a spec written by write_train_spec")
    p_train.add_argument("spec", help="the spec file (ddp_train.json)")
    p_train.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint if any")
    p_train.add_argument("--resume-from", type=Path, help="continue from this checkpoint (or run folder)")
    p_train.add_argument(
        "--stop-file", type=Path, help="stop cleanly (checkpoint written) once this file exists; polled by rank 0"
    )
    p_score = sub.add_parser("score", help="sharded scoring pass from a spec written by write_score_spec")
    p_score.add_argument("spec", help="the spec file (ddp_score.json)")
    args = parser.parse_args(argv)
    try:
        if args.job == "train":
            stop_file = args.stop_file
            result, _ = run_train_spec(
                args.spec,
                resume_from=args.resume_from or (_run_checkpoint(args.spec) if args.resume else None),
                on_progress=lambda e: _emit("progress", **e.to_dict()),
                should_stop=(lambda: stop_file.exists()) if stop_file is not None else None,
            )
            if ddp.is_main_process():
                _emit("done", step=result.step, loss=result.loss, stopped=result.stopped,
                      checkpoint=str(result.checkpoint_path), world_size=ddp.get_world_size())
        else:
            table = run_score_spec(args.spec)
            if ddp.is_main_process():
                _emit("done", cases=len(table), model_tag=table.model_tag, world_size=ddp.get_world_size())
        return 0
    except AssftError as exc:
        print(f"error (rank {ddp.get_rank()}): {exc}", file=sys.stderr)
        return 1
    finally:
        ddp.shutdown()


if __name__ == "__main__":
    sys.exit(main())
