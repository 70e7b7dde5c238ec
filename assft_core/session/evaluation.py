"""Evaluation of a round's model, recorded in the store (ASSFT, METHOD.md §5).

On the held-out test split (never queried): Dice per class and mean, HD95 in mm, overall and per
site, on each case's native grid (`train.evaluate`). A dataset without labelled test cases gets the
METHOD §5 fallback instead, said plainly: each case newly labelled this round scored under the model
that chose it (f_t), before any training on it — biased (the cases were picked for being hard, and
only a few), but the only honest signal there is. Round 0 of the protocol is f_0 as it is: its test
evaluation is stored once per f_0 (`evaluate_baseline`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assft_core.data.records import Split
from assft_core.errors import StateError
from assft_core.fsutil import atomic_write_bytes
from assft_core.session import labels, rounds, workspace
from assft_core.session.progress import CaseProgress, ProgressSink
from assft_core.session.project import Project, list_cases
from assft_core.session.rounds import QueryStatus, RoundInfo, RoundState
from assft_core.session.workspace import ModelRef

if TYPE_CHECKING:
    from assft_core.train.evaluate import EvalCase

ON_TEST = "test"
ON_NEW_LABELS = "new_labels_biased"
BIASED_NOTE = (
    "no labelled test case: these are the Dice of the cases newly labelled this round under the model "
    "that chose them, before training on them. Biased (hard cases, few of them): not a test-set result."
)
DICE_FORMAT = "%.3f"  # printf format of a Dice column in tables (the same 3 decimals as `dice_text`)


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def dice_text(value: Any) -> str:
    """A Dice score as shown everywhere: 3 decimals ("0.545"); "n/a" for None, NaN or a non-number."""
    number = _finite_number(value)
    return "n/a" if number is None else f"{number:.3f}"


def hd95_mm_text(value: Any) -> str:
    """An HD95 distance in mm as shown everywhere: 1 decimal with its unit ("13.0 mm"); "n/a" for None,
    inf (a missed structure) or a non-number."""
    number = _finite_number(value)
    return "n/a" if number is None else f"{number:.1f} mm"


def hd95_text(summary: Mapping[str, Any]) -> str:
    """A mean HD95 as people should read it: "HD95 13.0 mm (1 structure missed, not in the mean)".

    A missed structure (reference present, nothing predicted) has HD95 = inf and is left out of the
    mean, so the mean alone gets better when a structure is missed; the missed count goes beside it
    wherever a mean HD95 is shown.

    Args:
        summary: an `EvalReport` summary ("overall" or one site): "mean_hd95_mm" (mm, or None)
            and "missed_total" ((case, class) pairs missed; absent in old records).

    Returns:
        "HD95 x mm (n structures missed, not in the mean)", "HD95 n/a (...)", or "HD95 n/a" when
        neither is known.
    """
    mean = summary.get("mean_hd95_mm")
    missed = summary.get("missed_total")
    if missed is None:
        return f"HD95 {hd95_mm_text(mean)}"
    n = int(missed)
    return f"HD95 {hd95_mm_text(mean)} ({n} structure{'' if n == 1 else 's'} missed, not in the mean)"


def evaluate_model(project: Project, ref: ModelRef, *, device: str = "auto", round_idx: int | None = None,
                   sink: ProgressSink | None = None, share: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """Evaluate one model: on the labelled test cases, else (with `round_idx`) the biased fallback.

    Args:
        project: the open project.
        ref: the model to evaluate.
        device: "auto", "cpu" or "cuda[:i]".
        round_idx: the round whose new labels the fallback scores (None: no fallback).
        sink: per-case progress (each case loaded, predicted and scored) with a time-left
            estimate, in `share` of the job's bar (None: silent).

    Returns:
        `EvalReport.to_dict()` (overall, per_site, cases) plus "evaluated_on" ("test" or
        "new_labels_biased"), "mean_dice", "mean_hd95_mm", "n_cases", "model" (tag), "note" and
        "eval_wall_s". Empty overall (None) when there is nothing to evaluate on.

    Raises:
        ModelError, DataError: from loading the model or the cases.
    """
    from assft_core.data.io import load_label
    from assft_core.data.case_cache import load_case
    from assft_core.models.loaded import load_model
    from assft_core.train.evaluate import EvalCase, EvalCaseStream, evaluate

    start = time.perf_counter()
    model = load_model(ref.path, device=device)
    pre_cfg = workspace.preprocess_settings(project)
    cache = workspace.preprocess_cache(project)
    infer_cfg = workspace.inference_settings(project, model.card, device)
    test = [c for c in list_cases(project, Split.TEST) if c.reference_label is not None]
    # Streamed: one case (image, native label, prediction) in memory at a time.
    cases: Iterable[EvalCase]
    if test:
        cases = EvalCaseStream([workspace.case_record(c, c.reference_label) for c in test], pre_cfg, cache)
        n_cases = len(test)
        on, note = ON_TEST, f"{n_cases} labelled test case(s), native grids"
    else:
        picked = _new_labels(project, round_idx) if round_idx is not None else {}
        pool = {c.case_id: c for c in list_cases(project, Split.POOL)}
        chosen = [(cid, path) for cid, path in picked.items() if cid in pool]
        cases = (
            EvalCase(
                case=load_case(workspace.case_record(pool[cid]), pre_cfg, cache_dir=cache),
                native_label=load_label(path, max_voxels=pre_cfg.max_voxels).array[0],
            )
            for cid, path in chosen
        )
        n_cases = len(chosen)
        on, note = ON_NEW_LABELS, BIASED_NOTE
    # One unit per case: loading it (preprocessing, often cached), predicting and scoring.
    step = CaseProgress(sink, "evaluate", f"evaluating {ref.tag}", n_cases, share)
    step(0, words="case(s)")
    report = evaluate(model.network, cases, num_classes=model.card.out_channels, cfg=infer_cfg,
                      on_case=lambda done, cid: step(done, f"scored {cid}", words="case(s)")).to_dict()
    overall = report.get("overall") or {}
    report.update(
        evaluated_on=on,
        note=note,
        model=ref.tag,
        n_cases=n_cases,
        mean_dice=overall.get("mean_dice"),
        mean_hd95_mm=overall.get("mean_hd95_mm"),
        eval_wall_s=time.perf_counter() - start,
    )
    return report


def _new_labels(project: Project, round_idx: int) -> dict[str, Any]:
    """Case id -> current label file of the approved picks of round `round_idx`."""
    approved = [q.case_id for q in rounds.list_queries(project, round_idx) if q.status is QueryStatus.APPROVED]
    current = labels.current_labels(project)
    return {cid: current[cid].file for cid in approved if cid in current}


def evaluate_round(
    project: Project, *, device: str = "auto", extra: Mapping[str, Any] | None = None,
    sink: ProgressSink | None = None, share: tuple[float, float] = (0.0, 1.0),
) -> RoundInfo:
    """Evaluate the model trained in the current round and mark the round evaluated.

    On the test split; without labelled test cases, the biased fallback with f_t, the model that
    chose this round's cases (METHOD.md §5).

    Args:
        project: the open project (round `trained`).
        device: "auto", "cpu" or "cuda[:i]".
        extra: more metrics stored with the evaluation (e.g. the training's wall times).
        sink, share: per-case progress (see `evaluate_model`).

    Returns:
        The round, now `evaluated`, with the metrics.

    Raises:
        StateError: when the round is not `trained`.
    """
    info = rounds.current_round(project)
    if info.state is not RoundState.TRAINED or not info.checkpoint:
        raise StateError(
            f"cannot evaluate: round {info.idx} is '{info.state.value}'; allowed next step: {rounds.NEXT_STEP[info.state]}."
        )
    trained = ModelRef(f"round{info.idx + 1}", project.resolve(info.checkpoint))
    has_test = any(c.reference_label is not None for c in list_cases(project, Split.TEST))
    ref = trained if has_test else workspace.model_for_round(project, info.idx)
    metrics = evaluate_model(project, ref, device=device, round_idx=info.idx, sink=sink, share=share)
    metrics["labelled"] = len(_pool_labels(project))
    metrics["checkpoint"] = info.checkpoint
    metrics.update(extra or {})
    return rounds.mark_evaluated(project, metrics)


def _pool_labels(project: Project) -> list[str]:
    pool = {c.case_id for c in list_cases(project, Split.POOL)}
    return [cid for cid in labels.current_labels(project) if cid in pool]


def baseline_path(project: Project, ref: ModelRef) -> Path:
    """Where f_0's evaluation is stored (keyed by f_0's bytes)."""
    return project.artifact_path(workspace.EVALUATIONS_DIR, f"{ref.tag}-{workspace.model_key(ref)[:16]}.json")


def evaluate_baseline(project: Project, *, device: str = "auto", sink: ProgressSink | None = None) -> dict[str, Any]:
    """Round 0 of the protocol: f_0 as it is, on the test split; computed once per f_0 and stored.

    Returns:
        As `evaluate_model` (`mean_dice` None when the test split has no labelled case: the
        biased fallback needs a round's picks, so f_0 has none).
    """
    ref = workspace.base_model(project)
    path = baseline_path(project, ref)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    metrics = evaluate_model(project, ref, device=device, sink=sink)
    atomic_write_bytes(path, json.dumps(metrics, indent=1, default=str).encode())
    return metrics


def baseline_metrics(project: Project) -> dict[str, Any] | None:
    """f_0's stored test evaluation, or None when it was not computed yet."""
    ref = workspace.base_model(project)
    path = baseline_path(project, ref)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
