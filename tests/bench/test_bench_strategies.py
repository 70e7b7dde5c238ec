"""`assft bench strategies`: a real tiny run writes schema-valid results; resume skips finished work."""

from __future__ import annotations

import csv
import functools
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from assft_core.bench.config import preset
from assft_core.bench.plan import ReferenceSpec, RunSpec, plan_references, plan_runs, pool_subset
from assft_core.bench.runs import RUN_FILE, RunStore
from assft_core.bench.schema import ReferenceRecord, RoundRecord, load_results, validate_result
from assft_core.bench.strategies import run_strategy_benchmark
from assft_core.cli import main
from assft_core.config import SSFTMode
from assft_core.errors import StateError

FG_CLASSES = {"CSF", "grey_matter", "white_matter"}
SITES = {"A", "B", "C", "D"}


def _pool_ids(corpus: Path) -> list[str]:
    with open(corpus / "cases.csv", newline="") as fh:
        return [r["case_id"] for r in csv.DictReader(fh) if r["split"] == "pool"]


def _test_count(corpus: Path) -> int:
    with open(corpus / "cases.csv", newline="") as fh:
        return sum(r["split"] == "test" for r in csv.DictReader(fh))


def test_tiny_run_writes_schema_valid_results(tiny_bench, tiny_demo_corpus: Path) -> None:
    cfg, out, outcome = tiny_bench
    assert outcome.remaining == [] and outcome.skipped == []
    assert sorted(outcome.computed) == sorted(
        ["unbalanced/floor/seed-0", "unbalanced/assft/none/seed-0", "unbalanced/random/none/seed-0",
         "unbalanced/ceiling/seed-0"]
    )
    for name in ("strategies.json", "strategies.csv", "strategies_summary.csv", "strategies_curves.html"):
        assert (out / name).is_file(), name
    raw = json.loads((out / "strategies.json").read_text())
    assert validate_result(raw) == []  # what the Compare page checks
    result = load_results(out / "strategies.json")
    assert result.command == ["assft", "bench", "strategies", "--config", "tiny"]
    assert result.config == cfg.to_dict() and result.note.startswith("complete: 2 of 2 runs")

    # Hand computation: the background-only f_0 misses every foreground class of every test case,
    # and two fine-tuning steps cannot lift a 20-logit margin.
    n_test = _test_count(tiny_demo_corpus)
    subset = pool_subset(_pool_ids(tiny_demo_corpus), 0.8, 0, "unbalanced")
    assert len(subset) == round(0.8 * len(_pool_ids(tiny_demo_corpus))) == 5
    assert {(r.strategy, r.round) for r in result.records} == {("assft", 0), ("assft", 1), ("random", 0), ("random", 1)}
    for rec in [*result.records, *result.references]:
        assert rec.mean_dice == 0.0 and rec.hd95_mm is None
        assert rec.hd95_missed_count == len(FG_CLASSES) * n_test
        assert set(rec.per_class_dice) == FG_CLASSES and set(rec.per_site_dice) == SITES
    for rec in result.records:
        assert rec.labelled_count == rec.round * cfg.budget
        assert len(rec.picks) == (cfg.budget if rec.round < cfg.rounds else 0)
        assert set(rec.picks) <= set(subset)
        assert rec.wall_time_s["evaluate"] > 0
        assert ("train" in rec.wall_time_s) == (rec.round > 0) and ("score" in rec.wall_time_s) == (rec.round == 0)
    refs = {r.kind: r for r in result.references}
    assert refs["ceiling"].labelled_count == len(subset) and refs["floor"].labelled_count == 0

    # The loop really ran on the seed's subset: the run's project holds exactly those pool cases.
    from assft_core.data.records import Split
    from assft_core.session.project import list_cases, open_project

    project = open_project(out / "work" / "unbalanced" / "assft" / "none" / "seed-0" / "project")
    assert sorted(c.case_id for c in list_cases(project, Split.POOL)) == subset

    rows = pd.read_csv(out / "strategies.csv")
    assert len(rows) == 4 and {"dice_site_A", "dice_class_CSF", "time_evaluate_s", "picks"} <= set(rows.columns)
    summary = pd.read_csv(out / "strategies_summary.csv")
    assert set(summary["strategy"]) == {"assft", "random", "ceiling", "floor"}


