"""`assft bench strategies`: every strategy through the real loop with the oracle, same splits and
training, several seeds, plus ceiling and floor; resumable; result files and figures (METHOD.md §5).

Order of work: per pool, the reference project (`f_0` scored and evaluated once, shared by every
run), then per seed its runs and its ceiling, so a benchmark stopped early (`max_units`, Ctrl-C,
kill) has whole seeds to show. Every finished unit is stored at once (`runs.RunStore`); the result
files are rebuilt from the stored units at the end of every invocation, partial ones included
(their note says how much is done).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from assft_core.bench.config import StrategyBenchConfig
from assft_core.bench.plan import (
    ReferenceSpec,
    RunSpec,
    ablation_label,
    ablation_runs,
    comparison_runs,
    plan_references,
    plan_runs,
    pool_subset,
)
from assft_core.bench.report import WrittenReport, build_result, load_note, machine_info, relabel, write_report
from assft_core.bench.runs import RunStore
from assft_core.bench.schema import ReferenceRecord, RoundRecord

if TYPE_CHECKING:
    from assft_core.session.project import Project

Log = Callable[[str], None]
COMPARISON_STEM = "strategies"
ABLATION_STEM = "ssft_ablation"


class Executor(Protocol):
    """What computes the benchmark's units (the loop in production, a stand-in in tests)."""

    def pool_ids(self, pool: str) -> list[str]:
        """U of the pool: every pool case id."""
        ...

    def prepare(self, pool: str, work_dir: Path) -> None:
        """Make the pool's shared `f_0` work (scores, evaluation) ready in `work_dir`."""
        ...

    def floor(self, pool: str) -> ReferenceRecord:
        """`f_0` as it is on the pool's test split."""
        ...

    def run(
        self, spec: RunSpec, subset: list[str], work_dir: Path, on_record: Callable[[RoundRecord], None]
    ) -> list[RoundRecord]:
        """One strategy run on `subset`; calls `on_record` as each round's record completes."""
        ...

    def ceiling(self, spec: ReferenceSpec, subset: list[str], work_dir: Path) -> ReferenceRecord:
        """The ceiling of one seed: all of `subset` labelled."""
        ...


class LoopExecutor:
    """The production executor: oracle projects driven by `session.loop.run_rounds` (`oracle`).

    Args:
        cfg: the benchmark's settings.
        datasets: pool name -> nnU-Net v2 dataset folder.
        model_dir: `f_0`'s model folder.
        device: "auto", "cpu" or "cuda[:i]".
        log: progress lines for people.

    Raises:
        DataError: when a pool's dataset cannot host a benchmark (`views.read_benchmark_dataset`).
    """

    def __init__(
        self, cfg: StrategyBenchConfig, datasets: Mapping[str, Path], model_dir: Path, device: str, log: Log | None = None
    ) -> None:
        from assft_core.bench.oracle import PoolInputs
        from assft_core.bench.views import read_benchmark_dataset

        self.cfg = cfg
        self.log = log
        self.inputs = {
            pool: PoolInputs(pool, read_benchmark_dataset(Path(datasets[pool])), Path(model_dir), device)
            for pool in cfg.pools
        }
        self.references: dict[str, Project] = {}

    def pool_ids(self, pool: str) -> list[str]:
        return self.inputs[pool].pool_ids

    def prepare(self, pool: str, work_dir: Path) -> None:
        from assft_core.bench.oracle import reference_project

        self.references[pool] = reference_project(self.inputs[pool], work_dir, self.cfg, log=self.log)

    def floor(self, pool: str) -> ReferenceRecord:
        from assft_core.bench.oracle import floor_record

        return floor_record(self.references[pool], pool)

    def run(
        self, spec: RunSpec, subset: list[str], work_dir: Path, on_record: Callable[[RoundRecord], None]
    ) -> list[RoundRecord]:
        from assft_core.bench.oracle import run_strategy

        return run_strategy(
            spec, self.cfg, self.inputs[spec.pool], subset, work_dir, self.references[spec.pool],
            on_record=on_record, log=self.log,
        )

    def ceiling(self, spec: ReferenceSpec, subset: list[str], work_dir: Path) -> ReferenceRecord:
        from assft_core.bench.oracle import run_ceiling

        return run_ceiling(
            spec, self.cfg, self.inputs[spec.pool], subset, work_dir, self.references[spec.pool],
            log=self.log,
        )


@dataclass
class BenchmarkOutcome:
    """What one invocation did.

    Attributes:
        computed: ids of the units computed now.
        skipped: ids of the units found finished (a resume).
        remaining: ids of the units still to run (stopped by `max_units`).
        reports: result-file stem -> the files written.
    """

    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    reports: dict[str, WrittenReport] = field(default_factory=dict)


