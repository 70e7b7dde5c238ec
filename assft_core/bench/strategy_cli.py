"""From `assft bench strategies` arguments (or a bench job's parameters) to a running benchmark:
the config with its overrides, the datasets (the demo corpus by default), the model, the device."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from assft_core.bench.config import StrategyBenchConfig, preset
from assft_core.bench.runs import RunStore
from assft_core.bench.strategies import BenchmarkOutcome, LoopExecutor, run_strategy_benchmark
from assft_core.data.demo.locations import demo_corpus_dir
from assft_core.errors import AssftError

Log = Callable[[str], None]


def bench_config(name: str, *, ssft: bool = False, **overrides: object) -> StrategyBenchConfig:
    """The preset `name` with the command line's overrides.

    Args:
        name: preset name.
        ssft: add the SSFT ablation over the five modes (`--ssft`).
        overrides: `StrategyBenchConfig` fields to change (strategies, seeds, pools,
            supervised_steps, ssft_steps, ssft_mode, ...); None leaves the preset's value.

    Raises:
        AssftError: for an unknown preset, field or strategy name, or an invalid value.
    """
    from assft_core.query.strategies import list_strategies

    cfg = preset(name)
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(StrategyBenchConfig)}
    if set(changes) - fields:
        raise AssftError(f"unknown benchmark setting(s) {sorted(set(changes) - fields)}; known: {sorted(fields)}.")
    known = list_strategies()
    unknown = [s for s in changes.get("strategies", ()) if s not in known]  # type: ignore[attr-defined]
    if unknown:
        raise AssftError(f"unknown strategy name(s) {unknown}; registered: {', '.join(known)}.")
    cfg = dataclasses.replace(cfg, **changes) if changes else cfg
    return cfg.with_ablation() if ssft else cfg


def parse_datasets(items: Sequence[str]) -> dict[str, Path]:
    """`POOL=DIR` items as pool -> folder.

    Raises:
        AssftError: for an item without '=', or an unknown pool name.
    """
    out: dict[str, Path] = {}
    for item in items:
        pool, sep, folder = item.partition("=")
        if not sep or pool not in ("balanced", "unbalanced") or not folder:
            raise AssftError(f"--dataset {item!r}: write POOL=DIR with POOL 'balanced' or 'unbalanced'.")
        out[pool] = Path(folder)
    return out


def demo_datasets(cfg: StrategyBenchConfig, given: Mapping[str, Path], log: Log | None = None) -> dict[str, Path]:
    """The datasets of `cfg`'s pools: the given ones, else the demo corpus of that layout and
    `cfg.corpus_size`, built once into `demo_data/<layout>-<size>` (reused when present)."""
    from assft_core.data.demo.builder import build_demo_corpus

    out = dict(given)
    for pool in cfg.pools:
        if pool not in out:
            folder = demo_corpus_dir(pool, cfg.corpus_size)
            if log is not None:
                log(f"demo corpus ({pool}, {cfg.corpus_size}) in {folder}")
            out[pool] = build_demo_corpus(folder, layout=pool, seed=0, size=cfg.corpus_size)
    return out


def run_benchmark(
    cfg: StrategyBenchConfig,
    out: Path,
    *,
    datasets: Mapping[str, Path],
    model: Path | None,
    device: str,
    command: Sequence[str],
    resume: bool,
    max_units: int | None = None,
    png: bool = True,
    log: Log | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    workers: int = 1,
    only: Sequence[str] = (),
) -> BenchmarkOutcome:
    """Run the benchmark with the loop executor on the demo model unless `model` is given.

    `workers` > 1 computes that many runs at once, each in its own process (a many-core machine,
    or one GPU shared by several runs); the pools' shared `f_0` work is made first, here.

    Raises:
        ModelError: when no model is given and the demo model is missing.
        DataError / StateError: from the datasets, the output folder or a failed job.
    """
    from assft_core.models.inference import resolve_device
    from assft_core.models.pretrain import demo_model_dir

    RunStore.check(out, cfg, resume=resume)  # before building corpora or loading models
    model_dir = Path(model) if model else demo_model_dir()
    resolved = str(resolve_device(device))
    built = demo_datasets(cfg, datasets, log)
    executor = LoopExecutor(cfg, built, model_dir, resolved, log=log)
    # Workers make their own executor (no log: their lines would interleave; the main process
    # reports each finished unit).
    factory = functools.partial(LoopExecutor, cfg, built, model_dir, resolved)
    return run_strategy_benchmark(
        cfg, out, executor, command=command, device=resolved, resume=resume, max_units=max_units, png=png,
        log=log, should_stop=should_stop, on_progress=on_progress, workers=workers, executor_factory=factory,
        only=only,
    )


def _deadline(minutes: float | None) -> Callable[[], bool] | None:
    """A `should_stop` that turns True `minutes` from now (None: never stop)."""
    if minutes is None:
        return None
    end = time.monotonic() + 60.0 * minutes
    return lambda: time.monotonic() > end


def run_from_args(args: argparse.Namespace) -> int:
    """The body of `assft bench strategies`; returns the exit code."""
    from assft_core.bench.report import command_line

    cfg = bench_config(
        args.config, ssft=args.ssft, strategies=args.strategies, seeds=args.seeds, pools=args.pools,
        supervised_steps=args.supervised_steps, ssft_steps=args.ssft_steps, ssft_mode=args.ssft_mode,
        rounds=args.rounds, ceiling=False if args.no_ceiling else None, ablation_modes=() if args.no_ablation else None,
        recipe=args.recipe, ceiling_train_steps=args.ceiling_steps,
    )
    out = Path(args.out or f"bench-{cfg.name}")
    outcome = run_benchmark(
        cfg, out, datasets=parse_datasets(args.dataset), model=Path(args.model) if args.model else None,
        device=args.device, command=command_line(), resume=args.resume, max_units=args.max_units,
        png=not args.no_png, log=lambda line: print(line, flush=True), workers=args.workers,
        should_stop=_deadline(args.stop_after), only=args.only or (),
    )
    print(f"{len(outcome.computed)} unit(s) computed, {len(outcome.skipped)} already done, {len(outcome.remaining)} left")
    for stem, written in outcome.reports.items():
        print(f"{stem}: " + ", ".join(str(p) for p in written.files))
        if written.png_error:
            print(f"{stem}: PNG export failed ({written.png_error}); the HTML figure was written")
    if outcome.remaining:
        print(f"continue: the same command with --out {out} --resume")
    return 0
