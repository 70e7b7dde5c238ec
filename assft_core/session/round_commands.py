"""`assft score | train | evaluate | export | track`: the round's long steps as jobs, the adapted model out, MLflow.

Same project convention as `assft status`: `-p/--project DIR`, default `$ASSFT_PROJECT`, else the
current folder. `--wait` (default) runs the job in this process, printing progress, through the
same handler a detached job runs; `--detach` starts it as its own process (it outlives the shell;
follow it with `assft job list`). An interrupted job (killed, failed, cancelled) asked for again
with the same settings resumes from its checkpoints. Exit codes: 0 ok, 1 user error (message, no
traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from assft_core.config import SSFTMode
from assft_core.errors import DataError, StateError
from assft_core.fsutil import building_folder
from assft_core.session import labels, rounds
from assft_core.session.commands import project_from_args, with_project_option
from assft_core.session.evaluation import hd95_text
from assft_core.session.jobs import JobInfo
from assft_core.session.project import Project
from assft_core.session.rounds import RoundState


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `score`, `train`, `evaluate` and `export` to `assft`."""
    p = with_project_option(sub.add_parser(
        "score", help="score the round's cases with f_0 and the latest model (job)",
        description="Run the round's scoring job: every usable pool and test case through f_0 (cached for the "
        "whole project) and, after round 0, the latest fine-tuned model; stores the table the query reads."))
    _job_options(p)
    p.set_defaults(func=_score)

    p = with_project_option(sub.add_parser(
        "train", help="fine-tune on the round's labels, with SSFT, then evaluate (job)",
        description="Run the round's training job: supervised phase on the labelled cases, then selective "
        "semi-supervised fine-tuning (SSFT) on reliable pseudo-labelled cases, save the new model and "
        "evaluate it on the test split. Resumes a killed job from its last checkpoint."))
    p.add_argument("--ssft", choices=[m.value for m in SSFTMode], help="SSFT mode (default: the project's, selective)")
    p.add_argument("--steps", type=int, metavar="S", help="supervised steps (default: the project's)")
    p.add_argument("--ssft-steps", type=int, metavar="SU", help="SSFT steps (default: the project's)")
    p.add_argument("--recipe", metavar="NAME[+NAME]",
                   help="retention recipe, one or more of paper, adabn, l2sp, retention, decoder, lora, wise joined "
                   "by '+' (default: the project's; docs/METHOD.md §6)")
    p.add_argument("--no-evaluate", action="store_true", help="stop after training (evaluate later with `assft evaluate`)")
    p.add_argument("--again", action="store_true",
                   help="fine-tune a trained round again with these settings; its model is kept as "
                   "models/round-NNN-earlier-K and its test metrics in the history")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="training processes on this machine, one GPU each (DDP under torchrun; docs/distributed.md)")
    _job_options(p)
    _mlflow_option(p)
    p.set_defaults(func=_train)

    p = with_project_option(sub.add_parser(
        "evaluate", help="evaluate the round's trained model, or f_0 with --baseline (job)",
        description="Dice per class and mean, HD95 in mm, overall and per site, on each test case's native grid; "
        "without labelled test cases, the newly labelled cases under the model that chose them (marked biased)."))
    p.add_argument("--baseline", action="store_true", help="evaluate f_0 as it is (round 0 of the protocol)")
    _job_options(p)
    _mlflow_option(p)
    p.set_defaults(func=_evaluate)

    p = with_project_option(sub.add_parser(
        "track", help="log every round (settings, per-site metrics, picks, model card) to a local MLflow store",
        description="Write f_0's evaluation and each trained round to the MLflow store in DIR (SQLite, artefacts "
        "beside it; nothing is sent anywhere). Rounds already logged are skipped, rounds evaluated since are "
        "updated. Browse with `mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db` (needs the full mlflow)."))
    p.add_argument("--mlflow", type=Path, required=True, metavar="DIR", help="local tracking folder")
    p.set_defaults(func=_track)

    p = with_project_option(sub.add_parser(
        "export", help="write the adapted model (checkpoint + model card) and the metrics to a new folder",
        description="Copy a trained round's model folder (weights, model card, source statistics, SSFT report) and "
        "every stored metric (per round, f_0 baseline, settings, labels) into OUT. OUT must not exist or be empty."))
    p.add_argument("out", type=Path, metavar="OUT", help="new or empty folder")
    p.add_argument("--round", type=int, dest="round_idx", help="round whose model to export (default: the latest trained)")
    p.add_argument(
        "--format", dest="fmt", default="assft", choices=["assft", "monai_bundle", "nnunet"],
        help="also write the model as a MONAI bundle (out/monai_bundle/) or an nnU-Net v2 model folder "
        "(out/nnunet/, for models that came from one); model/ is always written",
    )
    p.set_defaults(func=_export)


