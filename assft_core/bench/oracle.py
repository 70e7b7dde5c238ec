"""One benchmark run = one oracle project driven by the session's headless loop (`run_rounds`).

Nothing here trains, scores or evaluates by itself: every run is a real project (store, jobs,
checkpoints) going through `assft_core.session.loop.run_rounds`, the loop `assft demo run` and the
dashboard use, so the benchmark measures the product (ASSFT, METHOD.md §5).

Shared `f_0` work: each pool gets one reference project (the whole pool and the test split) whose
score job computes `f_0`'s scoring pass and whose evaluate job computes `f_0`'s test metrics (the
floor) once. Every run's project then starts with hard links to those cached files (preprocessed
cases, `f_0`'s per-case scores, `f_0`'s evaluation), all keyed by content and model bytes, so its
round-0 scoring and the floor are read, not recomputed. A run killed midway continues from its
project's state: `run_rounds` resumes wherever the project stands.

Record convention (schema v1): record `t` (t = 0..T) is the model `f_t` (trained on the `t·b`
labels of rounds 0..t−1): its test metrics, `labelled_count` = t·b, the cases it picked in round
t (none for t = T), and the wall time of each phase that produced and used it: `prepare`,
`train`, `ssft_scoring`, `ssft` (round t−1's training), `evaluate`, `score`, `query` (round t).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assft_core.bench.config import StrategyBenchConfig
from assft_core.bench.plan import ReferenceSpec, RunSpec
from assft_core.bench.schema import ReferenceRecord, RoundRecord
from assft_core.bench.views import write_view
from assft_core.config import FinetuneConfig, ProjectConfig, SSFTConfig, SSFTMode, TrainConfig
from assft_core.data.records import DatasetManifest, Split
from assft_core.errors import DataError, StateError
from assft_core.session import jobs, rounds, workspace
from assft_core.session.evaluation import baseline_metrics
from assft_core.session.project import Project, create_project, open_project
from assft_core.session.rounds import QueryStatus, RoundState
from assft_core.session.store import STORE_NAME

if TYPE_CHECKING:
    from assft_core.session.loop import RoundRow

Log = Callable[[str], None]
REFERENCE_PROJECT = "project"  # the reference project's folder inside the pool's f_0 work folder
# Keys of the training job's wall_s -> phase names in the records.
_TRAIN_PHASES = {"prepare": "prepare", "supervised": "train", "scoring": "ssft_scoring", "ssft": "ssft"}


@dataclass(frozen=True)
class PoolInputs:
    """What every run of one pool starts from.

    Attributes:
        pool: "balanced" or "unbalanced".
        manifest: the pool's dataset (`views.read_benchmark_dataset`).
        model_dir: `f_0`'s model folder (checkpoint + model card).
        device: "auto", "cpu" or "cuda[:i]".
    """

    pool: str
    manifest: DatasetManifest
    model_dir: Path
    device: str

    @property
    def pool_ids(self) -> list[str]:
        """U: every pool case id."""
        return sorted(c.case_id for c in self.manifest.cases if c.split is Split.POOL)

    @property
    def test_ids(self) -> list[str]:
        """The test split's case ids (never queried)."""
        return sorted(c.case_id for c in self.manifest.cases if c.split is Split.TEST)


def project_config(
    cfg: StrategyBenchConfig, strategy: str, seed: int, mode: SSFTMode, device: str, *, recipe: str | None = None
) -> ProjectConfig:
    """The project settings of one run: the benchmark's budget, rounds, training and retention
    recipe (`recipe` overrides it: the ceiling trains with "paper"), the run's strategy, and its
    seed for the strategy and for training. Test cases are evaluated, never scored: no one looks
    at their heatmaps in a benchmark."""
    return ProjectConfig(
        budget=cfg.budget,
        score_test_cases=False,
        planned_rounds=cfg.rounds,
        strategy=strategy,
        seed=seed,
        train=TrainConfig(seed=seed, batch_size=cfg.batch_size, patch_size=cfg.patch_size, device=device),
        ssft=SSFTConfig(mode=mode, supervised_steps=cfg.supervised_steps, ssft_steps=cfg.ssft_steps),
        finetune=FinetuneConfig(recipe=recipe or cfg.recipe),
    )


