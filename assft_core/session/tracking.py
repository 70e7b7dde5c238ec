"""Experiment tracking: every round of a project logged to a local MLflow store (`--mlflow DIR`).

One MLflow run per trained round (and one for f_0's baseline evaluation), in an experiment named
after the project folder: the round's settings as parameters (the project's settings and the
training job's own: recipe, steps, SSFT mode), its test metrics per site and per class, the
change against f_t, the annotation effort, and as artefacts the model card, the picks with why
they were picked, and the stored evaluation. Logging is idempotent: a round already logged in the
same state is skipped, a round evaluated since it was logged gets its metrics added.

Local only: the store is `DIR/mlflow.db` (SQLite) with artefacts under `DIR/artifacts/`; MLflow's
telemetry is switched off before it is imported, and no tracking server is involved (open it with
`mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assft_core.config import to_dict
from assft_core.errors import DataError
from assft_core.session import annotation, jobs, rounds
from assft_core.session.evaluation import ON_TEST, baseline_metrics
from assft_core.session.project import Project
from assft_core.session.round_change import compare_evaluations
from assft_core.session.rounds import RoundInfo, RoundState

TRACKING_DB = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
BASELINE = "baseline"  # the assft.round tag of f_0's run
_PARAM_MAX = 6000  # MLflow's limit on a parameter value (characters)
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


@dataclass(frozen=True)
class TrackedRun:
    """One run written or found by `track_project`.

    Attributes:
        round: the round index as a string, or "baseline" for f_0.
        run_id: the MLflow run id.
        action: "logged" (new run), "updated" (metrics added after evaluation) or "unchanged".
    """

    round: str
    run_id: str
    action: str


def track_project(project: Project, mlflow_dir: str | os.PathLike[str]) -> list[TrackedRun]:
    """Log f_0's evaluation and every trained round of `project` to the MLflow store in `mlflow_dir`.

    Args:
        project: the open project.
        mlflow_dir: the local tracking folder (created if absent; `mlflow.db` and `artifacts/`).

    Returns:
        One `TrackedRun` per logged or already-logged run, f_0 first, then by round; empty (and
        no store created) when f_0 is not evaluated and no round is trained.

    Raises:
        DataError: `mlflow_dir` exists and is not a folder, or holds a store MLflow cannot open
            (the message names the folder and the fix).
    """
    folder = Path(mlflow_dir)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--mlflow {folder}: exists and is not a folder; give a folder for the tracking store.")
    baseline = baseline_metrics(project)
    trained = [info for info in rounds.list_rounds(project) if info.checkpoint]
    if baseline is None and not trained:
        return []  # nothing to log: no store is created
    client = _client(folder)
    experiment_id = _experiment(client, folder, project)
    existing = {run.data.tags.get("assft.round"): run for run in _runs(client, experiment_id)}
    out: list[TrackedRun] = []
    if baseline is not None:
        out.append(_log(client, experiment_id, existing.get(BASELINE), BASELINE, "f_0", "evaluated",
                        {**baseline, "classes": project.classes}, {}, {"evaluation.json": baseline}))
    previous = baseline
    for info in trained:
        content = _round_content(project, info, previous)
        content["metrics"]["classes"] = project.classes
        out.append(_log(client, experiment_id, existing.get(str(info.idx)), str(info.idx), f"f_{info.idx + 1}",
                        info.state.value, content["metrics"], content["params"], content["artifacts"]))
        if info.state is RoundState.EVALUATED:
            previous = info.metrics
    return out


def _client(folder: Path) -> Any:
    # Nothing leaves the machine: MLflow's usage telemetry off, and git probing quiet, before import.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    import logging

    from mlflow.tracking import MlflowClient

    # The store's schema migrations log at INFO on first use; a CLI user needs none of that.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return MlflowClient(tracking_uri=f"sqlite:///{(folder / TRACKING_DB).absolute()}")
    except Exception as exc:  # MLflow raises several kinds for a damaged or foreign database
        raise DataError(
            f"--mlflow {folder}: {folder / TRACKING_DB} is not an MLflow store this version can open ({exc}). "
            "Fix: give a new folder, or move the file away."
        ) from exc


def _experiment(client: Any, folder: Path, project: Project) -> str:
    name = f"assft:{project.folder.name}"
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = (folder / ARTIFACTS_DIR / _NAME_SAFE.sub("_", project.folder.name)).absolute()
    return str(client.create_experiment(name, artifact_location=location.as_uri(),
                                        tags={"assft.project": str(project.folder)}))


def _runs(client: Any, experiment_id: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _log(
    client: Any,
    experiment_id: str,
    run: Any | None,
    round_tag: str,
    model_name: str,
    state: str,
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    artifacts: Mapping[str, Any],
) -> TrackedRun:
    """Create the round's run, or add what changed since it was logged (metrics after evaluation)."""
    if run is not None and run.data.tags.get("assft.state") == state:
        return TrackedRun(round_tag, run.info.run_id, "unchanged")
    action = "updated"
    if run is None:
        name = "f_0 (baseline)" if round_tag == BASELINE else f"round {round_tag} ({model_name})"
        run = client.create_run(experiment_id, run_name=name, tags={"assft.round": round_tag, "assft.model": model_name})
        action = "logged"
        for key, value in _flat(params).items():
            client.log_param(run.info.run_id, key, _param_text(value))
    run_id = run.info.run_id
    for key, value in _metric_values(metrics).items():
        client.log_metric(run_id, key, value)
    client.set_tag(run_id, "assft.state", state)
    if artifacts:
        with tempfile.TemporaryDirectory(prefix="assft-track-") as tmp:
            for file_name, data in artifacts.items():
                path = Path(tmp) / file_name
                path.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
                client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return TrackedRun(round_tag, run_id, action)