def run_strategy_benchmark(
    cfg: StrategyBenchConfig,
    out_dir: Path,
    executor: Executor,
    *,
    command: Sequence[str],
    device: str,
    resume: bool = False,
    max_units: int | None = None,
    png: bool = True,
    log: Log | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> BenchmarkOutcome:
    """Run (or continue) the strategy benchmark and write its result files into `out_dir`.

    Args:
        cfg: the benchmark's settings (saved; a resume must use the same).
        out_dir: output folder (new or empty, or a benchmark to continue with `resume`).
        executor: computes the units (`LoopExecutor` in production).
        command: the argv recorded in the result files.
        device: the device recorded in the result files.
        resume: continue the benchmark in `out_dir`, skipping its finished units.
        max_units: compute at most this many new units (runs and ceilings), then write the
            (partial) results: a long benchmark in pieces.
        png: export the figures as PNG too.
        log: progress lines for people.
        should_stop: polled before each unit; True stops there and writes the partial results
            (a cancelled bench job).
        on_progress: called with (fraction of units finished, message) after each unit.

    Returns:
        The units computed, skipped and remaining, and the files written.

    Raises:
        StateError: `out_dir` is not empty without `resume`, or holds another benchmark.
    """
    say = log or (lambda line: None)
    store = RunStore.open(out_dir, cfg, resume=resume)
    note = load_note()
    runs = plan_runs(cfg)
    outcome = BenchmarkOutcome()
    budget = [max_units if max_units is not None else -1]
    n_units = len(runs) + len(plan_references(cfg))

    def finished(unit_id: str) -> None:
        outcome.computed.append(unit_id)
        if on_progress is not None:
            done = len(outcome.computed) + len(outcome.skipped)
            on_progress(done / n_units, f"{done}/{n_units} units: {unit_id} done")

    def may_compute(unit_id: str) -> bool:
        if budget[0] != 0 and should_stop is not None and should_stop():
            budget[0] = 0
        if budget[0] == 0:
            outcome.remaining.append(unit_id)
            return False
        budget[0] -= 1
        return True

    for pool in cfg.pools:
        pool_runs = [r for r in runs if r.pool == pool]
        refs = [r for r in plan_references(cfg) if r.pool == pool]
        pending = [r for r in pool_runs if not store.is_done(r)] + [r for r in refs if store.reference(r) is None]
        if pending and budget[0] != 0:
            say(f"{pool} pool: f_0 scoring and evaluation (shared by every run)")
            executor.prepare(pool, store.out_dir / "work" / pool / "f0")
        for ref in (r for r in refs if r.kind == "floor"):
            if store.reference(ref) is not None:
                outcome.skipped.append(ref.run_id)
            elif ref in pending and budget[0] != 0:  # the floor is a read of prepared work: no unit spent
                store.write_reference(ref, executor.floor(pool))
                finished(ref.run_id)
            else:
                outcome.remaining.append(ref.run_id)
        for seed in cfg.seeds:
            subset = pool_subset(executor.pool_ids(pool), cfg.subset_fraction, seed, pool)
            for spec in (r for r in pool_runs if r.seed == seed):
                if store.is_done(spec):
                    outcome.skipped.append(spec.run_id)
                    continue
                if not may_compute(spec.run_id):
                    continue
                say(f"run {spec.run_id} on {len(subset)} pool cases")
                start = time.perf_counter()
                records = executor.run(spec, subset, store.work_dir(spec), lambda rec, s=spec: store.write_round(s, rec))
                store.finish(spec, records)
                finished(spec.run_id)
                say(f"run {spec.run_id} done in {time.perf_counter() - start:.0f} s: "
                    + ", ".join(f"{r.labelled_count} labels {r.mean_dice:.3f}" for r in records))
            for ref in (r for r in refs if r.kind == "ceiling" and r.seed == seed):
                if store.reference(ref) is not None:
                    outcome.skipped.append(ref.run_id)
                    continue
                if not may_compute(ref.run_id):
                    continue
                say(f"ceiling {ref.run_id}: all {len(subset)} pool cases labelled, {cfg.ceiling_steps} steps")
                store.write_reference(ref, executor.ceiling(ref, subset, store.work_dir(ref)))
                finished(ref.run_id)
    outcome.reports = write_results(cfg, store, runs, command=command, device=device, note=note, png=png,
                                    remaining=len(outcome.remaining))
    return outcome


def write_results(
    cfg: StrategyBenchConfig,
    store: RunStore,
    runs: Sequence[RunSpec],
    *,
    command: Sequence[str],
    device: str,
    note: str,
    png: bool,
    remaining: int,
) -> dict[str, WrittenReport]:
    """Rebuild the comparison's (and the ablation's) result files from the stored units."""
    refs = [rec for spec in plan_references(cfg) if (rec := store.reference(spec)) is not None]
    done = [r for r in runs if store.is_done(r)]
    status = f"complete: {len(done)} of {len(runs)} runs" if not remaining else (
        f"PARTIAL: {len(done)} of {len(runs)} runs done, {remaining} unit(s) still to run (continue with --resume)"
    )
    machine = machine_info(device)
    reports: dict[str, WrittenReport] = {}
    comparison = [rec for spec in comparison_runs(cfg, done) for rec in store.records(spec)]
    if comparison or refs:
        result = build_result(cfg, comparison, refs, command=command, machine=machine, note=f"{status}; {note}")
        reports[COMPARISON_STEM] = write_report(result, store.out_dir, COMPARISON_STEM, png=png)
    ablation = [rec for spec in ablation_runs(cfg, done) for rec in relabel(store.records(spec), ablation_label(spec))]
    if ablation:
        result = build_result(
            cfg, ablation, refs, command=command, machine=machine,
            note=f"SSFT ablation at strategy {cfg.ablation_strategy}; {status}; {note}",
        )
        reports[ABLATION_STEM] = write_report(result, store.out_dir, ABLATION_STEM, png=png)
    return reports
