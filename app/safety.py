"""Dashboard settings that must not depend on the folder Streamlit starts in.

`.streamlit/config.toml` applies only when Streamlit starts in the repository root; from another
folder the server would bind every interface, send usage statistics, cap uploads at 200 MB and
show tracebacks with install paths. So:

- `launch_command` is the one way the scripts start the dashboard: the safe options on the
  command line (`python -m app.safety --project DIR`, used by `scripts/dashboard.sh`).
- `unsafe_settings` is checked by `app/main.py` on every run: a server started some other way
  without these options shows what is wrong and the fix, and no project data.
- `show_unexpected` shows an unexpected error as one short line with a log reference; the
  traceback goes to the server's log only (`client.showErrorDetails` is set to "none" in code).
- `project_allowed`: the sidebar's folder box opens projects only under the configured roots
  ($ASSFT_PROJECT_ROOTS, `os.pathsep`-separated; default: the launch folder and the demo project),
  plus the folder named with `--project` / $ASSFT_PROJECT by whoever started the server.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ROOTS_ENV = "ASSFT_PROJECT_ROOTS"
NETWORK_ENV = "ASSFT_SERVE_NETWORK"  # "1": binding a non-loopback address is an explicit choice
DEMO_PROJECT = ROOT / "demo_project"
LAUNCH_DIR = Path.cwd().resolve()  # the folder the server started in (read once, at first import)

SAFE_OPTIONS: dict[str, Any] = {
    "server.address": "127.0.0.1",
    "server.headless": True,
    "server.maxUploadSize": 2048,  # MB: a CT label volume can exceed Streamlit's default 200 MB
    "server.runOnSave": False,
    "browser.gatherUsageStats": False,
    "browser.serverAddress": "127.0.0.1",
    "client.showErrorDetails": "none",
    "client.toolbarMode": "minimal",
}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

log = logging.getLogger("assft.dashboard")


def launch_command(project: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """`streamlit run <repo>/app/main.py` with every `SAFE_OPTIONS` entry on the command line.

    Args:
        project: the project folder to open (passed after `--`), or None.
        extra: more Streamlit options (e.g. `--server.port=8502`); given after the safe ones, so an
            explicit `--server.address=0.0.0.0` (with $ASSFT_SERVE_NETWORK=1) wins.
    """
    options = [f"--{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in SAFE_OPTIONS.items()]
    tail = ["--", "--project", project] if project else []
    return [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), *options, *extra, *tail]


def unsafe_settings(get_option: Callable[[str], Any], environ: Mapping[str, str] = os.environ) -> list[str]:
    """What in the running server's settings does not fit patient data, each with the fix.

    Args:
        get_option: `st.get_option`.
        environ: the environment ($ASSFT_SERVE_NETWORK=1 allows a non-loopback address).

    Returns:
        One sentence per problem (empty when the settings are safe).
    """
    fix = "start the dashboard with `bash scripts/dashboard.sh` or `python -m app.safety --project DIR`"
    out = []
    address = get_option("server.address")
    if str(address or "") not in _LOOPBACK and environ.get(NETWORK_ENV) != "1":
        out.append(f"the server listens on {'every interface' if not address else address}; {fix} "
                   f"(or set {NETWORK_ENV}=1 if serving on a network is your choice).")
    if get_option("browser.gatherUsageStats"):
        out.append(f"usage statistics are being sent to Streamlit; {fix}.")
    if int(get_option("server.maxUploadSize") or 0) < SAFE_OPTIONS["server.maxUploadSize"]:
        out.append(f"uploads are capped at {get_option('server.maxUploadSize')} MB (labels can be larger); {fix}.")
    return out


def show_unexpected(exc: BaseException, error: Callable[[str], Any]) -> str:
    """Log `exc` with its traceback under a fresh reference and show one short line with it.

    Returns:
        The reference (also in the server's log line).
    """
    ref = uuid.uuid4().hex[:8]
    log.error("unexpected error, reference %s", ref, exc_info=exc)
    error(f"Something went wrong ({type(exc).__name__}). Reference `{ref}`: the details are in the dashboard's "
          "log (the terminal running Streamlit).")
    return ref


def project_roots(environ: Mapping[str, str] = os.environ) -> list[Path]:
    """The folders under which the sidebar may open projects: $ASSFT_PROJECT_ROOTS, else the launch
    folder and the demo project."""
    given = [Path(p).expanduser().resolve() for p in environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return given or [LAUNCH_DIR, DEMO_PROJECT.resolve()]


def project_allowed(folder: str, named: str | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the dashboard may open `folder`: the folder named at launch (`named`), or one inside
    `project_roots`. Decided on the path alone, so the answer says nothing of what is there."""
    target = Path(folder).expanduser().resolve()
    if named and target == Path(named).expanduser().resolve():
        return True
    return any(target == root or root in target.parents for root in project_roots(environ))


def refusal(folder: str, environ: Mapping[str, str] = os.environ) -> str:
    """The message for a folder outside the roots (the same whether or not it exists)."""
    roots = ", ".join(f"`{r}`" for r in project_roots(environ))
    return (f"`{folder}` is outside the folders this dashboard may open ({roots}). Start the dashboard with "
            f"`--project DIR`, or set {ROOTS_ENV} (folders separated by '{os.pathsep}') before starting it.")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m app.safety [--project DIR] [streamlit options...]`: run the dashboard with `SAFE_OPTIONS`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m app.safety", description="Start the dashboard with safe settings.")
    parser.add_argument("--project", default=None)
    args, extra = parser.parse_known_args(argv)
    return subprocess.call(launch_command(args.project, extra))


if __name__ == "__main__":
    sys.exit(main())
