"""`assft demo run` on the tiny demo corpus: one round headless, a rerun continues without redoing
anything, other settings on the same project are refused; the biased fallback without test labels."""

from __future__ import annotations

import shutil
from pathlib import Path

from assft_core.session import jobs, labels, rounds, store, workspace
from assft_core.session.evaluation import ON_NEW_LABELS, baseline_metrics, evaluate_model
from assft_core.session.project import list_cases, open_project
from assft_core.session.query import propose_round
from assft_core.session.rounds import RoundState

from engine_factories import CliRun, run_cli


def _rows(run: CliRun) -> dict[int, list[str]]:
    """The final table's rows: round -> its cells."""
    table = run.out.split("wall s\n", 1)[1].splitlines()[1:]
    return {int(line.split()[0]): line.split() for line in table if line.strip()}


def test_demo_run_one_round_and_rerun(
    tmp_path: Path, scored_template: tuple[Path, CliRun], tiny_demo_corpus: Path, tiny_model_dir: Path
) -> None:
    root = tmp_path / "proj"
    shutil.copytree(scored_template[0], root)
    argv = ["demo", "run", "--rounds", "1", "--budget", "2", "--project", root, "--corpus", tiny_demo_corpus,
            "--size", "tiny", "--model", tiny_model_dir, "--steps", "2", "--ssft-steps", "1", "--device", "cpu"]
    run = run_cli(*argv)
    assert run.code == 0, run.err
    project = open_project(root)
    info = rounds.current_round(project)
    assert info.idx == 0 and info.state is RoundState.EVALUATED
    rows = _rows(run)
    assert sorted(rows) == [0, 1]
    baseline = baseline_metrics(project)
    assert baseline is not None and baseline["model"] == "f0" and baseline["n_cases"] == 4
    assert rows[0][1:3] == ["0", f"{baseline['mean_dice']:.3f}"]
    assert rows[1][1:3] == ["2", f"{info.metrics['mean_dice']:.3f}"]
    assert rows[1][3:7] == [f"{info.metrics['per_site'][s]['mean_dice']:.3f}" for s in "ABCD"]
    assert len(labels.current_labels(project)) == 2

    # The oracle's labels carry the effort an expert would have spent correcting f_0's
    # pre-annotation; recomputed here from f_0's prediction and the reference label.
    from assft_core.data.io import load_label
    from assft_core.session import annotation

    predictor, cases = annotation.model_predictor("cpu"), {c.case_id: c for c in list_cases(project)}
    efforts = annotation.case_efforts(project, 0)
    assert sorted(e.case_id for e in efforts) == sorted(labels.current_labels(project))
    for e in efforts:  # round 0 is still current, so the predictor's model is f_0
        pred, tag = predictor(project, list(cases[e.case_id].image_paths))
        ref = load_label(labels.current_labels(project)[e.case_id].file).array[0]  # the oracle's stored copy
        assert tag == "f0" and (e.changed_voxels, e.changed_slices) == annotation.effort(pred, ref)[:2]
    assert annotation.round_efforts(project)[0].cases == 2

    n_jobs = len(jobs.list_jobs(project))
    again = run_cli(*argv)
    assert again.code == 0 and _rows(again) == rows and len(jobs.list_jobs(project)) == n_jobs

    steps_at = argv.index("--steps") + 1
    other = run_cli(*argv[:steps_at], "1", *argv[steps_at + 1 :])
    assert other.code == 1 and "other settings" in other.err and "steps" in other.err


def test_without_test_labels_the_new_labels_are_scored_under_f_t(scored_project) -> None:
    project = scored_project
    with store.transaction(project.db) as conn:
        conn.execute("UPDATE cases SET reference_label = NULL, has_reference_label = 0 WHERE split = 'test'")
    picks = [q.case_id for q in propose_round(project, budget=2)]
    rounds.approve(project)
    labels.label_with_oracle(project)
    report = evaluate_model(project, workspace.model_for_round(project, 0), device="cpu", round_idx=0)
    assert report["evaluated_on"] == ON_NEW_LABELS and "Biased" in report["note"]
    assert report["model"] == "f0" and sorted(c["case_id"] for c in report["cases"]) == sorted(picks)


def test_demo_project_is_created_once_with_the_shipped_model(tmp_path: Path, tiny_demo_corpus: Path) -> None:
    from assft_core.models.pretrain import demo_model_dir

    folder = tmp_path / "demo"
    run = run_cli("demo", "project", folder, "--corpus", tiny_demo_corpus, "--size", "tiny")
    assert run.code == 0 and "created: demo project" in run.out, run.err
    project = open_project(folder)
    assert project.oracle and Path(project.model["path"]) == demo_model_dir()
    assert rounds.current_round(project).state is RoundState.OPEN
    quiet = run_cli("demo", "project", folder, "--corpus", tiny_demo_corpus, "--size", "tiny", "--quiet-if-exists")
    assert quiet.code == 0 and quiet.out == ""
    refused = run_cli("demo", "project", tmp_path, "--corpus", tiny_demo_corpus, "--size", "tiny")  # not empty
    assert refused.code == 1 and "not empty" in refused.err
