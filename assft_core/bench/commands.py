"""`assft bench ...`: benchmark sub-commands.

Each benchmark adds itself to `BENCH_COMMANDS` (a function taking the `bench` sub-parsers); the
cost benchmark's phases live in `COST_PHASES` (phase name -> handler), so a new phase or a new
benchmark is one entry, not a new parser tree.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

from assft_core.config import InferenceConfig, QueryConfig
from assft_core.data.records import PreprocessedCase, Split
from assft_core.errors import AssftError, DataError


def _cost_scoring(args: argparse.Namespace) -> int:
    from assft_core.bench.cost import measure_scoring_cost, synthetic_cases, tiny_model, write_cost

    if args.model:
        from assft_core.models.loaded import load_model

        model = load_model(Path(args.model), device=args.device)
    else:
        model = tiny_model(seed=args.seed, device=args.device)
    infer_cfg = InferenceConfig(roi_size=tuple(model.card.roi_size), n_tta=args.n_tta, device=args.device)
    if args.data:
        cases: Iterator[PreprocessedCase] = _dataset_cases(Path(args.data), model, args.cases)
    else:
        cases = synthetic_cases(args.cases, tuple(args.shape), in_channels=model.card.in_channels, seed=args.seed)
    result = measure_scoring_cost(model, cases, infer_cfg, QueryConfig(), repeats=args.repeats)
    verdict = "meets" if result.meets_goal else "MISSES"
    print(
        f"scoring pass + metrics: {result.scoring_s:.3f} s/case, plain inference: {result.plain_s:.3f} s/case, "
        f"ratio {result.ratio:.2f} (hooks alone {result.pass_ratio:.2f}; {verdict} the ≤ {result.goal_ratio} goal) "
        f"over {result.n_cases} case(s) {result.shape} × {result.repeats} on {result.device}"
    )
    if args.out:
        print(f"written: {write_cost(result, args.out)}")
    return 0


def _dataset_cases(root: Path, model, limit: int) -> Iterator[PreprocessedCase]:  # noqa: ANN001
    from assft_core.data.importers import import_dataset
    from assft_core.data.preprocess import preprocess_case

    manifest = import_dataset(root)
    pool = [c for c in manifest.cases if c.split is Split.POOL][:limit]
    if not pool:
        raise DataError(f"{root}: no pool cases to measure on; check the dataset folder (and its cases.csv split).")
    for record in pool:
        yield preprocess_case(record, model.card.preprocess)


# phase name -> handler(args) returning an exit code; add a phase here.
COST_PHASES: dict[str, Callable[[argparse.Namespace], int]] = {"scoring": _cost_scoring}


def _run_cost(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).exists() and not args.force:
        raise AssftError(f"{args.out} exists; choose another --out file or pass --force to replace it.")
    return COST_PHASES[args.phase](args)


def _add_cost(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cost",
        help="time a phase against plain inference (scoring: goal ≤ 1.3×)",
        description="Median per-case time of a phase against plain sliding-window inference of the same model "
        "over the same cases. Without --model/--data: a tiny random-weights UNet and synthetic volumes.",
    )
    p.add_argument("--phase", choices=sorted(COST_PHASES), default="scoring", help="which phase to time")
    p.add_argument("--model", metavar="DIR", help="model folder (holding model_card.json); default: tiny random UNet")
    p.add_argument("--data", metavar="DIR", help="dataset folder; default: synthetic volumes")
    p.add_argument("--cases", type=_positive, default=4, help="number of cases (default 4)")
    p.add_argument("--shape", type=_positive, nargs=3, default=[48, 48, 48], metavar=("D", "H", "W"),
                   help="synthetic volume size in voxels (default 48 48 48)")
    p.add_argument("--repeats", type=_positive, default=3, help="timings per case and path (default 3)")
    p.add_argument("--n-tta", type=_positive, default=1, help="flip TTA passes (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i] (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic model and cases")
    p.add_argument("--out", metavar="FILE", help="write the result as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_run_cost)


# Benchmarks of the `bench` group; add a benchmark here.
BENCH_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_cost,)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `assft bench` and its benchmarks to the `assft` parser."""
    bench = subparsers.add_parser(
        "bench",
        help="benchmarks: cost of phases, strategies",
        description="Benchmarks: the cost of a phase against plain inference, and strategy comparisons.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    for add in BENCH_COMMANDS:
        add(sub)
    bench.set_defaults(func=lambda _args: bench.print_help() or 2)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value
