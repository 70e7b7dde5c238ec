"""`assft demo build`: write the demo corpus (no project, no model).

The `demo` group itself, with `demo project` and `demo run` beside `build`, is registered by
`assft_core.session.demo_commands`: those two make and drive a project, which is the session's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from assft_core.data.demo.plan import PLANS, DemoLayout, DemoSize, plan_cases


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