def _round_content(project: Project, info: RoundInfo, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters, metrics and artefacts of one trained round."""
    picks = [q for q in rounds.list_queries(project, info.idx) if q.status is rounds.QueryStatus.APPROVED]
    train_job = next(
        (j for j in jobs.list_jobs(project, reap=False)
         if j.kind == "train" and j.status is jobs.JobStatus.DONE and j.params.get("round") == info.idx),
        None,
    )
    params: dict[str, Any] = {"project": to_dict(project.config), "round": info.idx,
                              "picks": ",".join(q.case_id for q in picks)}
    if train_job is not None:
        params["train_job"] = {k: v for k, v in train_job.params.items() if k != "round"}
    metrics: dict[str, Any] = dict(info.metrics)
    if info.state is RoundState.EVALUATED and info.metrics.get("evaluated_on") == ON_TEST:
        change = compare_evaluations(info.idx, previous, info.metrics)
        if change.comparable:
            metrics["change"] = {"mean_dice": change.mean_delta, "per_site": {s.site: s.delta for s in change.sites}}
    effort = annotation.round_efforts(project).get(info.idx)
    if effort is not None:
        metrics["annotation"] = {"changed_voxels": effort.changed_voxels, "changed_slices": effort.changed_slices,
                                 "preannotation_dice": effort.mean_dice, "cases": effort.cases}
    card = project.resolve(info.checkpoint) / "model_card.json"
    artifacts: dict[str, Any] = {
        "picks.json": [{"case_id": q.case_id, "rank": q.rank, "strategy": q.strategy, "why": q.explanation} for q in picks],
        "evaluation.json": info.metrics,
    }
    if card.is_file():
        artifacts["model_card.json"] = json.loads(card.read_text(encoding="utf-8"))
    return {"params": params, "metrics": metrics, "artifacts": artifacts}


def _metric_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers worth plotting across rounds, under stable MLflow names."""
    out: dict[str, float] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:  # NaN skipped
            out[_NAME_SAFE.sub("_", name)] = float(value)

    overall = metrics.get("overall") or {}
    put("dice", overall.get("mean_dice", metrics.get("mean_dice")))
    put("hd95_mm", overall.get("mean_hd95_mm", metrics.get("mean_hd95_mm")))
    names = {str(k): str(v) for k, v in (metrics.get("classes") or {}).items()}
    for k, v in (overall.get("dice_per_class") or {}).items():
        put(f"class.{names.get(str(k), k)}.dice", v)
    for site, summary in (metrics.get("per_site") or {}).items():
        if isinstance(summary, Mapping):
            put(f"site.{site}.dice", summary.get("mean_dice"))
            put(f"site.{site}.hd95_mm", summary.get("mean_hd95_mm"))
    change = metrics.get("change") or {}
    put("change.dice", change.get("mean_dice"))
    for site, delta in (change.get("per_site") or {}).items():
        put(f"change.site.{site}.dice", delta)
    for key in ("labelled", "admitted", "n_cases"):
        put(key, metrics.get(key))
    for key, value in (metrics.get("annotation") or {}).items():
        put(f"annotation.{key}", value)
    return out


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, name + "."))
        else:
            out[_NAME_SAFE.sub("_", name)] = value
    return out


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 1] + "…"
