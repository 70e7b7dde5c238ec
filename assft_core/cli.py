"""`assft` command line: one entry point, sub-commands registered by each engine package.

Each package that offers commands has a `commands.py` with `register(subparsers)`, adding its
sub-parsers with `set_defaults(func=handler)`; a handler takes the parsed args and returns an exit
code. A user-facing error (`AssftError`) is printed without a traceback and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from assft_core import __version__
from assft_core.errors import AssftError

# Packages whose `commands` module adds sub-commands (order = order in `assft --help`).
COMMAND_MODULES = (
    "assft_core.data.commands",
    "assft_core.session.demo_commands",
    "assft_core.models.commands",
    "assft_core.session.commands",
    "assft_core.session.round_commands",
    "assft_core.session.annotation_commands",
    "assft_core.session.doctor",
    "assft_core.train.commands",
    "assft_core.bench.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The full `assft` parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="assft",
        description="ASSFT Studio: adapt a medical vision foundation model to a new segmentation task "
        "with few expert labels (active learning + selective semi-supervised fine-tuning).",
    )
    parser.add_argument("--version", action="version", version=f"assft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


# Exit code of a command whose reader went away (`assft ... | head`), as a shell reports SIGPIPE.
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Run `assft` with `argv` (default: sys.argv[1:]); returns the exit code.

    Output into a closed pipe (`assft status | head`) ends the command quietly with
    `EXIT_BROKEN_PIPE`, without a traceback.
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AssftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
