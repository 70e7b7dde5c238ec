"""`--mlflow DIR` / `assft track`: each round's settings, per-site metrics, picks and model card in a
local MLflow store, logged once per state (issue #19)."""

from __future__ import annotations

import json
from pathlib import Path

from engine_factories import run_cli

from assft_core.session import rounds
from assft_core.session.project import Project


def _client(folder: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def test_rounds_are_logged_to_a_local_mlflow_store_once(tmp_path: Path, labelled_project: Project) -> None:
    root, store = labelled_project.folder, tmp_path / "mlruns"
    refused = run_cli("train", "-p", root, "--detach", "--mlflow", store)
    assert refused.code == 1 and "--wait" in refused.err and not store.exists()
    empty = run_cli("track", "-p", root, "--mlflow", store)
    assert empty.code == 0 and "nothing to log yet" in empty.out and "--baseline" in empty.out and not store.exists()

    assert run_cli("evaluate", "-p", root, "--baseline", "--device", "cpu").code == 0
    run = run_cli("train", "-p", root, "--steps", "2", "--ssft", "none", "--device", "cpu", "--mlflow", store)
    assert run.code == 0, run.err
    assert "MLflow" in run.out and "2 run(s) logged" in run.out

    client = _client(store)
    experiment = client.get_experiment_by_name(f"assft:{root.name}")
    runs = {r.data.tags["assft.round"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"baseline", "0"}
    info = rounds.current_round(labelled_project)
    stored, logged = info.metrics, runs["0"].data
    assert logged.metrics["dice"] == stored["mean_dice"]
    for site, summary in stored["per_site"].items():
        assert logged.metrics[f"site.{site}.dice"] == summary["mean_dice"]
    assert logged.metrics["class.CSF.dice"] == stored["overall"]["dice_per_class"]["1"]
    baseline = runs["baseline"].data.metrics
    assert abs(logged.metrics["change.dice"] - (stored["mean_dice"] - baseline["dice"])) < 1e-9
    picks = [q.case_id for q in rounds.list_queries(labelled_project, 0)]
    assert logged.params["picks"] == ",".join(picks)
    assert logged.params["train_job.supervised_steps"] == "2" and logged.params["project.budget"] == "2"
    names = {a.path for a in client.list_artifacts(runs["0"].info.run_id)}
    assert names == {"model_card.json", "picks.json", "evaluation.json"}
    card = json.loads(Path(client.download_artifacts(runs["0"].info.run_id, "model_card.json", str(tmp_path))).read_text())
    assert set(card["fingerprint"]["labels"]) == set(picks)

    again = run_cli("track", "-p", root, "--mlflow", store)
    assert again.code == 0 and again.out.count("unchanged") == 2
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_a_file_in_place_of_the_store_folder_is_refused(tmp_path: Path, labelled_project: Project) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("mine", encoding="utf-8")
    run = run_cli("track", "-p", labelled_project.folder, "--mlflow", blocker)
    assert run.code == 1 and "not-a-folder" in run.err and "not a folder" in run.err
    assert blocker.read_text(encoding="utf-8") == "mine"
