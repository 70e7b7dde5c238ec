"""Project page: dataset counts and integrity findings, the model card, the round history."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from app_factories import (
    AFFINE,
    drive_oracle_round,
    make_dataset,
    make_model_dir,
    store_baseline,
    store_scores,
    write_nifti,
)

from assft_core.config import ProjectConfig
from assft_core.query.table import Availability
from assft_core.session import jobs
from assft_core.session.project import create_project
from assft_core.session.rounds import RoundState


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def column_formats(dataframe) -> dict[str, str]:
    """Column -> the number format a table was drawn with (its column config, as the browser gets it)."""
    config = json.loads(dataframe.proto.columns or "{}")
    return {name.removeprefix("name:"): c["type_config"]["format"] for name, c in config.items()
            if "format" in c.get("type_config", {})}


def _values(array: list | dict) -> list:
    """A plotly JSON array as a list (plotly writes numeric arrays as base64 with a dtype)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_dataset_counts_by_site_and_split(run_page, expert_project) -> None:
    at = run_page("project", expert_project.folder)
    assert not at.exception
    m = _metrics(at)
    # Pool p0..p3 (p0 came labelled), test t0, t1: counted by hand from the fixture.
    assert (m["Labelled"], m["Unlabelled"], m["Test"], m["Other"], m["Unusable"], m["All"]) == ("1", "3", "2", "0", "0", "6")
    table = at.dataframe[0].value
    assert table.loc["A"].tolist() == [1, 1, 1, 0, 0, 3] and table.loc["B"].tolist() == [0, 2, 1, 0, 0, 3]
    assert "no problem found" in at.success[0].value


def test_integrity_errors_are_listed_with_their_fix(run_page, tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    write_nifti(data / "labelsTr" / "p3.nii.gz", np.zeros((6, 6, 6), np.uint8), AFFINE)  # wrong grid
    project = create_project(tmp_path / "proj", data, make_model_dir(tmp_path / "model"), config=ProjectConfig())
    at = run_page("project", project.folder)
    assert not at.exception
    assert _metrics(at)["Unusable"] == "1"
    (error,) = at.error
    assert error.value.startswith("**p3**") and "**Fix**" in error.value and "kept out of the loop" in error.value


def test_model_card_and_source_knowledge_in_plain_words(run_page, oracle_project) -> None:
    at = run_page("project", oracle_project.folder)
    facts = at.table[0].value["value"].to_dict()  # a static table: long values wrap
    assert (facts["Backbone"], facts["Classes (K)"], facts["ROI (voxels)"], facts["Spacing (mm)"]) == (
        "unet", "2: 0 = background, 1 = blob", "32 × 32 × 32", "2 × 2 × 2")
    assert any("first scoring pass uses BatchNorm" in md.value for md in at.markdown)
    store_scores(oracle_project, Availability(False, "none", True, True))
    at = run_page("project", oracle_project.folder)
    assert any("no source knowledge: DKD = diversity only" in md.value for md in at.markdown)
    assert "KG ≡ 1" in at.warning[0].value


def test_round_history_shows_f0_then_each_round_mean_and_per_site(run_page, oracle_project) -> None:
    drive_oracle_round(oracle_project, RoundState.EVALUATED)
    store_baseline(oracle_project, 0.3, {"A": 0.2, "B": 0.4})
    at = run_page("project", oracle_project.folder)
    assert not at.exception
    (chart,) = at.get("plotly_chart")
    traces = {t["name"]: t for t in json.loads(chart.proto.spec)["data"]}
    assert _values(traces["all sites"]["x"]) == [0, 1]
    assert _values(traces["all sites"]["y"]) == [0.3, 0.6]
    assert _values(traces["site A"]["y"]) == [0.2, 0.7] and _values(traces["site B"]["y"]) == [0.4, 0.5]
    history, change = at.dataframe[-2].value, at.dataframe[-1].value
    assert change.to_dict("records")[1:] == [
        {"site": "A", "f₀": 0.2, "f₁": 0.7, "change": pytest.approx(0.5)},
        {"site": "B", "f₀": 0.4, "f₁": 0.5, "change": pytest.approx(0.1)},
    ]
    assert any("0.300 → 0.600 (+0.300), from the pre-trained model (f₀) to the model fine-tuned in round 0 (f₁)"
               in s.value for s in at.success)
    assert history.to_dict("records") == [
        {"model": "pre-trained model (f₀)", "labelled": 0, "evaluated on": "test", "mean Dice": 0.3, "A": 0.2, "B": 0.4},
        {"model": "model fine-tuned in round 0 (f₁)", "labelled": 2, "evaluated on": "test", "mean Dice": 0.6,
         "A": 0.7, "B": 0.5},
    ]
    # Every Dice column of the history shows 3 decimals, like every other Dice on the page.
    assert column_formats(at.dataframe[-2]) == {"mean Dice": "%.3f", "A": "%.3f", "B": "%.3f"}
    assert not at.warning  # every point is a test-set result
    assert not [b for b in at.button if b.key == "evaluate-baseline"]  # f_0 is evaluated already


def test_a_site_that_got_worse_is_said_in_plain_words(run_page, oracle_project) -> None:
    drive_oracle_round(oracle_project, RoundState.EVALUATED)  # f_1: A 0.7, B 0.5
    store_baseline(oracle_project, 0.55, {"A": 0.5, "B": 0.6})
    at = run_page("project", oracle_project.folder)
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert "Site B got worse: Dice 0.600 → 0.500 (-0.100)." in warnings
    assert not any("Site A" in w for w in warnings)


def test_f0_evaluation_button_queues_a_baseline_job(run_page, oracle_project, fake_jobs) -> None:
    at = run_page("project", oracle_project.folder)
    at.button(key="evaluate-baseline").click().run()
    assert not at.exception
    (job,) = jobs.list_jobs(oracle_project)
    assert (job.kind, job.params, fake_jobs) == ("evaluate", {"baseline": True}, [job.id])
    assert at.button(key="evaluate-baseline").disabled


def test_a_missing_model_card_is_a_message(run_page, tmp_path: Path) -> None:
    model = make_model_dir(tmp_path / "model")  # this test's own model folder: the shared one stays
    project = create_project(tmp_path / "proj", make_dataset(tmp_path / "data"), model, config=ProjectConfig())
    shutil.rmtree(model)
    at = run_page("project", project.folder)
    assert not at.exception
    assert "Could not read the model card" in at.error[0].value


def test_a_missing_score_table_is_named_as_such(run_page, oracle_project) -> None:
    store_scores(oracle_project)
    shutil.rmtree(oracle_project.artifact_path("scores", "round0"))
    at = run_page("project", oracle_project.folder)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("score table" in e for e in errors), errors
    assert not any("model card" in e for e in errors), errors


@pytest.mark.parametrize("page", ["project", "query", "labels", "finetune", "embedding", "viewer"])
def test_a_damaged_store_is_a_message_on_every_page(run_page, oracle_project, page) -> None:
    import sqlite3

    conn = sqlite3.connect(oracle_project.db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(oracle_project.db, "r+b") as fh:
        fh.truncate(oracle_project.db.stat().st_size // 2)
    at = run_page(page, oracle_project.folder)
    assert not at.exception
    assert any("damaged" in e.value and "assft doctor" in e.value for e in at.error), [e.value for e in at.error]