def test_rounds_are_written_as_they_finish(tiny_bench) -> None:
    _, out, _ = tiny_bench
    run_dir = out / "runs" / "unbalanced" / "random" / "none" / "seed-0"
    whole = json.loads((run_dir / RUN_FILE).read_text())
    per_round = [json.loads((run_dir / f"round-{t:03d}.json").read_text()) for t in (0, 1)]
    assert per_round == whole


class CountingExecutor:
    """Stands in for the loop: counts calls and returns stored (or made-up) records."""

    def __init__(self, records: dict[str, list[RoundRecord]] | None = None, fail_on: str | None = None) -> None:
        self.calls: list[str] = []
        self.records = records or {}
        self.fail_on = fail_on

    def pool_ids(self, pool: str) -> list[str]:
        return [f"case{i}" for i in range(10)]

    def prepare(self, pool: str, work_dir: Path) -> None:
        self.calls.append(f"prepare {pool}")

    def attach(self, pool: str, work_dir: Path) -> None:
        self.calls.append(f"attach {pool}")

    def floor(self, pool: str) -> ReferenceRecord:
        self.calls.append(f"floor {pool}")
        return ReferenceRecord("floor", pool, 0, 0, 0.5, {}, {}, None, 0, {})

    def run(self, spec: RunSpec, subset: list[str], work_dir: Path, on_record) -> list[RoundRecord]:
        self.calls.append(spec.run_id)
        if spec.run_id in self.records:
            return self.records[spec.run_id]
        records = [
            RoundRecord(spec.pool, spec.strategy, spec.seed, t, t, 0.5 + 0.1 * t, {}, {}, None, 0, subset[t : t + 1], {})
            for t in range(2)
        ]
        on_record(records[0])
        if spec.run_id == self.fail_on:
            raise KeyboardInterrupt  # killed after round 0 was recorded
        on_record(records[1])
        return records

    def ceiling(self, spec: ReferenceSpec, subset: list[str], work_dir: Path) -> ReferenceRecord:
        self.calls.append(spec.run_id)
        return ReferenceRecord("ceiling", spec.pool, spec.seed, len(subset), 0.9, {}, {}, None, 0, {})


def test_resume_skips_finished_runs(tiny_bench, tmp_path: Path) -> None:
    cfg, src, _ = tiny_bench
    out = tmp_path / "tiny"
    shutil.copytree(src, out, symlinks=True, ignore=shutil.ignore_patterns("work"))
    fake = CountingExecutor()
    outcome = run_strategy_benchmark(cfg, out, fake, command=["x"], device="cpu", resume=True, png=False)
    assert fake.calls == [] and outcome.computed == [] and len(outcome.skipped) == 4

    random_id = "unbalanced/random/none/seed-0"
    kept = RunStore(out).records(RunSpec("unbalanced", "random", 0, SSFTMode.NONE))
    (out / "runs" / random_id / RUN_FILE).unlink()
    fake = CountingExecutor({random_id: kept})
    outcome = run_strategy_benchmark(cfg, out, fake, command=["x"], device="cpu", resume=True, png=False)
    assert fake.calls == ["prepare unbalanced", random_id]
    assert outcome.computed == [random_id] and len(outcome.skipped) == 3
    assert validate_result(json.loads((out / "strategies.json").read_text())) == []