def open_or_create(folder: Path, view: Path, model_dir: Path, config: ProjectConfig) -> tuple[Project, bool]:
    """The run's project: reopened when it exists (a resumed run), else created in oracle mode.

    A folder left without a store by a kill during creation is the benchmark's own half-made
    project: it is removed and made again.

    Returns:
        The project and whether it was created now.
    """
    if (folder / STORE_NAME).is_file():
        return open_project(folder), False
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return create_project(folder, view, model_dir, config=config, oracle=True), True


def reference_project(inputs: PoolInputs, work_dir: Path, cfg: StrategyBenchConfig, *, log: Log | None = None) -> Project:
    """The pool's reference project, scored with `f_0` and with `f_0` evaluated (idempotent).

    Raises:
        StateError: when a job fails (its log is named).
    """
    from assft_core.session.loop import run_job_here

    view = write_view(inputs.manifest, inputs.pool_ids + inputs.test_ids, work_dir / "data")
    config = project_config(cfg, "random", 0, SSFTMode.NONE, inputs.device)
    project, _ = open_or_create(work_dir / REFERENCE_PROJECT, view, inputs.model_dir, config)
    if rounds.current_round(project).state is RoundState.OPEN:
        run_job_here(project, "score", {"round": 0, "device": inputs.device}, log=log)
    if baseline_metrics(project) is None:
        run_job_here(project, "evaluate", {"baseline": True, "device": inputs.device}, log=log)
    return project


def seed_from_reference(project: Project, reference: Project) -> int:
    """Hard-link the reference project's content-keyed caches into a new run's project.

    Linked: preprocessed cases, `f_0`'s per-case scores, `f_0`'s stored evaluation. Every one is
    keyed by file bytes and model bytes, and rewritten only by temp-then-rename, so a link is
    never written through. Falls back to a copy across file systems.

    Returns:
        Files linked or copied.
    """
    f0_dirs = [d for d in (reference.artifacts / workspace.SCORES_DIR).glob(f"{workspace.BASE_TAG}-*") if d.is_dir()]
    pairs = [(workspace.preprocess_cache(reference), workspace.preprocess_cache(project))]
    pairs += [(d / "cases", project.artifact_path(workspace.SCORES_DIR, d.name, "cases")) for d in f0_dirs]
    pairs.append((reference.artifact_path(workspace.EVALUATIONS_DIR), project.artifact_path(workspace.EVALUATIONS_DIR)))
    n = 0
    for src_dir, dst_dir in pairs:
        if not src_dir.is_dir():
            continue
        dst_dir.mkdir(parents=True, exist_ok=True)
        for src in src_dir.iterdir():
            dst = dst_dir / src.name
            if src.name.startswith(".") or not src.is_file() or dst.exists():
                continue
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            n += 1
    return n


def run_strategy(
    spec: RunSpec,
    cfg: StrategyBenchConfig,
    inputs: PoolInputs,
    subset: list[str],
    work_dir: Path,
    reference: Project,
    *,
    on_record: Callable[[RoundRecord], None] | None = None,
    log: Log | None = None,
) -> list[RoundRecord]:
    """Run (or continue) one strategy run: T rounds of the loop on the seed's pool subset.

    Args:
        spec: pool, strategy, seed and SSFT mode.
        cfg: the benchmark's settings.
        inputs: the pool's dataset, model and device.
        subset: the seed's pool subset (`plan.pool_subset`).
        work_dir: the run's folder (its dataset view and project).
        reference: the pool's reference project (`reference_project`).
        on_record: called with each record as soon as it is complete.
        log: progress lines for people.

    Returns:
        Records 0..T.

    Raises:
        StateError: a job fails, or the pool runs out of cases for the budget.
    """
    from assft_core.session.loop import run_rounds

    project = _run_project(spec.strategy, spec.seed, spec.ssft_mode, cfg, inputs, subset, work_dir, reference)
    emit = on_record or (lambda record: None)

    def on_row(row: RoundRow) -> None:
        if row.round >= 1:  # record t−1 is complete once round t−1 is evaluated (its picks are known)
            emit(round_record(project, spec, row.round - 1, cfg.rounds))

    run_rounds(
        project, cfg.rounds, cfg.budget, spec.strategy, ssft_mode=spec.ssft_mode,
        supervised_steps=cfg.supervised_steps, ssft_steps=cfg.ssft_steps, device=inputs.device,
        on_row=on_row, log=log,
    )
    records = [round_record(project, spec, t, cfg.rounds) for t in range(cfg.rounds + 1)]
    emit(records[-1])
    return records


