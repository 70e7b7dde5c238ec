"""`assft bench strategies`: every strategy through the real loop with the oracle, same splits and
training, several seeds, plus ceiling and floor; resumable; result files and figures (METHOD.md §5).

Order of work: per pool, the reference project (`f_0` scored and evaluated once, shared by every
run), then per seed its runs and its ceiling, so a benchmark stopped early (`max_units`, Ctrl-C,
kill) has whole seeds to show. Every finished unit is stored at once (`runs.RunStore`); the result
files are rebuilt from the stored units at the end of every invocation, partial ones included
(their note says how much is done).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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
from assft_core.bench.report import (
    WrittenReport,
    build_result,
    load_note,
    machine_info,
    relabel,
    utc_stamp,
    write_report,
)
from assft_core.bench.runs import RunStore
from assft_core.bench.schema import Machine, ReferenceRecord, RoundRecord

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

    def attach(self, pool: str, work_dir: Path) -> None:
        """Use the pool's `f_0` work that `prepare` made in `work_dir` (a worker process), unchanged."""
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

    def attach(self, pool: str, work_dir: Path) -> None:
        from assft_core.bench.oracle import REFERENCE_PROJECT
        from assft_core.session.project import open_project

        self.references[pool] = open_project(work_dir / REFERENCE_PROJECT)

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
    workers: int = 1,
    executor_factory: Callable[[], Executor] | None = None,
    only: Sequence[str] = (),
) -> BenchmarkOutcome:
    """Run (or continue) the strategy benchmark and write its result files into `out_dir`.

    Args:
        cfg: the benchmark's settings (saved; a resume must use the same).
        out_dir: output folder (new or empty, or a benchmark to continue with `resume`).
        executor: computes the units (`LoopExecutor` in production); with `workers` > 1 it
            prepares each pool's shared `f_0` work and the floors, the workers do the rest.
        command: the argv recorded in the result files.
        device: the device recorded in the result files.
        resume: continue the benchmark in `out_dir`, skipping its finished units.
        max_units: compute at most this many new units (runs and ceilings), then write the
            (partial) results: a long benchmark in pieces.
        png: export the figures as PNG too.
        log: progress lines for people.
        should_stop: polled before each unit starts; True stops there (units already running
            finish) and writes the partial results (a cancelled bench job).
        on_progress: called with (fraction of units finished, message) after each unit.
        workers: units computed at once, each in its own process (runs are independent: every
            unit has its own project folder and result files). 1 computes them here, in order.
        executor_factory: a picklable callable that makes an executor in a worker process;
            needed when `workers` > 1.
        only: shell patterns of unit ids (e.g. `balanced/*/selective/seed-0`); when given, only
            matching units are computed now, the others stay to do (pieces of one benchmark on
            several machines, into the same folder).

    Returns:
        The units computed, skipped and remaining, and the files written.

    Raises:
        StateError: `out_dir` is not empty without `resume`, or holds another benchmark.
        ValueError: `workers` < 1, or `workers` > 1 without `executor_factory`.
    """
    if workers < 1 or (workers > 1 and executor_factory is None):
        raise ValueError(f"workers must be >= 1 and workers > 1 needs an executor_factory (workers={workers})")
    say = log or (lambda line: None)
    store = RunStore.open(out_dir, cfg, resume=resume)
    note = load_note()
    runs = plan_runs(cfg)
    invocation = {
        "started_utc": utc_stamp(), "finished_utc": None, "command": list(command),
        "machine": asdict(machine_info(device)), "load": note, "workers": workers, "units": [],
    }
    ledger = _Ledger(
        store, BenchmarkOutcome(), invocation, n_units=len(runs) + len(plan_references(cfg)),
        budget=max_units if max_units is not None else -1, should_stop=should_stop, on_progress=on_progress,
    )

    def wanted(unit_id: str) -> bool:
        return not only or any(fnmatch.fnmatchcase(unit_id, pattern) for pattern in only)

    # Pools first, in the main process: each pool's shared f_0 work, then its floor.
    pending_units: list[Unit] = []
    prepared: dict[str, Path] = {}
    for pool in cfg.pools:
        pending_units += _pool_units(cfg, pool, runs, executor, ledger, wanted, prepared, say)

    def describe(unit: Unit) -> str:
        if isinstance(unit.spec, RunSpec):
            return f"run {unit.spec.run_id} on {len(unit.subset)} pool cases"
        return f"ceiling {unit.spec.run_id}: all {len(unit.subset)} pool cases labelled, {cfg.ceiling_steps} steps"

    if workers == 1:
        for unit in pending_units:
            if not ledger.may_compute(unit.spec.run_id):
                continue
            say(describe(unit))
            say(compute_unit(executor, store, unit))
            ledger.finished(unit.spec.run_id)
    else:
        _compute_in_workers(
            pending_units, store, executor_factory, prepared, workers, ledger.may_compute, ledger.finished, describe,
            say,
        )
    outcome = ledger.outcome
    outcome.reports = write_results(cfg, store, runs, command=command, device=device, note=note, png=png,
                                    remaining=len(outcome.remaining))
    return outcome