def test_killed_run_is_the_only_one_redone(tmp_path: Path) -> None:
    cfg = preset("tiny")
    first = CountingExecutor(fail_on="unbalanced/assft/none/seed-0")
    with pytest.raises(KeyboardInterrupt):
        run_strategy_benchmark(cfg, tmp_path / "b", first, command=["x"], device="cpu", png=False)
    # random (the baseline) runs first; assft was killed after its round 0 was recorded.
    assert first.calls == ["prepare unbalanced", "floor unbalanced", "unbalanced/random/none/seed-0",
                           "unbalanced/assft/none/seed-0"]
    killed = tmp_path / "b" / "runs" / "unbalanced" / "assft" / "none" / "seed-0"
    assert (killed / "round-000.json").is_file() and not (killed / RUN_FILE).exists()

    again = CountingExecutor()
    outcome = run_strategy_benchmark(cfg, tmp_path / "b", again, command=["x"], device="cpu", resume=True, png=False)
    assert again.calls == ["prepare unbalanced", "unbalanced/assft/none/seed-0", "unbalanced/ceiling/seed-0"]
    assert outcome.skipped == ["unbalanced/floor/seed-0", "unbalanced/random/none/seed-0"]


def test_max_units_writes_partial_results_and_says_so(tmp_path: Path) -> None:
    fake = CountingExecutor()
    outcome = run_strategy_benchmark(preset("tiny"), tmp_path / "b", fake, command=["x"], device="cpu", max_units=1,
                                     png=False)
    assert outcome.computed == ["unbalanced/floor/seed-0", "unbalanced/random/none/seed-0"]
    assert outcome.remaining == ["unbalanced/assft/none/seed-0", "unbalanced/ceiling/seed-0"]
    result = load_results(tmp_path / "b" / "strategies.json")
    assert result.note.startswith("PARTIAL: 1 of 2 runs") and {r.strategy for r in result.records} == {"random"}


def test_workers_store_the_same_results_as_one_process(tmp_path: Path) -> None:
    cfg = preset("tiny")
    one = run_strategy_benchmark(cfg, tmp_path / "one", CountingExecutor(), command=["x"], device="cpu", png=False)
    main_executor = CountingExecutor()
    two = run_strategy_benchmark(cfg, tmp_path / "two", main_executor, command=["x"], device="cpu", png=False,
                                 workers=2, executor_factory=CountingExecutor)
    # The main process only prepares the pool and reads the floor; the workers did the rest.
    assert main_executor.calls == ["prepare unbalanced", "floor unbalanced"]
    assert sorted(two.computed) == sorted(one.computed) and two.remaining == []
    for spec in plan_runs(cfg):
        assert RunStore(tmp_path / "two").records(spec) == RunStore(tmp_path / "one").records(spec)
    assert load_results(tmp_path / "two" / "strategies.json").records == load_results(
        tmp_path / "one" / "strategies.json").records


def test_workers_respect_max_units_and_surface_a_failed_run(tmp_path: Path) -> None:
    cfg = preset("tiny")
    outcome = run_strategy_benchmark(cfg, tmp_path / "b", CountingExecutor(), command=["x"], device="cpu", png=False,
                                     max_units=1, workers=2, executor_factory=CountingExecutor)
    assert outcome.computed == ["unbalanced/floor/seed-0", "unbalanced/random/none/seed-0"]
    assert outcome.remaining == ["unbalanced/assft/none/seed-0", "unbalanced/ceiling/seed-0"]

    failing = functools.partial(CountingExecutor, fail_on="unbalanced/assft/none/seed-0")
    with pytest.raises(KeyboardInterrupt):
        run_strategy_benchmark(cfg, tmp_path / "b", CountingExecutor(), command=["x"], device="cpu", png=False,
                               resume=True, workers=2, executor_factory=failing)
    killed = tmp_path / "b" / "runs" / "unbalanced" / "assft" / "none" / "seed-0"
    assert (killed / "round-000.json").is_file() and not (killed / RUN_FILE).exists()
    # The ceiling, handed out beside the failing run, still finished and was stored.
    assert RunStore(tmp_path / "b").reference(ReferenceSpec("unbalanced", "ceiling", 0)) is not None
    with pytest.raises(ValueError, match="executor_factory"):
        run_strategy_benchmark(cfg, tmp_path / "c", CountingExecutor(), command=["x"], device="cpu", workers=2)