def run_ceiling(
    spec: ReferenceSpec,
    cfg: StrategyBenchConfig,
    inputs: PoolInputs,
    subset: list[str],
    work_dir: Path,
    reference: Project,
    *,
    log: Log | None = None,
) -> ReferenceRecord:
    """The full-supervision ceiling: one round labelling all of the seed's pool, trained for
    `cfg.ceiling_steps` supervised steps (as many as a whole run), through the same loop.

    Raises:
        StateError: a job fails.
    """
    from assft_core.session.loop import run_rounds

    project = _run_project("random", spec.seed, SSFTMode.NONE, cfg, inputs, subset, work_dir, reference, recipe="paper")
    run_rounds(
        project, 1, len(subset), "random", ssft_mode=SSFTMode.NONE, supervised_steps=cfg.ceiling_steps,
        ssft_steps=0, device=inputs.device, log=log,
    )
    info = _evaluated(project)[0]
    return ReferenceRecord(
        kind="ceiling", pool=spec.pool, seed=spec.seed, **_metric_fields(info.metrics, project),
        wall_time_s=_training_times(info.metrics),
    )


def floor_record(reference: Project, pool: str) -> ReferenceRecord:
    """The floor: `f_0` as it is on the test split (from the reference project's evaluation).

    Raises:
        StateError: when `f_0` was not evaluated yet.
    """
    metrics = baseline_metrics(reference)
    if metrics is None:
        raise StateError(f"{reference.folder}: f_0 was not evaluated; run the reference project first.")
    return ReferenceRecord(
        kind="floor", pool=pool, seed=0, **{**_metric_fields(metrics, reference), "labelled_count": 0},
        wall_time_s={"evaluate": float(metrics.get("eval_wall_s") or 0.0)},
    )


def round_record(project: Project, spec: RunSpec, t: int, total_rounds: int) -> RoundRecord:
    """Record `t` of a run from its project's store (see the module docstring).

    Raises:
        StateError: when `f_t` is not evaluated yet.
    """
    evaluated = _evaluated(project)
    if t == 0:
        metrics = baseline_metrics(project)
        if metrics is None:
            raise StateError(f"{project.folder}: f_0 is not evaluated yet.")
        times: dict[str, float] = {}
        fields = {**_metric_fields(metrics, project), "labelled_count": 0}
    else:
        if len(evaluated) < t:
            raise StateError(f"{project.folder}: round {t - 1} is not evaluated yet.")
        metrics = evaluated[t - 1].metrics
        times = _training_times(metrics)
        fields = _metric_fields(metrics, project)
    times["evaluate"] = float(metrics.get("eval_wall_s") or 0.0)
    picks: list[str] = []
    effort = None
    if t < total_rounds:
        picks = [q.case_id for q in rounds.list_queries(project, t) if q.status is QueryStatus.APPROVED]
        times.update(_query_times(project, t))
        effort = _annotation_effort(project, t, picks)
    return RoundRecord(
        pool=spec.pool, strategy=spec.strategy, seed=spec.seed, round=t, picks=picks, wall_time_s=times,
        annotation_effort=effort, **fields,
    )


