"""`assft demo ...`: `demo build` (the corpus), `demo project` (corpus + shipped model as a project) and
`demo run` (the whole active-learning loop headless, with a per-round table)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from assft_core.data.demo.locations import demo_corpus_dir
from assft_core.data.demo.plan import PLANS, DemoLayout, DemoSize, plan_cases


def register(subparsers: Any) -> None:
    """Add the `demo` group to `assft`'s sub-parsers and its `build` command."""
    demo = subparsers.add_parser(
        "demo",
        help="the built-in demo corpus (real MNI152 anatomy, simulated subjects and sites)",
        description="The built-in demo: a labelled brain MRI corpus of virtual subjects at five simulated sites.",
    )
    demo_sub = demo.add_subparsers(dest="demo_command", metavar="DEMO_COMMAND")
    demo.set_defaults(func=lambda args: _help(demo))
    add_build_command(demo_sub)
    add_project_command(demo_sub)
    add_run_command(demo_sub)


def add_build_command(demo_subparsers: Any) -> argparse.ArgumentParser:
    """Add `build` to the `demo` group's sub-parsers; returns its parser."""
    full, tiny = PLANS[DemoSize.FULL], PLANS[DemoSize.TINY]
    build = demo_subparsers.add_parser(
        "build",
        help="write the demo corpus (nnU-Net v2 raw folder with cases.csv)",
        description="Write the demo corpus into OUT as an nnU-Net v2 raw dataset with dataset.json, cases.csv "
        "(case_id, site, split), README.txt and a check picture preview.png. Deterministic from --seed; "
        "rerunning with the same parameters returns the existing corpus.",
    )
    build.add_argument("out", type=Path, metavar="OUT", help="new or empty folder (never overwritten)")
    build.add_argument(
        "--layout",
        choices=[m.value for m in DemoLayout],
        default=DemoLayout.UNBALANCED.value,
        help=f"target pool over sites A-D: unbalanced {'/'.join(map(str, full.pool[DemoLayout.UNBALANCED]))} "
        f"(archive-like, default) or balanced {'/'.join(map(str, full.pool[DemoLayout.BALANCED]))}",
    )
    build.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    build.add_argument(
        "--size",
        choices=[m.value for m in DemoSize],
        default=DemoSize.FULL.value,
        help=f"full ({full.voxel_mm:g} mm, the demo) or tiny ({tiny.voxel_mm:g} mm, a few cases, for tests)",
    )
    build.set_defaults(func=_run_build)
    return build


def _run_build(args: argparse.Namespace) -> int:
    from assft_core.data.demo.builder import build_demo_corpus  # torch/MONAI: only when building

    total = len(plan_cases(args.layout, args.size))
    print(f"building the demo corpus ({args.size}, {args.layout}, seed {args.seed}, {total} cases) in {args.out}")

    def progress(done: int, n: int, case_id: str) -> None:
        if sys.stdout.isatty():  # one updating line in a terminal, silence in logs
            print(f"\r  {done}/{n} {case_id:<20}", end="" if done < n else "\n", flush=True)

    out = build_demo_corpus(args.out, layout=args.layout, seed=args.seed, size=args.size, on_progress=progress)
    print(f"demo corpus ready: {out} (check picture: {out / 'preview.png'})")
    return 0


def add_project_command(demo_subparsers: Any) -> argparse.ArgumentParser:
    """Add `project` to the `demo` group's sub-parsers; returns its parser."""
    p = demo_subparsers.add_parser(
        "project",
        help="create the demo project (demo corpus + shipped pre-trained model, oracle labels)",
        description="Create a project on the demo corpus (built first when missing) with the shipped demo model, "
        "in oracle mode: labels come from the corpus's reference labels, marked as oracle. The dashboard opens it.",
    )
    p.add_argument("project", type=Path, nargs="?", default=Path("demo_project"), metavar="DIR",
                   help="project folder (default: demo_project)")
    p.add_argument("--corpus", type=Path, default=None,
                   help=f"demo corpus folder (default: {demo_corpus_dir('LAYOUT', 'SIZE')}, built when missing)")
    p.add_argument("--layout", choices=[m.value for m in DemoLayout], default=DemoLayout.UNBALANCED.value,
                   help="target pool layout of a corpus built now (default unbalanced)")
    p.add_argument("--size", choices=[m.value for m in DemoSize], default=DemoSize.FULL.value,
                   help="size of a corpus built now (default full; tiny: for tests)")
    p.add_argument("--quiet-if-exists", action="store_true", help="exit 0 silently when DIR already is a project")
    p.set_defaults(func=_run_project)
    return p