def _job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="auto (CUDA when present), cpu or cuda[:i] (default: the project's)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--wait", dest="detach", action="store_false", help="run here and wait (default)")
    mode.add_argument("--detach", dest="detach", action="store_true", help="run as a background process")
    p.set_defaults(detach=False)


def _mlflow_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mlflow", type=Path, metavar="DIR",
                   help="when the job is done, log the project's rounds to the local MLflow store in DIR (`assft track`)")


def _track_after(project: Project, args: argparse.Namespace) -> None:
    """`assft track` after a waited-for job, when `--mlflow` was given."""
    if args.mlflow is None:
        return
    from assft_core.session.tracking import track_project

    runs = track_project(project, args.mlflow)
    changed = [r for r in runs if r.action != "unchanged"]
    print(f"MLflow ({args.mlflow}): {len(changed)} run(s) logged or updated, {len(runs) - len(changed)} unchanged")


def _track(args: argparse.Namespace) -> int:
    from assft_core.session.tracking import track_project

    project = project_from_args(args)
    runs = track_project(project, args.mlflow)
    if not runs:
        print(f"nothing to log yet: no trained round and no f_0 evaluation in {project.folder}; evaluate f_0 "
              f"(`assft evaluate -p {project.folder} --baseline`) or train a round (`assft train`) first")
        return 0
    for r in runs:
        name = "f_0 (baseline)" if r.round == "baseline" else f"round {r.round}"
        print(f"{name}: {r.action} (run {r.run_id})")
    print(f"store: {Path(args.mlflow).absolute() / 'mlflow.db'}")
    return 0


def _run(project: Project, kind: str, params: dict[str, Any], detach: bool) -> JobInfo:
    from assft_core.session.loop import launch_job, run_job_here

    if detach:
        job = launch_job(project, kind, params, log=print)
        print(f"{kind} job #{job.id} started in the background (pid {job.pid}); log: {job.run_dir / 'job.log'}")
        print(f"follow it with `assft job list -p {project.folder}`; cancel with `assft job cancel -p {project.folder} {job.id}`")
        return job
    return run_job_here(project, kind, params, log=print)


def _require(project: Project, allowed: set[RoundState], action: str) -> rounds.RoundInfo:
    """The current round if its state allows `action` (checked before a job is made, so a
    command given too early leaves no failed job behind).

    Raises:
        StateError: naming the state and the allowed next step.
    """
    info = rounds.current_round(project)
    if info.state not in allowed:
        raise StateError(
            f"cannot {action}: round {info.idx} is '{info.state.value}'; allowed next step: {rounds.NEXT_STEP[info.state]}."
        )
    return info