def test_only_computes_the_matching_units_into_the_same_folder(tmp_path: Path) -> None:
    out = tmp_path / "b"
    fake = CountingExecutor()
    outcome = run_strategy_benchmark(preset("tiny"), out, fake, command=["x"], device="cpu", png=False,
                                     only=["unbalanced/random/*"])
    assert fake.calls == ["prepare unbalanced", "floor unbalanced", "unbalanced/random/none/seed-0"]
    assert outcome.remaining == ["unbalanced/assft/none/seed-0", "unbalanced/ceiling/seed-0"]
    # Another piece (another machine, say) continues the same benchmark; nothing is redone.
    again = CountingExecutor()
    outcome = run_strategy_benchmark(preset("tiny"), out, again, command=["x"], device="cpu", png=False,
                                     resume=True, only=["*/ceiling/*", "*/assft/*"])
    assert again.calls == ["prepare unbalanced", "unbalanced/assft/none/seed-0", "unbalanced/ceiling/seed-0"]
    assert outcome.remaining == [] and load_results(out / "strategies.json").note.startswith("complete")
    # A pattern nothing matches prepares nothing.
    idle = CountingExecutor()
    run_strategy_benchmark(preset("tiny"), tmp_path / "c", idle, command=["x"], device="cpu", png=False, only=["x/*"])
    assert idle.calls == []


def test_results_name_the_machine_that_computed_the_units(tmp_path: Path) -> None:
    out = tmp_path / "b"
    run_strategy_benchmark(preset("tiny"), out, CountingExecutor(), command=["assft", "bench", "on-gpu"],
                           device="cuda:0", max_units=1, png=False)
    # Rebuilding the files elsewhere (no unit computed) keeps the computing machine and command.
    run_strategy_benchmark(preset("tiny"), out, CountingExecutor(), command=["assft", "rebuild"], device="cpu",
                           resume=True, max_units=0, png=False)
    result = load_results(out / "strategies.json")
    assert result.machine.device == "cuda:0" and result.command == ["assft", "bench", "on-gpu"]
    # A second computing invocation becomes the named one; both are listed in the note.
    run_strategy_benchmark(preset("tiny"), out, CountingExecutor(), command=["assft", "bench", "cpu"], device="cpu",
                           resume=True, png=False)
    result = load_results(out / "strategies.json")
    assert result.machine.device == "cpu" and result.command == ["assft", "bench", "cpu"]
    assert "units computed in 2 invocations: 2 on cuda:0" in result.note and result.note.startswith("complete")
    assert len(RunStore(out).invocations()) == 2


def test_output_folder_is_never_reused_by_accident(tmp_path: Path, capsys) -> None:
    out = tmp_path / "b"
    run_strategy_benchmark(preset("tiny"), out, CountingExecutor(), command=["x"], device="cpu", png=False)
    with pytest.raises(StateError, match="--resume"):
        run_strategy_benchmark(preset("tiny"), out, CountingExecutor(), command=["x"], device="cpu", png=False)
    other = preset("default")
    with pytest.raises(StateError, match="other settings"):
        run_strategy_benchmark(other, out, CountingExecutor(), command=["x"], device="cpu", resume=True, png=False)
    assert main(["bench", "strategies", "--config", "tiny", "--out", str(out)]) == 1
    assert "--resume" in capsys.readouterr().err
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert main(["bench", "strategies", "--config", "tiny", "--out", str(a_file)]) == 1
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err and a_file.read_text() == "mine"