def add_run_command(demo_subparsers: Any) -> argparse.ArgumentParser:
    """Add `run` to the `demo` group's sub-parsers; returns its parser."""
    from assft_core.config import SSFTConfig, SSFTMode

    p = demo_subparsers.add_parser(
        "run",
        help="run the whole loop headless on the demo corpus and print a per-round table",
        description="Score -> query -> approve all -> oracle label -> fine-tune + SSFT -> evaluate, for R rounds, "
        "on the demo corpus with the shipped model; prints round, labelled count, mean and per-site test Dice "
        "and wall time. Rerun the same command after a stop or kill: it continues where it was, resuming a "
        "training job from its last checkpoint.",
    )
    p.add_argument("--rounds", type=int, required=True, metavar="R", help="rounds of labelling + fine-tuning")
    p.add_argument("--budget", type=int, required=True, metavar="N", help="cases labelled per round")
    p.add_argument("--layout", choices=[m.value for m in DemoLayout], default=DemoLayout.UNBALANCED.value,
                   help="target pool layout (default unbalanced)")
    p.add_argument("--strategy", default="assft", help="query strategy (default assft)")
    p.add_argument("--ssft", choices=[m.value for m in SSFTMode], default=SSFTMode.SELECTIVE.value,
                   help="SSFT mode (default selective)")
    p.add_argument("--steps", type=int, default=SSFTConfig.supervised_steps, metavar="S",
                   help=f"supervised steps per round (default {SSFTConfig.supervised_steps})")
    p.add_argument("--ssft-steps", type=int, default=SSFTConfig.ssft_steps, metavar="SU",
                   help=f"SSFT steps per round (default {SSFTConfig.ssft_steps})")
    p.add_argument("--project", type=Path, default=None, metavar="DIR",
                   help="project folder (default: demo_run_<layout>); an existing one is continued")
    p.add_argument("--corpus", type=Path, default=None, metavar="DIR",
                   help=f"demo corpus folder (default: {demo_corpus_dir('LAYOUT', 'SIZE')}, built when missing)")
    p.add_argument("--size", choices=[m.value for m in DemoSize], default=DemoSize.FULL.value,
                   help="corpus size (tiny: for tests)")
    p.add_argument("--model", type=Path, default=None, metavar="DIR", help="model folder (default: the shipped demo model)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    p.add_argument("--seed", type=int, default=0, help="corpus and strategy seed (default 0)")
    p.set_defaults(func=_run_loop)
    return p


def _run_project(args: argparse.Namespace) -> int:
    from assft_core.session.demo_setup import ensure_demo_project, is_project

    if is_project(args.project) and args.quiet_if_exists:
        return 0
    corpus = args.corpus or demo_corpus_dir(args.layout, args.size)
    project, created = ensure_demo_project(args.project, corpus, layout=args.layout, size=args.size, log=print)
    print(f"{'created' if created else 'already there'}: demo project {project.folder}")
    print(f"open it: streamlit run app/main.py -- --project {project.folder}   (or `assft status -p {project.folder}`)")
    return 0


def _run_loop(args: argparse.Namespace) -> int:
    from assft_core.config import ProjectConfig
    from assft_core.session.demo_setup import check_run_settings, ensure_demo_project
    from assft_core.session.loop import format_table, run_rounds

    folder = args.project or Path(f"demo_run_{args.layout}")
    corpus = args.corpus or demo_corpus_dir(args.layout, args.size)
    config = ProjectConfig(budget=args.budget, planned_rounds=max(args.rounds, 1), strategy=args.strategy, seed=args.seed)
    project, _ = ensure_demo_project(
        folder, corpus, layout=args.layout, size=args.size, seed=args.seed, model=args.model, config=config, log=print
    )
    settings = {"strategy": args.strategy, "ssft": args.ssft, "steps": args.steps, "ssft_steps": args.ssft_steps,
                "budget": args.budget, "layout": args.layout, "size": args.size, "seed": args.seed}
    check_run_settings(project, settings)
    rows = run_rounds(
        project, args.rounds, args.budget, args.strategy, ssft_mode=args.ssft, supervised_steps=args.steps,
        ssft_steps=args.ssft_steps, device=args.device, log=print,
        on_row=lambda row: print(f"== round {row.round}: {row.labelled} labelled, mean Dice "
                                 f"{'n/a' if row.mean_dice is None else f'{row.mean_dice:.3f}'}"),
    )
    print()
    print(format_table(rows))
    return 0


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2
