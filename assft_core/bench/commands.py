"""`assft bench ...`: benchmark sub-commands.

Each benchmark adds itself to `BENCH_COMMANDS` (a function taking the `bench` sub-parsers); the
cost benchmark's phases live in `COST_PHASES` (phase name -> handler), so a new phase or a new
benchmark is one entry, not a new parser tree.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assft_core.config import SSFTMode
from assft_core.errors import AssftError


def _cost_report(args: argparse.Namespace) -> int:
    """`--phase all` or one phase: one JSON report (same format for every choice)."""
    from assft_core.bench.cost_report import measure_phases, write_cost_report

    phases = MEASURED_PHASES if args.phase == "all" else (args.phase,)
    report = measure_phases(args, phases)
    for name, cost in report["phases"].items():
        ratio = f", {cost['ratio_to_inference']:.2f}× plain inference" if cost.get("ratio_to_inference") else ""
        details = cost.get("details") or {}
        if "goal_ratio" in details:
            verdict = "meets" if details["meets_goal"] else "MISSES"
            ratio += f" ({verdict} the ≤ {details['goal_ratio']}× goal; hooks alone {details['pass_ratio']:.2f}×)"
            if "paired_ratio" in details:
                ratio += (f"; paired with the plain timing beside each: {details['paired_ratio']:.2f}× "
                          f"(hooks {details['paired_pass_ratio']:.2f}×)")
            timings = details["repeats"] * details["n_cases"]
            if timings < 3:  # a verdict from one or two timings is noise
                ratio += f"; only {timings} timing(s): use --repeats 3 or more cases before trusting the verdict"
        memory = "n/a" if cost["peak_mib"] is None else f"{cost['peak_mib']:.0f} MiB"
        print(f"{name:<11} {cost['median_s']:.3f} s per {cost['unit']}{ratio}; peak memory +{memory}")
    for name, reason in report["skipped"].items():
        print(f"{name:<11} skipped: {reason}")
    if args.out:
        print(f"written: {write_cost_report(report, Path(args.out))}")
    return 0


# Phases measured by `--phase all`, in this order (inference first: the unit of every ratio).
MEASURED_PHASES = ("inference", "scoring", "train_step", "umap", "pages")
# phase name -> handler(args) returning an exit code; every choice writes the same multi-phase report.
COST_PHASES: dict[str, Callable[[argparse.Namespace], int]] = {
    name: _cost_report for name in ("all", *MEASURED_PHASES)
}


def _run_cost(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).exists() and not args.force:
        raise AssftError(f"{args.out} exists; choose another --out file or pass --force to replace it.")
    if args.clock == "cpu":
        from assft_core.models.inference import resolve_device

        if resolve_device(args.device).type != "cpu":
            raise AssftError("--clock cpu times CPU work only; add --device cpu, or use the wall clock on a GPU.")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        return COST_PHASES[args.phase](args)
    finally:
        torch.set_num_threads(threads)  # an in-process caller keeps its own setting


def _add_cost(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cost",
        help="time and memory of each phase against plain inference (scoring goal ≤ 1.3×)",
        description="Median time and peak memory of plain inference, the scoring pass, a fine-tuning step, UMAP "
        "and the dashboard's page loads; ratios to plain inference of the same model over the same cases. "
        "Without --model/--data: a tiny random-weights UNet and synthetic volumes.",
    )
    p.add_argument("--phase", choices=sorted(COST_PHASES), default="scoring", help="which phase(s) to measure")
    p.add_argument("--model", metavar="DIR", help="model folder (holding model_card.json); default: tiny random UNet")
    p.add_argument("--data", metavar="DIR", help="dataset folder; default: synthetic volumes")
    p.add_argument("--cases", type=_positive, default=4, help="number of cases (default 4)")
    p.add_argument("--shape", type=_positive, nargs=3, default=[48, 48, 48], metavar=("D", "H", "W"),
                   help="synthetic volume size in voxels (default 48 48 48)")
    p.add_argument("--repeats", type=_positive, default=3, help="timings per case and path (default 3)")
    p.add_argument("--n-tta", type=_positive, default=1, help="flip TTA passes (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i] (default auto)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="inference and scoring timed on the wall clock (default) or on this process's CPU time, "
                   "which other jobs on a shared machine do not move (CPU devices only; pair with --threads 1)")
    p.add_argument("--threads", type=_positive, help="torch CPU threads (default: torch's own)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic model and cases")
    p.add_argument("--steps", type=_positive, default=5, help="train_step: timed optimiser steps (default 5)")
    p.add_argument("--batch-size", type=_positive, default=2, help="train_step: patches per step (default 2)")
    p.add_argument("--patch", type=_positive, nargs=3, metavar=("D", "H", "W"),
                   help="train_step: patch size (default: the model's ROI, capped by the case size)")
    p.add_argument("--umap-points", type=_positive, default=200, help="umap: embedded cases (default 200)")
    p.add_argument("--umap-dim", type=_positive, default=128, help="umap: embedding size (default 128)")
    p.add_argument("--project", metavar="DIR", help="pages: a scored project whose pages are loaded")
    p.add_argument("--page-repeats", type=_positive, default=2, help="pages: loads per page (default 2)")
    p.add_argument("--out", metavar="FILE", help="write the result as JSON")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_run_cost)


def _run_strategies(args: argparse.Namespace) -> int:
    from assft_core.bench.strategy_cli import run_from_args

    return run_from_args(args)


def _add_strategies(sub: argparse._SubParsersAction) -> None:
    from assft_core.bench.config import PRESETS

    p = sub.add_parser(
        "strategies",
        help="label efficiency of query strategies through the real loop with the oracle (resumable)",
        description="Runs every strategy through the headless loop with the ground-truth oracle on the same splits "
        "and training, over several seeds (each drawing 80% of the pool), plus the full-supervision ceiling and "
        "the f_0 floor. Writes <out>/strategies.json (+ .csv, _summary.csv, _curves.html/.png). Presets: "
        + "; ".join(f"{name}: {len(c.strategies)} strategies × {len(c.seeds)} seeds × {len(c.pools)} pool(s), "
                     f"{c.rounds} rounds × {c.budget}" for name, c in PRESETS.items()),
    )
    p.add_argument("--config", choices=sorted(PRESETS), default="default", help="preset (default: default)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: bench-<config>)")
    p.add_argument("--resume", action="store_true", help="continue the benchmark in --out, skipping finished runs")
    p.add_argument("--ssft", action="store_true", help="add the SSFT ablation over the five modes at strategy assft")
    p.add_argument("--strategies", nargs="+", metavar="NAME", help="override the preset's strategies")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="override the preset's seeds")
    p.add_argument("--pools", nargs="+", choices=["balanced", "unbalanced"], help="override the preset's pools")
    p.add_argument("--supervised-steps", type=_positive, metavar="S", help="override S, supervised steps a round")
    p.add_argument("--ssft-steps", type=_non_negative, metavar="S_U", help="override S_u, SSFT steps a round")
    p.add_argument("--ssft-mode", choices=[m.value for m in SSFTMode],
                   help="override the comparison's SSFT mode (e.g. none with --supervised-steps S+S_u: a step-matched "
                   "control for the SSFT ablation)")
    p.add_argument("--rounds", type=_positive, metavar="T", help="override T, query rounds a run")
    p.add_argument("--no-ceiling", action="store_true", help="skip the full-supervision ceiling runs")
    p.add_argument("--no-ablation", action="store_true", help="skip the preset's SSFT ablation runs")
    p.add_argument("--dataset", action="append", default=[], metavar="POOL=DIR",
                   help="nnU-Net v2 dataset of a pool (default: the demo corpus, built once into "
                   "demo_data/<pool>-<size>)")
    p.add_argument("--model", metavar="DIR", help="f_0's model folder (default: the shipped demo model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i] (default auto)")
    p.add_argument("--max-units", type=_non_negative, metavar="N",
                   help="compute at most N runs/ceilings now, then write partial results (continue with --resume; "
                   "0 only rebuilds the result files)")
    p.add_argument("--no-png", action="store_true", help="skip the PNG export of the figures")
    p.add_argument("--stop-after", type=float, metavar="MIN",
                   help="start no new run after MIN minutes (running ones finish), then write partial results: "
                   "fits a benchmark into a job's time limit (continue with --resume)")
    p.add_argument("--only", nargs="+", metavar="PATTERN",
                   help="compute only the runs whose id matches a shell pattern, e.g. 'balanced/*/selective/seed-0' "
                   "(ids: POOL/STRATEGY/SSFT_MODE/seed-N, POOL/ceiling/seed-N); the rest stay to do")
    p.add_argument("--recipe", metavar="NAME[+NAME]",
                   help="retention recipe of every strategy run, e.g. adabn+wise (default: the preset's; "
                   "paper = as published; docs/METHOD.md §6); the ceiling always trains with paper")
    p.add_argument("--ceiling-steps", type=_positive, metavar="N",
                   help="steps of the full-supervision ceiling (default: as many as a whole run)")
    p.add_argument("--workers", type=_positive, default=1, metavar="N",
                   help="runs computed at once, each in its own process (default 1; e.g. 8-16 on a GPU machine)")
    p.set_defaults(func=_run_strategies)


def _run_diagnose(args: argparse.Namespace) -> int:
    from assft_core.bench.diagnosis import DEFAULT_VARIANTS, run_diagnosis
    from assft_core.data.demo.builder import build_demo_corpus
    from assft_core.bench.strategy_cli import demo_corpus_dir
    from assft_core.models.pretrain import demo_model_dir

    if args.list:
        for v in DEFAULT_VARIANTS:
            print(f"{v.name:<18} steps {v.steps:<4} train {dict(v.train) or '-'}  finetune {dict(v.finetune) or '-'}")
        return 0
    dataset = Path(args.dataset) if args.dataset else build_demo_corpus(
        demo_corpus_dir("unbalanced", "full"), layout="unbalanced", seed=0, size="full"
    )
    model = Path(args.model) if args.model else demo_model_dir()
    results = run_diagnosis(
        dataset, model, args.picks, Path(args.out), only=args.only or (), seed=args.seed, device=args.device,
        log=print,
    )
    print(f"{len(results)} variant(s) in {args.out}; table: {Path(args.out) / 'summary.md'}")
    return 0


def _add_diagnose(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="controlled one-round runs on fixed picks: what makes a few-label round hurt other sites",
        description="Trains one round on the same labelled picks for each variant (BatchNorm mode, learning rate, "
        "steps, retention recipe; `--list` shows them) and evaluates each on the test split per site against f_0. "
        "One JSON per variant in --out (a rerun skips finished ones), and summary.md.",
    )
    p.add_argument("--picks", nargs="+", default=["B_pool_007", "D_pool_000"], metavar="CASE",
                   help="pool case ids labelled in every variant (default: assft's first picks on the demo pool)")
    p.add_argument("--out", default="bench-diagnose", metavar="DIR", help="result folder (default bench-diagnose)")
    p.add_argument("--only", nargs="+", metavar="PATTERN", help="compute only the variants matching a shell pattern")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--dataset", metavar="DIR", help="nnU-Net v2 dataset (default: the unbalanced demo corpus)")
    p.add_argument("--model", metavar="DIR", help="f_0's model folder (default: the shipped demo model)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:i] (default auto)")
    p.add_argument("--list", action="store_true", help="list the variants and stop")
    p.set_defaults(func=_run_diagnose)


def _report_output_options(p: argparse.ArgumentParser) -> None:
    """`--out FILE` and `--force`, the options `_write_report` reads."""
    p.add_argument("--out", required=True, metavar="FILE", help="result JSON (a .md table is written beside it)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")


def _write_report(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    markdown_table: Callable[[dict[str, Any]], str],
    *,
    show_table: bool = False,
) -> int:
    """Run a benchmark whose result is one JSON report: refuse to replace `--out` without
    `--force` (before any work), write the JSON and its Markdown table beside it."""
    from assft_core.fsutil import atomic_write_json, atomic_write_text

    out = Path(args.out)
    if out.exists() and not args.force:
        raise AssftError(f"{out} exists; choose another --out file or pass --force to replace it.")
    report = run(args)
    atomic_write_json(out, report)
    table = out.with_suffix(".md")
    atomic_write_text(table, markdown_table(report))
    if show_table:
        print(markdown_table(report))
    print(f"written: {out} and {table}")
    return 0


def _run_scale(args: argparse.Namespace) -> int:
    from assft_core.bench.scale import markdown_table, run_scale

    return _write_report(args, run_scale, markdown_table)


def _add_scale(sub: argparse._SubParsersAction) -> None:
    from assft_core.bench.scale import ORIENTATIONS, PHASES

    p = sub.add_parser(
        "scale",
        help="time and peak RSS per phase on a real-size synthetic CT and as the pool grows",
        description="Writes synthetic CT cases (int16 HU, uint8 labels, ellipsoid structures) and measures each "
        "phase in its own child process: wall time and peak resident set (the child's ru_maxrss, imports included; "
        "the baseline phase is the floor). Real-size phases (import, preprocess, metrics, train_step, evaluate, predict) use one --shape case (and one per --more-shapes); "
        "pool phases (score, ssft) run for each --pool-sizes N. JSON to --out and a Markdown table beside it.",
    )
    _report_output_options(p)
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), help="phases to measure (default all)")
    p.add_argument("--shape", type=_positive, nargs=3, default=[512, 512, 240], metavar=("X", "Y", "Z"),
                   help="real-size case in voxels (default 512 512 240)")
    p.add_argument("--more-shapes", type=_positive, nargs=3, action="append", metavar=("X", "Y", "Z"),
                   help="measure the real-size phases again at this size too (repeatable), to see how they grow")
    p.add_argument("--classes", type=_positive, default=15, help="classes of the real-size case, background included")
    p.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.8, 1.5], metavar=("X", "Y", "Z"),
                   help="voxel size of the synthetic scans in mm (default 0.8 0.8 1.5)")
    p.add_argument("--model-spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5], metavar=("X", "Y", "Z"),
                   help="the model's grid in mm for the real-size case (default 1.5 1.5 1.5)")
    p.add_argument("--orientation", choices=ORIENTATIONS, default="LPS", help="axes of the synthetic scans")
    p.add_argument("--roi", type=_positive, nargs=3, default=[96, 96, 96], metavar=("D", "H", "W"),
                   help="sliding-window ROI of the real-size evaluation (default 96 96 96)")
    p.add_argument("--pool-sizes", type=_positive, nargs="+", default=[4, 16, 64], metavar="N",
                   help="pool sizes of the pool phases (default 4 16 64)")
    p.add_argument("--pool-shape", type=_positive, nargs=3, default=[64, 64, 48], metavar=("X", "Y", "Z"),
                   help="voxels of each pool case (default 64 64 48)")
    p.add_argument("--pool-classes", type=_positive, default=4, help="classes of the pool cases (default 4)")
    p.add_argument("--pool-spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5], metavar=("X", "Y", "Z"),
                   help="voxel size of the pool cases and the tiny model's grid in mm (default 1.5 1.5 1.5)")
    p.add_argument("--threads", type=_positive, default=1, help="torch threads in each child (default 1)")
    p.add_argument("--work", metavar="DIR", help="where the synthetic cases go (default: a new temp folder)")
    p.set_defaults(func=_run_scale)


def _run_dashboard(args: argparse.Namespace) -> int:
    from assft_core.bench.dashboard import markdown_table, run_dashboard

    return _write_report(args, run_dashboard, markdown_table, show_table=True)


def _add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="the dashboard's page switches and slice moves, on a synthetic scored project of N cases",
        description="Builds a synthetic scored project (N pool cases with scores and maps; nothing downloaded) or "
        "opens --project, then runs every page under Streamlit's AppTest: a first run and --repeats fresh runs "
        "per page (a page switch), and --moves slice moves on the Viewer. Server-side script time only, not the "
        "browser's paint. JSON to --out and a Markdown table beside it.",
    )
    _report_output_options(p)
    p.add_argument("--cases", type=_positive, default=200, help="pool cases of the synthetic project (default 200)")
    p.add_argument("--test-cases", type=_positive, default=8, help="test cases of the synthetic project (default 8)")
    p.add_argument("--shape", type=_positive, nargs=3, default=[48, 48, 48], metavar=("X", "Y", "Z"),
                   help="voxels of each synthetic case, 2 mm (default 48 48 48)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic volumes and scores")
    p.add_argument("--project", metavar="DIR", help="time this scored project instead of a synthetic one")
    p.add_argument("--repeats", type=_positive, default=5, help="fresh runs per page after the first (default 5)")
    p.add_argument("--moves", type=_positive, default=7, help="slice moves on the Viewer (default 7)")
    p.add_argument("--timeout", type=float, default=120.0, help="AppTest's limit per page run, s (default 120)")
    p.add_argument("--work", metavar="DIR", help="where the synthetic project goes (default: a temp folder, removed)")
    p.set_defaults(func=_run_dashboard)


# Benchmarks of the `bench` group; add a benchmark here.
BENCH_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_cost, _add_strategies, _add_diagnose, _add_scale, _add_dashboard,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `assft bench` and its benchmarks to the `assft` parser."""
    bench = subparsers.add_parser(
        "bench",
        help="benchmarks: strategies, cost of phases, diagnose (why a round hurts), scale (memory), dashboard (speed)",
        description="Benchmarks: the cost of a phase against plain inference, and strategy comparisons.",
    )
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    for add in BENCH_COMMANDS:
        add(sub)
    bench.set_defaults(func=lambda _args: bench.print_help() or 2)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value
