"""The training step of a round: fine-tune f_t on the labels (+ SSFT), save f_{t+1}, evaluate.

ASSFT, METHOD.md §4–§5. L = the current labels of usable pool cases (expert or oracle); U \\ L =
the other usable pool cases (never test cases); f_t = the previous round's model (f_0 at round
0). `train.ssft.run_round_training` runs the supervised phase, the scoring pass of f_t^sup, the
selection of R with pseudo-labels, and the SSFT phase (mode `none`: supervised only), each phase
resuming from its folder under the job's run folder, so `assft job resume` continues a killed
job from its last checkpoint. f_{t+1} is saved with its model card under `artifacts/models/`,
then evaluated on the test split (or the biased fallback) and the round marked evaluated.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assft_core.config import FinetuneConfig, PreprocessConfig, SSFTMode, parse_recipe
from assft_core.data.records import PreprocessedCase, Split
from assft_core.errors import StateError
from assft_core.fsutil import atomic_copy, atomic_write_bytes
from assft_core.models.card import ModelCard
from assft_core.session import labels, rounds, store, workspace
from assft_core.session.evaluation import evaluate_round
from assft_core.session.progress import Echo, ProgressSink, StepLog
from assft_core.session.project import CaseInfo, Project, list_cases
from assft_core.session.rounds import RoundState
from assft_core.train.reliability import trusted_words

if TYPE_CHECKING:  # torch: imported by the job when it trains, not by every reader of this module
    from assft_core.train.ssft import RoundProgress, SSFTResult

ROUND_DIR = "round"  # the SSFT round folder inside the job's run folder
SSFT_REPORT = "ssft_report.json"
# Shares of the job's progress bar: data preparation, training phases, evaluation.
_PREP, _TRAIN = 0.03, 0.90
_SCORED = re.compile(r"scoring (\d+)/(\d+)")  # SSFT's per-case message during its pseudo-label pass


@dataclass(frozen=True)
class TrainRequest:
    """What a training job is asked to do (its job parameters).

    Attributes:
        supervised_steps: S, steps on L.
        ssft_steps: S_u, steps on L ∪ R (unused in mode `none`).
        ssft_mode: which unlabelled cases join (METHOD.md §4).
        device: "auto", "cpu" or "cuda[:i]".
        evaluate: evaluate f_{t+1} and mark the round evaluated when training ends.
        nproc: training processes on this machine (> 1: DDP under torchrun, one GPU each).
        recipe: the retention recipe, e.g. "adabn+wise" (METHOD.md §6); None: the project's.
    """

    supervised_steps: int
    ssft_steps: int
    ssft_mode: SSFTMode
    device: str = "auto"
    evaluate: bool = True
    nproc: int = 1
    recipe: str | None = None

    @classmethod
    def from_params(cls, project: Project, params: Mapping[str, Any]) -> TrainRequest:
        """A request from job parameters; missing ones take the project's settings.

        Raises:
            StateError: for an unknown SSFT mode or a negative / zero step count.
        """
        cfg = project.config.ssft
        try:
            mode = SSFTMode(params.get("ssft_mode") or cfg.mode)
        except ValueError:
            raise StateError(
                f"unknown SSFT mode {params.get('ssft_mode')!r}; use one of {[m.value for m in SSFTMode]}."
            ) from None
        request = cls(
            supervised_steps=int(_given(params, "supervised_steps", cfg.supervised_steps)),
            ssft_steps=int(_given(params, "ssft_steps", cfg.ssft_steps)),
            ssft_mode=mode,
            device=str(params.get("device") or project.config.train.device),
            evaluate=bool(params.get("evaluate", True)),
            nproc=int(params.get("nproc") or 1),
            recipe=_recipe_label(params.get("recipe")),
        )
        if request.nproc < 1:
            raise StateError(f"nproc must be ≥ 1 (training processes); got {request.nproc}.")
        if request.supervised_steps < 1 or request.ssft_steps < 0:
            raise StateError(
                f"steps must be ≥ 1 (supervised) and ≥ 0 (SSFT); got {request.supervised_steps} and {request.ssft_steps}."
            )
        return request

    def to_params(self) -> dict[str, Any]:
        """JSON-ready job parameters."""
        return {
            "supervised_steps": self.supervised_steps,
            "ssft_steps": self.ssft_steps,
            "ssft_mode": self.ssft_mode.value,
            "device": self.device,
            "evaluate": self.evaluate,
            "nproc": self.nproc,
            "recipe": self.recipe,
        }

    def finetune_config(self, project: Project) -> Any:
        """The project's `FinetuneConfig` with this request's recipe (when it names one)."""
        cfg = project.config.finetune
        return cfg if self.recipe is None else dataclasses.replace(cfg, recipe=parse_recipe(self.recipe))


def _recipe_label(value: Any) -> str | None:
    """A recipe parameter checked and normalised ("adabn,wise" -> "adabn+wise"); None stays None.

    Raises:
        StateError: naming the known recipes when one is unknown.
    """
    if value in (None, ""):
        return None
    try:
        return "+".join(r.value for r in parse_recipe(value))
    except ValueError as exc:
        raise StateError(str(exc)) from None


def _train_fn(card: Any, nproc: int) -> Callable[..., Any] | None:
    """The trainer of one phase: None (`train` in this process), or DDP on `nproc` processes
    (docs/distributed.md)."""
    if nproc <= 1:
        return None
    from assft_core.train.torchrun_train import train_with_torchrun

    return functools.partial(train_with_torchrun, card=card, nproc=nproc)


def _given(params: Mapping[str, Any], key: str, default: Any) -> Any:
    """`params[key]` unless it is missing or None (then the project's setting)."""
    value = params.get(key)
    return default if value is None else value


def train_round(
    project: Project, request: TrainRequest, *, run_dir: Path, sink: ProgressSink, echo: Echo | None = None
) -> dict[str, Any]:
    """Fine-tune the current round's model on its labels and record f_{t+1} (METHOD.md §4–§5).

    Resumable: called again with the same `run_dir` after a kill or a cancel, each phase continues
    from its last checkpoint; a round already trained by this run folder goes straight to
    evaluation.

    Args:
        project: the open project (round `labelled`, or `trained` by this run folder).
        request: steps, SSFT mode, device, whether to evaluate.
        run_dir: the job's folder (phase checkpoints, progress.jsonl, the SSFT report).
        sink: progress, heartbeat and the stop flag.
        echo: prints progress lines for people (None: silent).

    Returns:
        Job metrics: "round", "labelled", "admitted", "wall_s" per phase, the SSFT report's
        summary ("ssft_cases": one row per unlabelled case with c, s, r and the decision),
        "checkpoint", "mean_dice" when evaluated; "stopped": True when cancelled before the end.

    Raises:
        StateError: the round is in another state, or has no labelled case.
        ModelError / DataError / TrainingDiverged: from loading, data or training.
    """
    t0 = time.perf_counter()
    info = rounds.current_round(project)
    model_dir = workspace.round_model_dir(project, info.idx)
    already = info.state is RoundState.TRAINED and info.checkpoint == project.relative(model_dir)
    if not already and info.state is not RoundState.LABELLED:
        raise StateError(
            f"cannot train: round {info.idx} is '{info.state.value}'; allowed next step: {rounds.NEXT_STEP[info.state]}."
        )
    run_dir = Path(run_dir)
    summary_path = run_dir / SSFT_REPORT
    if already:
        metrics = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {"wall_s": {}}
    else:
        metrics = _train(project, request, info.idx, run_dir, sink, echo)
        if metrics.get("stopped"):
            return metrics
        atomic_write_bytes(summary_path, json.dumps(metrics, indent=1, default=str).encode())
        rounds.mark_trained(project, project.relative(model_dir), {"wall_s": metrics["wall_s"]})
    if request.evaluate:
        evaluating = f"evaluating the {workspace.model_name(info.idx + 1)}"
        sink.progress(_PREP + _TRAIN, evaluating, phase="evaluate")
        if echo is not None:
            echo(evaluating, force=True)
        evaluated = evaluate_round(
            project,
            device=request.device,
            extra={
                "wall_s": metrics["wall_s"], "ssft_mode": request.ssft_mode.value,
                "ssft_admitted": metrics.get("admitted"), "recipe": metrics.get("recipe"),
            },
            sink=sink,
            share=(_PREP + _TRAIN, 1.0),
        )
        metrics["mean_dice"] = evaluated.metrics.get("mean_dice")
        metrics["evaluated_on"] = evaluated.metrics.get("evaluated_on")
        metrics["wall_s"]["evaluate"] = evaluated.metrics.get("eval_wall_s")
    metrics["wall_s"]["job"] = time.perf_counter() - t0
    return metrics


def reopen_round(project: Project) -> Path | None:
    """Make the current round trainable again with other settings: f_{t+1}'s folder is moved aside
    to `models/round-NNN-earlier-K` (first free K; nothing is deleted), and the round goes back to
    `labelled` with its picks and labels (`rounds.reopen_for_training`).

    Returns:
        The folder the earlier model now lives in (None when the round had no model folder).

    Raises:
        StateError: the round is neither trained nor evaluated, or a fine-tuning or evaluation job
            is queued or running.
    """
    from assft_core.session import jobs  # jobs imports the job modules, this one among them

    idx = rounds.check_state(project, {RoundState.TRAINED, RoundState.EVALUATED}, "fine-tune the round again")
    for kind in ("train", "evaluate"):
        active = jobs.active_job_id(project, kind)
        if active is not None:
            raise StateError(f"cannot fine-tune the round again: job #{active} ({kind}) is active; wait or cancel it first.")
    model_dir = workspace.round_model_dir(project, idx)
    earlier: Path | None = None
    if model_dir.exists():
        k = 1
        while model_dir.with_name(f"{model_dir.name}-earlier-{k}").exists():
            k += 1
        earlier = model_dir.with_name(f"{model_dir.name}-earlier-{k}")
        model_dir.rename(earlier)
    try:
        rounds.reopen_for_training(project, project.relative(earlier) if earlier else None)
    except BaseException:
        if earlier is not None:  # keep the folder where the store says the model is
            earlier.rename(model_dir)
        raise
    return earlier


@dataclass(frozen=True)
class _RoundCases:
    """The pool of a round split into L (preprocessed, with their current labels) and U \\ L."""

    pool: list[CaseInfo]
    current: dict[str, labels.LabelVersion]  # case id -> its current label
    labelled_cases: list[CaseInfo]
    labelled: list[PreprocessedCase]
    unlabelled: list[PreprocessedCase]
    pre_cfg: PreprocessConfig
    cache: Path


def _train(
    project: Project,
    request: TrainRequest,
    round_idx: int,
    run_dir: Path,
    sink: ProgressSink,
    echo: Echo | None,
) -> dict[str, Any]:
    """Prepare L and U \\ L, run the round's phases, save f_{t+1}; the metrics (no store change)."""
    from assft_core.models.loaded import load_model
    from assft_core.train.retention import needs_base_model
    from assft_core.train.ssft import run_round_training

    t0 = time.perf_counter()
    cases = _prepare_cases(project, round_idx, sink)
    prep_s = time.perf_counter() - t0

    parent = workspace.model_for_round(project, round_idx)
    model = load_model(parent.path, device=request.device)
    card = model.card
    finetune_cfg = request.finetune_config(project)
    base = load_model(workspace.base_model(project).path, device=request.device) if needs_base_model(finetune_cfg) else None
    ssft_cfg = dataclasses.replace(
        project.config.ssft,
        mode=request.ssft_mode,
        supervised_steps=request.supervised_steps,
        ssft_steps=request.ssft_steps,
    )
    total_steps = request.supervised_steps + (0 if request.ssft_mode is SSFTMode.NONE else request.ssft_steps)
    result = run_round_training(
        model.network,
        card,
        cases.labelled,
        cases.unlabelled,
        train_cfg=dataclasses.replace(project.config.train, device=request.device),
        ssft_cfg=ssft_cfg,
        query_cfg=project.config.query,
        infer_cfg=workspace.inference_settings(project, card, request.device),
        run_dir=run_dir / ROUND_DIR,
        reference=_oracle_reference(project, {c.case_id: c for c in cases.pool}, cases.pre_cfg, cases.cache),
        on_progress=_progress_reporter(round_idx, total_steps, StepLog(run_dir), sink, echo),
        should_stop=sink.should_stop,
        train_fn=_train_fn(card, request.nproc),
        finetune_cfg=finetune_cfg,
        base=base,
    )
    wall = {"prepare": prep_s, **result.timings_s}
    if result.stopped:
        return {"round": round_idx, "stopped": True, "wall_s": wall}

    model_dir = workspace.round_model_dir(project, round_idx)
    admitted = result.report.admitted_ids if result.report is not None else []
    new_card = _round_card(project, request, round_idx, parent, card, finetune_cfg, cases, admitted, model_dir)
    report = _save_round_model(project, round_idx, result, new_card, model_dir)
    return {
        "round": round_idx,
        "parent": parent.tag,
        "labelled": len(cases.labelled),
        "unlabelled": len(cases.unlabelled),
        "admitted": len(admitted),
        "admitted_ids": admitted,
        "ssft_mode": (report or {}).get("mode", request.ssft_mode.value),  # `none` when S_u was 0
        "ssft_warnings": report["warnings"] if report else [],
        "ssft_cases": _case_rows(report),
        "pseudo_labels": (report or {}).get("pseudo_summary"),
        "final_loss": (result.ssft or result.supervised).loss,
        "recipe": finetune_cfg.label,
        "retention": result.retention,
        "checkpoint": project.relative(model_dir),
        "wall_s": wall,
    }


def _prepare_cases(project: Project, round_idx: int, sink: ProgressSink) -> _RoundCases:
    """Preprocess L (the labelled pool cases, with their current labels) and U \\ L (the rest of
    the pool, streamed so a cancel stops it) through the project's preprocessing cache.

    Raises:
        StateError: no pool case is labelled.
    """
    from assft_core.data.case_cache import load_case

    pool = list_cases(project, Split.POOL)
    current = labels.current_labels(project)
    labelled_cases = [c for c in pool if c.case_id in current]
    if not labelled_cases:
        raise StateError(f"round {round_idx} has no labelled pool case to train on; label the approved picks first.")
    pre_cfg = workspace.preprocess_settings(project)
    cache = workspace.preprocess_cache(project)
    sink.progress(0.0, f"preparing {len(pool)} pool cases", phase="prepare")
    labelled: list[PreprocessedCase] = [
        load_case(workspace.case_record(c, current[c.case_id].file), pre_cfg, cache_dir=cache)
        for c in labelled_cases
    ]
    # Streamed: U \ L is read one case at a time by every pass over it (memory flat in the pool size).
    unlabelled = workspace.CaseStream(
        [workspace.case_record(c) for c in pool if c.case_id not in current], pre_cfg, cache, sink.should_stop,
        limit_bytes=workspace.cache_limit_bytes(project),
    )
    return _RoundCases(pool, current, labelled_cases, labelled, unlabelled, pre_cfg, cache)


def _progress_reporter(
    round_idx: int, total_steps: int, steps: StepLog, sink: ProgressSink, echo: Echo | None
) -> Callable[[RoundProgress], None]:
    """The `on_progress` of `run_round_training`: the job's bar (training takes the `_TRAIN` share
    after `_PREP`), step, loss, lr and ETA as metrics, each trainer event in the step log (steps
    counted over the whole round, not per phase), and a line for people."""

    pace = {"step_s": None, "since": time.perf_counter()}  # measured s per step; when the last step ended

    def on_progress(rp: RoundProgress) -> None:
        fraction = _PREP + _TRAIN * rp.fraction
        extra: dict[str, Any] = {"phase": rp.phase}
        if rp.event is not None:
            event = rp.event.to_dict()
            done = round(rp.fraction * total_steps)
            rate = event["elapsed_s"] / max(event["step"], 1)
            pace.update(step_s=rate, since=time.perf_counter())
            extra.update(step=done, loss=event["loss"], lr=event["lr"], eta_s=rate * (total_steps - done))
            steps.append({**event, "phase_step": event["step"], "step": done})
        elif (scored := _SCORED.match(rp.message)) and pace["step_s"] is not None:
            # SSFT's pseudo-label pass, case by case: its cases left at the measured pace, then the SSFT steps.
            done, n = int(scored[1]), int(scored[2])
            per_case = (time.perf_counter() - pace["since"]) / max(done, 1)
            steps_left = total_steps - round(rp.fraction * total_steps)
            extra.update(cases_done=done, cases_total=n, eta_s=per_case * (n - done) + pace["step_s"] * steps_left)
        sink.progress(fraction, rp.message, **extra)
        if echo is not None:
            loss = f"  loss {extra['loss']:.4f}" if "loss" in extra else ""
            echo(f"round {round_idx} {rp.message}{loss}", force=rp.event is not None and rp.fraction >= 1.0)

    return on_progress


def _round_card(
    project: Project,
    request: TrainRequest,
    round_idx: int,
    parent: workspace.ModelRef,
    card: ModelCard,
    finetune_cfg: FinetuneConfig,
    cases: _RoundCases,
    admitted: list[str],
    model_dir: Path,
) -> ModelCard:
    """f_{t+1}'s model card: f_t's, with its fingerprint saying what made it (parent, label hashes,
    admitted cases, mode, recipe, steps) and a note in words; copies f_t's source statistics."""
    current, labelled_cases = cases.current, cases.labelled_cases
    return dataclasses.replace(
        card,
        checkpoint="model.pt",
        source_stats=_copy_source_stats(card, parent, model_dir),
        fingerprint={
            "parent": parent.tag,
            "parent_key": workspace.model_key(parent),
            "round": round_idx,
            "labels": {c.case_id: current[c.case_id].sha256 for c in labelled_cases},
            "label_sources": sorted({current[c.case_id].source for c in labelled_cases}),
            "admitted": admitted,
            "ssft_mode": request.ssft_mode.value,
            "recipe": finetune_cfg.label,
            "steps": {"supervised": request.supervised_steps, "ssft": request.ssft_steps},
        },
        notes=f"Fine-tuned by ASSFT Studio in round {round_idx} of project {project.folder.name} "
        f"from {parent.tag} on {len(cases.labelled)} labelled case(s) (SSFT {request.ssft_mode.value}, "
        f"{trusted_words(len(admitted))}, recipe {finetune_cfg.label}).",
    )


def _save_round_model(
    project: Project, round_idx: int, result: SSFTResult, card: ModelCard, model_dir: Path
) -> dict[str, Any] | None:
    """Save f_{t+1} (`result.network`) with `card` in `model_dir`, its reliability report beside
    it, and the report's summary in the store; returns the report (None without one)."""
    from assft_core.models.loaded import save_model

    save_model(result.network, card, model_dir)
    report = result.report.to_dict() if result.report is not None else None
    if report is not None:
        atomic_write_bytes(model_dir / "reliability.json", json.dumps(report, indent=1).encode())
    _record_ssft(project, round_idx, report)
    return report


def _case_rows(report: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One table row per unlabelled case: c, s, r, the decision and why (the dashboard's table)."""
    if not report:
        return []
    keys = ("case_id", "site", "confidence", "distance", "reliability", "admitted", "reason", "kept_fraction", "kept_accuracy")
    return [{k: c.get(k) for k in keys} for c in report["cases"]]


def _record_ssft(project: Project, round_idx: int, report: Mapping[str, Any] | None) -> None:
    """An event with the round's SSFT selection (admitted cases, warnings), for the history."""
    if report is None:
        return
    admitted = [c["case_id"] for c in report["cases"] if c.get("admitted")]
    with store.transaction(project.db) as conn:
        store.add_event(
            conn,
            "ssft",
            f"round {round_idx}: SSFT {report['mode']} admitted {len(admitted)} unlabelled case(s)",
            round=round_idx,
            admitted=admitted,
            warnings=report.get("warnings", []),
        )


def _copy_source_stats(card: ModelCard, parent: workspace.ModelRef, model_dir: Path) -> str | None:
    """Copy f_t's source-statistics file beside f_{t+1} (an exported model keeps its source knowledge)."""
    if not card.source_stats:
        return None
    folder = parent.path if parent.path.is_dir() else parent.path.parent
    src = card.resolve(folder, card.source_stats)
    atomic_copy(src, model_dir / src.name)
    return src.name


def _oracle_reference(
    project: Project, pool: Mapping[str, CaseInfo], pre_cfg: PreprocessConfig, cache: Path
) -> Callable[[str], np.ndarray | None] | None:
    """In oracle (demo/benchmark) mode, a lookup of each pool case's reference label on the
    preprocessed grid, used only to report the pseudo-labels' voxel accuracy (never trained on);
    None outside oracle mode."""
    if not project.oracle:
        return None
    from assft_core.data.case_cache import load_case

    with store.reading(project.db) as conn:
        refs = {
            r["case_id"]: Path(r["reference_label"])
            for r in conn.execute("SELECT case_id, reference_label FROM cases WHERE reference_label IS NOT NULL")
        }

    def reference(case_id: str) -> np.ndarray | None:
        if case_id not in refs or case_id not in pool:
            return None
        return load_case(workspace.case_record(pool[case_id], refs[case_id]), pre_cfg, cache_dir=cache).label

    return reference
