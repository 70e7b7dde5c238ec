"""Shared UI pieces of the dashboard: which project is open, the error guard, the round banner with
the glossary ("Words used here"), and the table format of Dice columns.

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

from app.glossary import glossary_markdown
from assft_core.errors import AssftError
from assft_core.session.evaluation import DICE_FORMAT
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

# Each round state as users read it (the engine's state names are for the CLI and the store).
STATE_WORDS: dict[RoundState, str] = {
    RoundState.OPEN: "open, the pool is not scored yet",
    RoundState.SCORED: "scored, no picks yet",
    RoundState.PROPOSED: "picks proposed, waiting for your decision",
    RoundState.APPROVED: "picks approved, waiting for labels",
    RoundState.LABELLED: "labelled, ready to fine-tune",
    RoundState.TRAINED: "fine-tuned, not evaluated yet",
    RoundState.EVALUATED: "evaluated, ready for the next round",
}
# The next step of each round state and the page where it is done (the engine's NEXT_STEP names the CLI).
NEXT_STEP_UI: dict[RoundState, tuple[str, str]] = {
    RoundState.OPEN: ("score the pool", "Query"),
    RoundState.SCORED: ("propose picks", "Query"),
    RoundState.PROPOSED: ("approve, reject or swap every pick", "Query"),
    RoundState.APPROVED: ("label the approved cases", "Labels"),
    RoundState.LABELLED: ("fine-tune", "Fine-tune"),
    RoundState.TRAINED: ("evaluate the new model", "Fine-tune"),
    RoundState.EVALUATED: ("start the next round", "Fine-tune"),
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


def next_step(state: RoundState, here: str | None = None) -> str:
    """The next step of a round in `state`, with the page it is done on ("below" on that page itself).

    Args:
        state: the round's state.
        here: the title of the page asking ("Query"), or None.
    """
    action, page = NEXT_STEP_UI[state]
    return f"{action} below" if page == here else f"{action} on the **{page}** page"


def words_used_here() -> None:
    """The glossary in a closed expander: every symbol and term of the dashboard in plain words."""
    with st.expander("Words used here"):
        st.markdown(glossary_markdown())


def round_banner(project: Project, here: str | None = None) -> RoundInfo:
    """Pending flash messages, a one-line status of the current round with the next step, and the
    glossary (`words_used_here`).

    Args:
        project: the open project.
        here: the calling page's title, so the next step is not sent to the page the user is on.

    Returns:
        The current round.
    """
    for message in st.session_state.pop(FLASH_KEY, []):
        st.success(message)
    info = current_round(project)
    mode = "demo (oracle labels)" if project.oracle else "expert labels"
    st.caption(f"Project `{project.folder}` · mode: {mode}")
    st.info(f"Round {info.idx}: **{STATE_WORDS[info.state]}**. Next: {next_step(info.state, here)}.")
    words_used_here()
    return info


def dice_column(label: str | None = None) -> st.column_config.NumberColumn:
    """A table column of Dice scores with 3 decimals, like `evaluation.dice_text` everywhere else."""
    return st.column_config.NumberColumn(label, format=DICE_FORMAT)


def round_change_panel(change: RoundChange) -> None:
    """What a round changed, plain words first: the mean fₜ → fₜ₊₁, a warning per site that got
    worse, then the table of test Dice per site with the change."""
    if not change.comparable:
        st.caption(change.note)
        return
    first, *worse = change.sentences()
    (st.warning if change.worse_sites else st.success)(first)
    for sentence in worse:
        (st.warning if change.worse_sites else st.caption)(sentence)
    st.dataframe(change.rows(), hide_index=True, column_config={
        change.before: dice_column(f"{change.before} (before)"),
        change.after: dice_column(f"{change.after} (after)"),
        "change": st.column_config.NumberColumn("change", format="%+.3f"),
    })