@dataclass
class _Ledger:
    """One invocation's account of its units: computed, skipped and remaining (`outcome`), the
    units it may still compute (`budget`, -1 for no limit; 0 once `should_stop` said so), and its
    entry in the store's invocation log."""

    store: RunStore
    outcome: BenchmarkOutcome
    invocation: dict[str, Any]
    n_units: int
    budget: int
    should_stop: Callable[[], bool] | None
    on_progress: Callable[[float, str], None] | None

    def finished(self, unit_id: str) -> None:
        """Count a computed unit, log the invocation, report progress."""
        self.outcome.computed.append(unit_id)
        # Logged as each unit finishes, so a killed invocation still names its machine.
        self.invocation.update(units=list(self.outcome.computed), finished_utc=utc_stamp())
        self.store.log_invocation(self.invocation, replace_last=len(self.outcome.computed) > 1)
        if self.on_progress is not None:
            done = len(self.outcome.computed) + len(self.outcome.skipped)
            self.on_progress(done / self.n_units, f"{done}/{self.n_units} units: {unit_id} done")

    def may_compute(self, unit_id: str) -> bool:
        """Whether the unit may start now (spends one unit of the budget); else it stays to do."""
        if self.budget != 0 and self.should_stop is not None and self.should_stop():
            self.budget = 0
        if self.budget == 0:
            self.outcome.remaining.append(unit_id)
            return False
        self.budget -= 1
        return True


def _pool_units(
    cfg: StrategyBenchConfig,
    pool: str,
    runs: list[RunSpec],
    executor: Executor,
    ledger: _Ledger,
    wanted: Callable[[str], bool],
    prepared: dict[str, Path],
    say: Log,
) -> list[Unit]:
    """One pool's part of the plan: prepare its shared `f_0` work (into `prepared[pool]`) when a
    wanted unit of it is still to do, store its floor (a read of that work: no unit spent), and
    return its runs and ceilings still to compute, seed by seed (each seed's runs, then its
    ceiling: whole seeds first when stopped). Done units count as skipped, unwanted ones as
    remaining."""
    store, outcome = ledger.store, ledger.outcome
    pool_runs = [r for r in runs if r.pool == pool]
    refs = [r for r in plan_references(cfg) if r.pool == pool]
    pending = [r for r in pool_runs if not store.is_done(r)] + [r for r in refs if store.reference(r) is None]
    if any(wanted(r.run_id) for r in pending) and ledger.budget != 0:
        say(f"{pool} pool: f_0 scoring and evaluation (shared by every run)")
        prepared[pool] = store.out_dir / "work" / pool / "f0"
        executor.prepare(pool, prepared[pool])
    for ref in (r for r in refs if r.kind == "floor"):
        if store.reference(ref) is not None:
            outcome.skipped.append(ref.run_id)
        elif pool in prepared:
            store.write_reference(ref, executor.floor(pool))
            ledger.finished(ref.run_id)
        else:
            outcome.remaining.append(ref.run_id)
    units: list[Unit] = []
    for seed in cfg.seeds:
        subset = pool_subset(executor.pool_ids(pool), cfg.subset_fraction, seed, pool)
        seed_units: list[RunSpec | ReferenceSpec] = [r for r in pool_runs if r.seed == seed]
        seed_units += [r for r in refs if r.kind == "ceiling" and r.seed == seed]
        for spec in seed_units:
            done = store.is_done(spec) if isinstance(spec, RunSpec) else store.reference(spec) is not None
            if done:
                outcome.skipped.append(spec.run_id)
            elif wanted(spec.run_id):
                units.append(Unit(spec, subset))
            else:
                outcome.remaining.append(spec.run_id)
    return units