def _score(args: argparse.Namespace) -> int:
    project = project_from_args(args)
    info = _require(project, {RoundState.OPEN, RoundState.SCORED}, "score")
    params = {"round": info.idx, "device": args.device or project.config.inference.device}
    job = _run(project, "score", params, args.detach)
    if not args.detach:
        m = job.metrics
        print(f"round {info.idx} scored: {m.get('n_pool')} pool, {m.get('n_test')} test case(s) ({m.get('table')})")
        for note in m.get("unavailable") or []:
            print(f"  note: {note}")
        print(f"next: {rounds.NEXT_STEP[rounds.current_round(project).state]}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from assft_core.session.round_change import format_change, round_changes
    from assft_core.session.training_round import TrainRequest, reopen_round

    project = project_from_args(args)
    _refuse_detached_tracking(args)
    allowed = {RoundState.TRAINED, RoundState.EVALUATED} if args.again else {RoundState.LABELLED, RoundState.TRAINED}
    info = _require(project, allowed, "fine-tune the round again" if args.again else "train")
    request = TrainRequest.from_params(
        project,
        {"ssft_mode": args.ssft, "supervised_steps": args.steps, "ssft_steps": args.ssft_steps,
         "device": args.device, "evaluate": not args.no_evaluate, "nproc": args.nproc, "recipe": args.recipe},
    )
    if args.again:
        earlier = reopen_round(project)
        if earlier is not None:
            print(f"round {info.idx}: the earlier model is kept in {earlier}")
    job = _run(project, "train", {"round": info.idx, **request.to_params()}, args.detach)
    if not args.detach:
        m = job.metrics
        print(f"round {info.idx} trained: {m.get('labelled')} labelled, SSFT {m.get('ssft_mode')} admitted "
              f"{m.get('admitted')} unlabelled case(s); model {m.get('checkpoint')}")
        for warning in m.get("ssft_warnings") or []:
            print(f"  SSFT: {warning}")
        if m.get("mean_dice") is not None:
            stored = next((r.metrics.get("overall") for r in rounds.list_rounds(project) if r.idx == info.idx), None)
            print(f"mean Dice {m['mean_dice']:.3f}, {hd95_text(stored or m)} ({m.get('evaluated_on')})")
        change = next((c for c in round_changes(project) if c.round == info.idx), None)
        if change is not None:
            print(f"what round {info.idx} changed (test Dice):")
            print(format_change(change))
        _track_after(project, args)
        print(f"next: {rounds.NEXT_STEP[rounds.current_round(project).state]}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    project = project_from_args(args)
    _refuse_detached_tracking(args)
    device = args.device or project.config.inference.device
    if args.baseline:
        params: dict[str, Any] = {"baseline": True, "device": device}
    else:
        params = {"round": _require(project, {RoundState.TRAINED}, "evaluate").idx, "device": device}
    job = _run(project, "evaluate", params, args.detach)
    if not args.detach:
        metrics = job.metrics.get("baseline", job.metrics)
        dice = metrics.get("mean_dice")
        stored = metrics.get("overall") or next(
            (r.metrics.get("overall") for r in rounds.list_rounds(project) if r.idx == params.get("round")), None
        ) or metrics
        print(f"mean Dice {'n/a' if dice is None else f'{dice:.3f}'}, {hd95_text(stored)} ({metrics.get('evaluated_on')})")
        _track_after(project, args)
    return 0


def _refuse_detached_tracking(args: argparse.Namespace) -> None:
    if args.mlflow is not None and args.detach:
        raise DataError("--mlflow logs when the job is done, so it needs --wait; with --detach, run "
                        "`assft track --mlflow DIR` once the job has finished.")


def _export(args: argparse.Namespace) -> int:
    project = project_from_args(args)
    out = export_project(project, args.out, round_idx=args.round_idx, fmt=args.fmt)
    extra = "" if args.fmt == "assft" else f", {args.fmt}/ (the same model as a {args.fmt} folder)"
    print(f"exported to {out}: model/ (weights + model card){extra} and metrics/")
    return 0


def export_project(project: Project, out: Path, *, round_idx: int | None = None, fmt: str = "assft") -> Path:
    """Write a trained round's model folder and every stored metric into a new folder `out`.

    `out/model/`: the model folder as trained (weights, `model_card.json`, source statistics,
    SSFT reliability report); `out/metrics/`: `round-NNN.json` per evaluated round, `baseline.json`
    (f_0), `labels.json` (case, version, source, sha256), `project_config.json`. Built in a
    temporary sibling folder, then renamed into place.

    Args:
        project: the open project.
        out: the folder to create (absent or empty).
        round_idx: the round whose model to export (default: the latest trained).
        fmt: "assft" (model/ only), or also "monai_bundle" / "nnunet": the same model in that
            format in `out/monai_bundle/` or `out/nnunet/` (`assft_core.models.formats.export_model`).

    Returns:
        `out`.

    Raises:
        DataError: when `out` exists and is not an empty folder (never overwritten).
        StateError: when no round (or not that round) has a trained model.
        ModelError: when the model cannot be written in `fmt` (nothing is written).
    """
    from assft_core.config import to_dict
    from assft_core.session.evaluation import baseline_metrics

    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder; choose a new folder (nothing was written).")
    history = rounds.list_rounds(project)
    trained = [r for r in history if r.checkpoint and (round_idx is None or r.idx == round_idx)]
    if not trained:
        which = "any round" if round_idx is None else f"round {round_idx}"
        raise StateError(f"{project.folder}: {which} has no trained model yet; run `assft train` first.")
    chosen = trained[-1]
    if not project.resolve(chosen.checkpoint).is_dir():
        raise StateError(f"round {chosen.idx}'s model {chosen.checkpoint} is missing from {project.folder}; restore it "
                         f"from a backup (`assft doctor -p {project.folder}` lists every missing artefact).")
    with building_folder(out) as tmp:
        shutil.copytree(project.resolve(chosen.checkpoint), tmp / "model")
        if fmt != "assft":
            from assft_core.models.formats import export_model

            export_model(tmp / "model", fmt, tmp / fmt, overlap=project.config.inference.overlap)
        metrics = tmp / "metrics"
        metrics.mkdir()
        for r in history:
            if r.metrics:
                _write_json(metrics / f"round-{r.idx:03d}.json", {"round": r.idx, "state": r.state.value, **r.metrics})
        baseline = baseline_metrics(project)
        if baseline is not None:
            _write_json(metrics / "baseline.json", baseline)
        _write_json(
            metrics / "labels.json",
            [
                {"case_id": v.case_id, "version": v.version, "source": v.source, "sha256": v.sha256, "round": v.round}
                for v in labels.current_labels(project).values()
            ],
        )
        _write_json(metrics / "project_config.json", {"exported_round": chosen.idx, "config": to_dict(project.config)})
    return out


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
