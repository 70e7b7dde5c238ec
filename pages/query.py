"""Query page: score the pool (a job), propose picks with a strategy and budget, and decide on each
pick (approve / reject / swap) with its explanation in plain words (ASSFT, METHOD.md §1–§3)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.jobs_widget import is_active, job_panel, start_job
from app.presenters import describe_pick, pick_numbers
from app.ui import NEXT_STEP_UI, guard, require_project, round_banner
from assft_core.query.strategies import get_strategy, list_strategies
from assft_core.query.table import ScoreTable
from assft_core.session import labels, rounds
from assft_core.session.project import Project
from assft_core.session.query import propose_round, swap_pick
from assft_core.session.rounds import QueryStatus, RoundInfo, RoundState

SCORING_STATES = (RoundState.OPEN, RoundState.SCORED)
PICKING_STATES = (RoundState.SCORED, RoundState.PROPOSED)


def scoring_section(project: Project, info: RoundInfo) -> None:
    """Start the scoring pass of the current model as a job, and watch it."""
    st.subheader("1 · Score the pool")
    if info.state in SCORING_STATES:
        label = "Score the pool" if info.state is RoundState.OPEN else "Score again"
        if st.button(label, key="score", type="primary" if info.state is RoundState.OPEN else "secondary",
                     disabled=is_active(project, "score"),
                     help="One forward pass per case with the current model: KG, ASD, embedding (runs in the background)."):
            with guard("start the scoring pass"):
                start_job(project, "score", {"round": info.idx})
                st.rerun()
    else:
        st.write(f"Round {info.idx} is scored.")
    job_panel(project, "score", match={"round": info.idx})


def proposal_section(project: Project, info: RoundInfo) -> None:
    """Choose the strategy and budget, and ask for picks."""
    st.subheader("2 · Propose picks")
    names = list_strategies()
    default = names.index(project.config.strategy) if project.config.strategy in names else 0
    left, right = st.columns([2, 1])
    name = left.selectbox("Strategy", names, index=default, key="query-strategy")
    left.caption(get_strategy(name).description)
    budget = right.number_input("Budget (cases this round)", min_value=1, value=project.config.budget, step=1,
                                key="query-budget")
    live = len(rounds.round_pool(project).fixed)
    if live >= budget:
        st.caption(f"{live} live pick(s) fill the budget: reject or swap a pick below to replace it.")
        return
    text = "Propose picks" if info.state is RoundState.SCORED else f"Propose {int(budget) - live} more"
    if st.button(text, key="propose", type="primary"):
        with guard("propose picks"):
            propose_round(project, name, int(budget))
            st.rerun()


def picks_section(project: Project, info: RoundInfo) -> None:
    """The ranked picks with explanations and the approve / reject / swap buttons."""
    st.subheader("3 · Review the picks")
    picks = rounds.list_queries(project)
    if not picks:
        st.info("No pick yet this round: propose picks above.")
        return
    labelled = labels.current_labels(project)
    table = pd.DataFrame([pick_numbers(q.rank, q.case_id, q.shown_status(labelled), q.explanation) for q in picks])
    st.dataframe(table, hide_index=True)
    deciding = info.state is RoundState.PROPOSED
    pending = [q for q in picks if q.status is QueryStatus.PROPOSED]
    if deciding and pending and st.button(f"Approve all {len(pending)} pending", key="approve-all", type="primary"):
        with guard("approve the picks"):
            rounds.approve(project)
            st.rerun()
    for q in picks:
        live = q.status in (QueryStatus.PROPOSED, QueryStatus.APPROVED)
        with st.container(border=True):
            st.markdown(f"**#{q.rank} · {q.case_id}** — {q.shown_status(labelled)} ({q.strategy})")
            with st.expander("Why this case", expanded=live):
                st.markdown("  \n".join(describe_pick(q.explanation)))
            if not (deciding and live):
                continue
            c1, c2, c3 = st.columns(3)
            if q.status is QueryStatus.PROPOSED and c1.button("Approve", key=f"approve-{info.idx}-{q.case_id}"):
                with guard(f"approve {q.case_id}"):
                    rounds.approve(project, [q.case_id])
                    st.rerun()
            if c2.button("Reject", key=f"reject-{info.idx}-{q.case_id}", help="Excluded for the rest of this round."):
                with guard(f"reject {q.case_id}"):
                    rounds.reject(project, q.case_id)
                    st.rerun()
            if c3.button("Swap", key=f"swap-{info.idx}-{q.case_id}", help="Reject it and take the strategy's next best case."):
                with guard(f"swap {q.case_id}"):
                    swap_pick(project, q.case_id, q.strategy)
                    st.rerun()


def stored_scores(project: Project, info: RoundInfo) -> ScoreTable | None:
    """The round's stored score table (None before scoring, or after a read error shown as a message)."""
    if not info.score_table:
        return None
    with guard("read the stored scores"):
        return ScoreTable.load(project.resolve(info.score_table))
    return None


def scores_section(project: Project, table: ScoreTable) -> None:
    """Terms this model cannot compute (said plainly), and every pool case's stored scores."""
    for note in table.unavailable_terms():
        st.warning(f"{note}.")
    with st.expander("All scores of this round"):
        pool = [c for c in rounds.round_pool(project).pool_ids if c in table]
        st.dataframe(table.to_frame(pool), hide_index=True)


st.title("Query")
project = require_project()
info = round_banner(project)
scoring_section(project, info)
if info.state is RoundState.OPEN:
    st.warning("Score the pool first: the strategies rank cases from the stored scores of the current model.")
    st.stop()
scores = stored_scores(project, info)
if scores is not None:
    scores_section(project, scores)
if info.state in PICKING_STATES:
    proposal_section(project, info)
else:  # keep the steps' numbering: say why step 2 is closed
    st.subheader("2 · Propose picks")
    st.caption(f"Closed: round {info.idx} is '{info.state.value}'; next: {NEXT_STEP_UI[info.state]}.")
picks_section(project, info)