def _annotation_effort(project: Project, t: int, picks: list[str]) -> dict[str, float] | None:
    """Round t's effort: its picks' f_t pre-annotations against the oracle's labels (None when the
    run did not measure it: runs made before effort was recorded)."""
    from assft_core.session.annotation import case_efforts

    found = [e for e in case_efforts(project, t) if e.case_id in picks]
    if not picks or len(found) != len(picks):
        return None
    return {
        "changed_voxels": sum(e.changed_voxels for e in found),
        "changed_slices": sum(e.changed_slices for e in found),
        "preannotation_dice": float(sum(e.dice for e in found) / len(found)),
    }


def _run_project(
    strategy: str,
    seed: int,
    mode: SSFTMode,
    cfg: StrategyBenchConfig,
    inputs: PoolInputs,
    subset: list[str],
    work_dir: Path,
    reference: Project,
    recipe: str | None = None,
) -> Project:
    view_dir = work_dir / "data"
    if not (work_dir / "project" / STORE_NAME).is_file():
        write_view(inputs.manifest, subset + inputs.test_ids, view_dir)
    config = project_config(cfg, strategy, seed, mode, inputs.device, recipe=recipe)
    project, created = open_or_create(work_dir / "project", view_dir, inputs.model_dir, config)
    if created:
        seed_from_reference(project, reference)
    return project


def _evaluated(project: Project) -> list[rounds.RoundInfo]:
    return [r for r in rounds.list_rounds(project) if r.state is RoundState.EVALUATED]


def _metric_fields(metrics: Mapping[str, Any], project: Project) -> dict[str, Any]:
    """Schema metric fields from an evaluation dict (`session.evaluation.evaluate_model`).

    Raises:
        DataError: when the evaluation did not run on labelled test cases.
    """
    overall = metrics.get("overall") or {}
    if metrics.get("evaluated_on") != "test" or overall.get("mean_dice") is None:
        raise DataError(
            f"{project.folder}: the model was not evaluated on labelled test cases; the benchmark needs a "
            "labelled test split. Fix: mark test cases in the dataset's cases.csv."
        )
    names = project.classes
    per_class = {
        names.get(int(k), str(k)): float(v) for k, v in (overall.get("dice_per_class") or {}).items() if v is not None
    }
    per_site = {
        str(site): float(s["mean_dice"])
        for site, s in (metrics.get("per_site") or {}).items()
        if isinstance(s, Mapping) and s.get("mean_dice") is not None
    }
    hd95 = overall.get("mean_hd95_mm")
    return {
        "labelled_count": int(metrics.get("labelled", 0)),
        "mean_dice": float(overall["mean_dice"]),
        "per_class_dice": per_class,
        "per_site_dice": per_site,
        "hd95_mm": None if hd95 is None else float(hd95),
        "hd95_missed_count": int(overall.get("missed_total", 0)),
    }


def _training_times(metrics: Mapping[str, Any]) -> dict[str, float]:
    wall = metrics.get("wall_s") or {}
    return {name: float(wall[key]) for key, name in _TRAIN_PHASES.items() if wall.get(key) is not None}


def _query_times(project: Project, t: int) -> dict[str, float]:
    """Round t's scoring job and proposal times (the proposal: from `scored` to `proposed`)."""
    times: dict[str, float] = {}
    score_jobs = [
        j for j in jobs.list_jobs(project, reap=False)
        if j.kind == "score" and j.params.get("round") == t and j.status is jobs.JobStatus.DONE
    ]
    if score_jobs:
        total = (score_jobs[0].metrics.get("wall_s") or {}).get("total")
        if total is not None:
            times["score"] = float(total)
    info = next((r for r in rounds.list_rounds(project) if r.idx == t), None)
    if info is not None and "scored" in info.state_times and "proposed" in info.state_times:
        times["query"] = max(0.0, float(info.state_times["proposed"]) - float(info.state_times["scored"]))
    return times
