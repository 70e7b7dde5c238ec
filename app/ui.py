"""Shared UI pieces of the dashboard: which project is open, the error guard, the round banner.

Project selection, in order: `--project DIR` after `--` on the `streamlit run` line, else
$ASSFT_PROJECT, else the sidebar's text box. The chosen folder lives in
`st.session_state[PROJECT_KEY]`, which every page reads through `current_project`, so a page
script also runs on its own (tests set that key before running a page).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import streamlit as st

from assft_core.errors import AssftError
from assft_core.session.project import Project, open_project
from assft_core.session.round_change import RoundChange
from assft_core.session.rounds import RoundInfo, RoundState, current_round

PROJECT_KEY = "assft_project_dir"
FLASH_KEY = "assft_flash"
PROJECT_ENV = "ASSFT_PROJECT"
NO_PROJECT = (
    "No project yet: create one with `assft init PROJECT --dataset DIR --model DIR`, "
    "or run `bash scripts/dashboard.sh` to build and open the demo project."
)

# The next step of each round state, in the dashboard's words (the engine's NEXT_STEP names the CLI).
NEXT_STEP_UI: dict[RoundState, str] = {
    RoundState.OPEN: "score the pool on the **Query** page",
    RoundState.SCORED: "propose picks on the **Query** page",
    RoundState.PROPOSED: "approve, reject or swap every pick on the **Query** page",
    RoundState.APPROVED: "label the approved cases on the **Labels** page",
    RoundState.LABELLED: "fine-tune on the **Fine-tune** page",
    RoundState.TRAINED: "evaluate the new model on the **Fine-tune** page",
    RoundState.EVALUATED: "start the next round on the **Fine-tune** page",
}


def project_arg(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The project folder named on the command line (`--project DIR`) or in $ASSFT_PROJECT.

    Args:
        argv: the script's arguments (what follows `--` on the `streamlit run` line).
        environ: the environment.

    Returns:
        The folder as given, or None when neither names one. Unknown arguments are ignored
        (Streamlit may pass its own).
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--project", default=None)
    known, _ = parser.parse_known_args(list(argv))
    return known.project or environ.get(PROJECT_ENV) or None


def current_project() -> Project | None:
    """The open project, or None after telling the user what to do (missing or invalid folder)."""
    folder = st.session_state.get(PROJECT_KEY) or os.environ.get(PROJECT_ENV)
    if not folder:
        st.info(NO_PROJECT)
        return None
    from app.safety import project_allowed, refusal

    if not project_allowed(folder, project_arg(sys.argv[1:], os.environ)):
        st.error(refusal(folder))
        return None
    try:
        return open_project(folder)
    except AssftError as exc:
        st.error(str(exc))
        st.info(NO_PROJECT)
        return None


def require_project() -> Project:
    """`current_project`, stopping the page (after the message) when there is none."""
    project = current_project()
    if project is None:
        st.stop()
    return project  # type: ignore[return-value]  # st.stop() never returns


@contextmanager
def guard(action: str) -> Iterator[None]:
    """Show a user error (AssftError) raised in the block as a message with its fix, never a traceback.

    Args:
        action: what was being done, in words ("approve the picks"); starts the message.
    """
    try:
        yield
    except AssftError as exc:
        st.error(f"Could not {action}: {exc}")


def flash(message: str) -> None:
    """Keep a success message for the next run (shown by `round_banner` after `st.rerun()`)."""
    st.session_state.setdefault(FLASH_KEY, []).append(message)


def round_banner(project: Project) -> RoundInfo:
    """Pending flash messages, then a one-line status of the current round with the next step.

    Returns:
        The current round.
    """
    for message in st.session_state.pop(FLASH_KEY, []):
        st.success(message)
    info = current_round(project)
    mode = "demo (oracle labels)" if project.oracle else "expert labels"
    st.caption(f"Project `{project.folder}` · mode: {mode}")
    st.info(f"Round {info.idx} is **{info.state.value}**. Next: {NEXT_STEP_UI[info.state]}.")
    return info


def round_change_panel(change: RoundChange) -> None:
    """What a round changed, plain words first: the mean f_t → f_{t+1}, a warning per site that got
    worse, then the table of test Dice per site with the change."""
    if not change.comparable:
        st.caption(change.note)
        return
    first, *worse = change.sentences()
    (st.warning if change.worse_sites else st.success)(first)
    for sentence in worse:
        (st.warning if change.worse_sites else st.caption)(sentence)
    st.dataframe(change.rows(), hide_index=True, column_config={
        change.before: st.column_config.NumberColumn(f"{change.before} (before)", format="%.3f"),
        change.after: st.column_config.NumberColumn(f"{change.after} (after)", format="%.3f"),
        "change": st.column_config.NumberColumn("change", format="%+.3f"),
    })
