"""The round on the command line, end to end on the tiny demo corpus with a tiny model:
score → query → approve → label --oracle → train (+ SSFT) → status → export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from assft_core.data.records import Split
from assft_core.models.loaded import load_model
from assft_core.query.table import ScoreTable
from assft_core.session import jobs, labels, rounds, workspace
from assft_core.session.project import list_cases, open_project
from assft_core.session.rounds import RoundState
from assft_core.train.evaluate import load_eval_case, predict_native

from engine_factories import CliRun, run_cli
from progress_recorder import Recorder


def test_score_command_stores_f0_table_and_marks_round_scored(scored_template: tuple[Path, CliRun]) -> None:
    root, run = scored_template
    assert run.code == 0, run.err
    project = open_project(root)
    info = rounds.current_round(project)
    assert info.state is RoundState.SCORED and "round 0 scored: 6 pool, 4 test" in run.out
    table = ScoreTable.load(project.resolve(info.score_table))
    cases = list_cases(project, Split.POOL) + list_cases(project, Split.TEST)
    assert sorted(table.case_ids) == sorted(c.case_id for c in cases)  # test cases scored for display
    f0 = ScoreTable.load(project.resolve(jobs.list_jobs(project)[0].metrics["models"]["f0"]))
    np.testing.assert_array_equal(table.kl, f0.kl)  # round 0: the query table is f_0's
    assert table.availability.source_stats and table.availability.source_stats_origin == "batchnorm"


def test_cli_round_end_to_end(tmp_path: Path, scored_template: tuple[Path, CliRun], tiny_demo_corpus: Path) -> None:
    root = tmp_path / "proj"
    shutil.copytree(scored_template[0], root)
    test_ids = {c.case_id for c in list_cases(open_project(root), Split.TEST)}

    run = run_cli("query", "-p", root, "--budget", "2")
    assert run.code == 0, run.err
    project = open_project(root)
    picked = [q.case_id for q in rounds.list_queries(project)]
    assert len(picked) == 2 and not set(picked) & test_ids
    # Each pick is explained in the Query page's plain sentence, not only by its numbers.
    for rank, case_id in enumerate(picked, start=1):
        assert f"why #{rank}: {case_id} was picked because" in run.out

    assert run_cli("approve", "-p", root, "--all").code == 0
    run = run_cli("label", "-p", root, "--oracle")
    assert run.code == 0 and "round 0: labelled" in run.out

    run = run_cli("train", "-p", root, "--steps", "3", "--ssft-steps", "2", "--device", "cpu")
    assert run.code == 0, run.err
    info = rounds.current_round(project)
    assert info.state is RoundState.EVALUATED
    m = info.metrics
    assert m["evaluated_on"] == "test" and m["n_cases"] == 4 and m["labelled"] == 2
    assert set(m["per_site"]) == {"A", "B", "C", "D"}
    job = jobs.list_jobs(project)[0]
    assert job.kind == "train" and job.status is jobs.JobStatus.DONE
    assert job.metrics["labelled"] == 2 and job.metrics["unlabelled"] == 4
    assert len(job.metrics["ssft_cases"]) == 4  # one row per unlabelled case, with the decision
    steps = [json.loads(line) for line in (job.run_dir / "progress.jsonl").read_text().splitlines()]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5] and [e["phase"] for e in steps] == ["supervised"] * 3 + ["ssft"] * 2

    # The stored Dice is the saved f_1's on the native grid: recompute one case independently.
    model = load_model(project.resolve(info.checkpoint), device="cpu")
    assert model.card.fingerprint["labels"].keys() == set(picked)
    case = m["cases"][0]
    info_case = next(c for c in list_cases(project, Split.TEST) if c.case_id == case["case_id"])
    # Through the project's cache: the image the stored Dice was computed on (float16-rounded).
    ec = load_eval_case(
        workspace.case_record(info_case, info_case.reference_label), workspace.preprocess_settings(project),
        cache_dir=workspace.preprocess_cache(project),
    )
    with torch.no_grad():
        pred = predict_native(model.network, ec.case, workspace.inference_settings(project, model.card, "cpu"))
    ref = np.asarray(nib.load(str(info_case.reference_label)).dataobj)
    assert pred.shape == ref.shape
    for k in (1, 2, 3):
        p, r = pred == k, ref == k
        dice = 2 * (p & r).sum() / (p.sum() + r.sum()) if p.sum() + r.sum() else None
        stored = case["classes"][str(k)]["dice"]
        assert (dice is None and stored is None) or abs(dice - stored) < 1e-6

    run = run_cli("status", "-p", root)
    assert run.code == 0 and "round 0: evaluated" in run.out

    out = tmp_path / "export"
    run = run_cli("export", "-p", root, out)
    assert run.code == 0, run.err
    assert (out / "model" / "model_card.json").is_file() and (out / "model" / "model.pt").is_file()
    exported = json.loads((out / "metrics" / "round-000.json").read_text())
    assert exported["mean_dice"] == m["mean_dice"]
    assert {v["case_id"] for v in json.loads((out / "metrics" / "labels.json").read_text())} == set(picked)
    assert load_model(out / "model", device="cpu").card == model.card
    before = sorted(p.name for p in out.rglob("*"))
    again = run_cli("export", "-p", root, out)
    assert again.code == 1 and "not an empty folder" in again.err
    assert sorted(p.name for p in out.rglob("*")) == before

    # the same trained round as a MONAI bundle that MONAI's own loader opens, with the same output
    bundle_out = tmp_path / "as_bundle"
    run = run_cli("export", "-p", root, bundle_out, "--format", "monai_bundle")
    assert run.code == 0 and "monai_bundle/" in run.out, run.err
    from monai.bundle import load as bundle_load

    theirs = bundle_load("monai_bundle", bundle_dir=str(bundle_out), workflow_type="inference", device="cpu").eval()
    x = torch.rand(1, 1, *model.card.roi_size)
    with torch.no_grad():
        assert torch.allclose(theirs(x), model.network.eval()(x), atol=1e-5)

    # the export folder itself is a valid `predict` model argument (README tour)
    scan = next(tiny_demo_corpus.glob("imagesTr/*_test_*_0000.nii.gz"))
    run = run_cli("predict", out, scan, "-o", tmp_path / "pred", "--device", "cpu")
    assert run.code == 0, run.err
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 1

    run = run_cli("next-round", "-p", root)
    assert run.code == 0 and "round 1 is open" in run.out and "assft score" in run.out
    assert rounds.current_round(open_project(root)).idx == 1


def test_train_refuses_before_labels_and_names_next_step(scored_project) -> None:
    run = run_cli("train", "-p", scored_project.folder, "--steps", "1", "--device", "cpu")
    assert run.code == 1 and "propose picks" in run.err and "Traceback" not in run.err
    assert rounds.current_round(scored_project).state is RoundState.SCORED
    assert labels.current_labels(scored_project) == {} and jobs.list_jobs(scored_project)[0].kind == "score"


def test_export_without_trained_model_is_refused(tmp_path: Path, scored_project) -> None:
    run = run_cli("export", "-p", scored_project.folder, tmp_path / "out")
    assert run.code == 1 and "no trained model" in run.err and not (tmp_path / "out").exists()


def test_scoring_without_test_cases_scores_the_pool_only(fresh_project) -> None:
    import dataclasses

    from assft_core.session.project import save_config
    from assft_core.session.scoring_round import score_round

    project = save_config(fresh_project, dataclasses.replace(fresh_project.config, score_test_cases=False))
    sink = Recorder()
    summary = score_round(project, sink, device="cpu")
    table = ScoreTable.load(project.resolve(rounds.current_round(project).score_table))
    assert summary.n_test == 0 and sorted(table.case_ids) == sorted(c.case_id for c in list_cases(project, Split.POOL))
    # Per-case progress with a time-left estimate from the measured case times (never frozen).
    per_case = [m for _, _, m in sink.calls if "cases_done" in m]
    assert [m["cases_done"] for m in per_case] == list(range(1, summary.n_pool + 1))
    assert all(isinstance(m["eta_s"], float) for m in per_case) and per_case[-1]["eta_s"] == 0.0


def test_evaluating_f0_reports_progress_case_by_case(fresh_project) -> None:
    from assft_core.session.evaluation import evaluate_baseline

    sink = Recorder()
    metrics = evaluate_baseline(fresh_project, device="cpu", sink=sink)
    n = metrics["n_cases"]
    assert n > 0
    done = [m["cases_done"] for _, _, m in sink.calls]
    assert done == list(range(0, n + 1))  # streamed: each case loaded, predicted and scored in turn
    fractions = [f for f, _, _ in sink.calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert sink.calls[-1][1].startswith(f"evaluating f0: {n}/{n} case(s)")
