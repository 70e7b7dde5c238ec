"""`assft demo ...`: the `demo` group, with `demo build` (the corpus, from `assft_core.data.demo`),
`demo project` (corpus + shipped model as a project) and `demo run` (the whole active-learning loop
headless, with a per-round table)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from assft_core.config import ProjectConfig, SSFTConfig, SSFTMode
from assft_core.data.demo.commands import add_build_command
from assft_core.data.demo.locations import demo_corpus_dir
from assft_core.data.demo.plan import DemoLayout, DemoSize


def register(subparsers: Any) -> None:
    """Add the `demo` group to `assft`'s sub-parsers with its `build`, `project` and `run` commands."""
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
    from assft_core.session.demo_setup import ensure_demo_project, is_project  # torch: only when run

    if is_project(args.project) and args.quiet_if_exists:
        return 0
    corpus = args.corpus or demo_corpus_dir(args.layout, args.size)
    project, created = ensure_demo_project(args.project, corpus, layout=args.layout, size=args.size, log=print)
    print(f"{'created' if created else 'already there'}: demo project {project.folder}")
    print(f"open it: ASSFT_PROJECT={project.folder} bash scripts/dashboard.sh   (or `assft status -p {project.folder}`)")
    return 0


def _run_loop(args: argparse.Namespace) -> int:
    # torch: only when run (`assft --help` builds every parser)
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