def test_plan_shares_subsets_and_counts_runs() -> None:
    ids = [f"c{i:02d}" for i in range(40)]
    a, b = pool_subset(ids, 0.8, 0, "unbalanced"), pool_subset(list(reversed(ids)), 0.8, 0, "unbalanced")
    assert a == b and len(a) == 32 and set(a) <= set(ids)
    assert pool_subset(ids, 0.8, 1, "unbalanced") != a
    full = preset("full")
    runs = plan_runs(full)
    # 8 strategies × 3 seeds × 2 pools, plus the ablation's 4 modes other than the comparison's.
    assert len(runs) == 8 * 3 * 2 + 4 * 3 * 2 == len(set(runs))
    assert len(plan_runs(preset("default"))) == 3 * 3
    assert preset("default").ceiling_steps == 2 * 100 and full.ceiling_steps == 3 * (200 + 100)


def test_stop_after_starts_no_run_past_the_deadline(tmp_path: Path, tiny_demo_corpus: Path, tiny_model: Path,
                                                     capsys) -> None:
    out = tmp_path / "b"
    code = main(["bench", "strategies", "--config", "tiny", "--out", str(out), "--dataset",
                 f"unbalanced={tiny_demo_corpus}", "--model", str(tiny_model), "--device", "cpu", "--no-png",
                 "--stop-after", "0"])
    printed = capsys.readouterr().out
    assert code == 0 and "1 unit(s) computed, 0 already done, 3 left" in printed and "--resume" in printed
    result = load_results(out / "strategies.json")
    assert result.note.startswith("PARTIAL: 0 of 2 runs") and [r.kind for r in result.references] == ["floor"]


def test_command_line_overrides_change_only_what_they_name() -> None:
    from assft_core.bench.strategy_cli import bench_config
    from assft_core.errors import AssftError

    full = preset("full")
    control = bench_config("full", pools=["unbalanced"], strategies=["assft"], ssft_mode="none",
                           supervised_steps=300, ceiling=False, seeds=None)
    assert control.ssft_mode is SSFTMode.NONE and control.supervised_steps == 300 and not control.ceiling
    assert control.pools == ("unbalanced",) and control.seeds == full.seeds and control.rounds == full.rounds
    assert control.ceiling_steps == 3 * 300 and [r.kind for r in plan_references(control)] == ["floor"]
    with pytest.raises(AssftError, match="unknown strategy"):
        bench_config("full", strategies=["nope"])
    with pytest.raises(AssftError, match="SSFT modes"):
        bench_config("full", ssft_mode="sometimes")
    with pytest.raises(AssftError, match="unknown benchmark setting"):
        bench_config("full", epochs=3)


def test_recipe_reaches_every_run_but_the_ceiling() -> None:
    from assft_core.bench.oracle import project_config
    from assft_core.bench.strategy_cli import bench_config
    from assft_core.config import Recipe
    from assft_core.errors import AssftError

    cfg = bench_config("recipes", recipe="adabn,wise", ceiling_train_steps=50)
    assert cfg.recipe == "adabn+wise" and cfg.ceiling_steps == 50
    run = project_config(cfg, "assft", 0, SSFTMode.NONE, "cpu")
    ceiling = project_config(cfg, "random", 0, SSFTMode.NONE, "cpu", recipe="paper")
    assert run.finetune.recipe == (Recipe.ADABN, Recipe.WISE) and ceiling.finetune.recipe == (Recipe.PAPER,)
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    with pytest.raises(AssftError, match="unknown recipe"):
        bench_config("recipes", recipe="magic")


def test_a_worker_ends_when_its_benchmark_process_is_gone() -> None:
    import subprocess
    import sys

    # A parent pid that is not ours stands for "the benchmark process died and we were re-parented".
    code = ("import time; from assft_core.bench.strategies import _exit_with_parent; "
            "_exit_with_parent(parent=-1, every_s=0.05); time.sleep(30); print('still running')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "still running" not in done.stdout