@dataclass(frozen=True)
class Unit:
    """One unit of work: a run or a ceiling, on its seed's pool subset."""

    spec: RunSpec | ReferenceSpec
    subset: list[str]


def compute_unit(executor: Executor, store: RunStore, unit: Unit) -> str:
    """Compute one unit with `executor` and store its result; returns a line for people."""
    start = time.perf_counter()
    spec = unit.spec
    if isinstance(spec, RunSpec):
        records = executor.run(spec, unit.subset, store.work_dir(spec), lambda rec: store.write_round(spec, rec))
        store.finish(spec, records)
        scores = ", ".join(f"{r.labelled_count} labels {r.mean_dice:.3f}" for r in records)
    else:
        record = executor.ceiling(spec, unit.subset, store.work_dir(spec))
        store.write_reference(spec, record)
        scores = f"{record.labelled_count} labels {record.mean_dice:.3f}"
    return f"{spec.run_id} done in {time.perf_counter() - start:.0f} s: {scores}"


# The executor of a worker process, made once per process by `_start_worker`.
_WORKER_EXECUTOR: Executor | None = None


def _exit_with_parent(parent: int, every_s: float = 2.0) -> None:
    """End this worker when the benchmark process that started it is gone (killed, not stopped):
    an orphaned worker would go on training for minutes and write into the output folder."""
    import os
    import threading

    def watch() -> None:
        while True:
            time.sleep(every_s)
            if os.getppid() != parent:
                os._exit(1)  # the parent is gone; its results are already written per unit

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start_worker(factory: Callable[[], Executor], prepared: dict[str, Path], threads: int, parent: int) -> None:
    global _WORKER_EXECUTOR
    import torch

    _exit_with_parent(parent)

    # Workers share the machine's cores: without this each would start one thread per core.
    torch.set_num_threads(threads)
    _WORKER_EXECUTOR = factory()
    for pool, work_dir in prepared.items():
        _WORKER_EXECUTOR.attach(pool, work_dir)


def _worker_unit(store_dir: Path, unit: Unit) -> str:
    assert _WORKER_EXECUTOR is not None, "worker started without _start_worker"
    return compute_unit(_WORKER_EXECUTOR, RunStore(store_dir), unit)


def _compute_in_workers(
    units: list[Unit],
    store: RunStore,
    factory: Callable[[], Executor] | None,
    prepared: dict[str, Path],
    workers: int,
    may_compute: Callable[[str], bool],
    finished: Callable[[str], None],
    describe: Callable[[Unit], str],
    say: Log,
) -> None:
    """Compute `units` in `workers` processes, at most `workers` at a time, in order.

    A unit is handed out only when a worker is free, so `max_units` and `should_stop` act as in
    the sequential loop. A failed unit stops the hand-out; the units running finish, then the
    error is raised.
    """
    import multiprocessing
    import os
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: a fork of a process holding torch (and maybe CUDA) state is not safe.
    context = multiprocessing.get_context("spawn")
    queue = list(units)
    running: dict[Future[str], Unit] = {}
    error: BaseException | None = None
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(factory, prepared, threads, os.getpid())) as pool:
        while queue or running:
            while queue and error is None and len(running) < workers:
                unit = queue.pop(0)
                if may_compute(unit.spec.run_id):
                    say(describe(unit))
                    running[pool.submit(_worker_unit, store.out_dir, unit)] = unit
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                unit = running.pop(future)
                try:
                    say(future.result())
                except BaseException as exc:  # stop handing out; re-raised once the others finish
                    error = error or exc
                    continue
                finished(unit.spec.run_id)
            if error is not None:
                queue.clear()
    if error is not None:
        raise error


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
    # The machine and command that computed the units (the invocation that computed the most, the
    # latest on a tie), not the ones that merely rebuilt these files; every computing invocation
    # is named in the note when there were several.
    computing = store.invocations()
    main = max(reversed(computing), key=lambda c: len(c["units"])) if computing else None
    machine = Machine(**main["machine"]) if main else machine_info(device)
    if main:
        command, note = main["command"], main["load"]
        if len(computing) > 1:
            note += "; units computed in {} invocations: {}".format(len(computing), "; ".join(
                f"{len(c['units'])} on {c['machine']['device']} ({c['machine']['cpu_count']} CPUs) at {c['finished_utc']}"
                for c in computing))
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
