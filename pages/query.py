"""Query page: score the pool (a job), propose picks with a strategy and budget, and decide on each
pick (approve / reject / swap) with its explanation in plain words (ASSFT, METHOD.md §1–§3)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.case_views import cached_thumbnail, open_in_viewer, table_key
from app.jobs_widget import is_active, job_panel, start_job
from app.presenters import describe_estimate, describe_pick, pick_numbers
from app.ui import STATE_WORDS, guard, next_step, require_project, round_banner
from assft_core.query.strategies import get_strategy, list_strategies
from assft_core.query.table import ScoreTable
from assft_core.session import labels, rounds
from assft_core.session.estimate import round_estimate, scoring_estimate
from assft_core.session.pick_words import pick_sentence
from assft_core.session.project import Project
from assft_core.session.query import next_in_line, pick_contexts, propose_round, swap_pick
from assft_core.session.rounds import QueryStatus, RoundInfo, RoundState
from assft_core.session.views import ScoredRound

SCORING_STATES = (RoundState.OPEN, RoundState.SCORED)
PICKING_STATES = (RoundState.SCORED, RoundState.PROPOSED)
NEXT_IN_LINE = 3  # runners-up shown after the live picks
KL_PREFIX = "kl:"  # the score table's per-layer columns


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
        with guard("estimate the time"):
            headline, parts = describe_estimate(scoring_estimate(project))
            whole, _ = describe_estimate(round_estimate(project))
            st.caption(f"Expected time of the scoring pass: **{headline}** ({parts}). A whole round at the "
                       f"project's settings (scoring, fine-tuning, evaluation): {whole}.")
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
    strategy = get_strategy(name)
    left.caption(strategy.summary)
    if strategy.plain:  # the formula behind the sentence, for those who want it
        with left.expander("How it scores (formula)"):
            st.markdown(f"{strategy.description}  \nSymbols: see *Words used here* above; the full definitions "
                        "are in METHOD.md §1–§3.")
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


def pick_picture(project: Project, scored: ScoredRound | None, case_id: str, key: str) -> None:
    """The pick's thumbnail (axial slice through its ROI's centre) and the button opening it in the Viewer."""
    if scored is not None and case_id in scored.table:
        version = labels.current_labels(project).get(case_id)
        with guard(f"draw {case_id}"):
            picture, z = cached_thumbnail(str(project.folder), table_key(scored), case_id,
                                          version.sha256 if version else "", scored)
            st.image(picture, caption=f"axial slice {z} through the ROI centre; red: prediction, cyan: ROI",
                     width="content")
    if st.button("Open in Viewer", key=f"view-{key}", help="All three planes, the label, prediction and entropy."):
        open_in_viewer(case_id)


def next_in_line_section(project: Project, strategy: str | None) -> None:
    """The strategy's next cases after the live picks, with their scores (what a swap or more budget takes)."""
    with guard("rank the next cases"):
        following = next_in_line(project, strategy, NEXT_IN_LINE)
        if following:
            st.markdown("**Next in line** (what *Swap* or a larger budget would take, in this order)")
            st.caption("Each score is the one the case would have when taken: the distance to the cases already "
                       "chosen is measured again after each one, so a later case can score higher.")
            st.dataframe(pd.DataFrame([{"case": p["case_id"], "site": p["site"], "score": p.get("score"),
                                        "what the score is": p.get("criterion")} for p in following]),
                         hide_index=True, column_config={"score": st.column_config.NumberColumn(format="%.3f")})


def picks_section(project: Project, info: RoundInfo, scored: ScoredRound | None) -> None:
    """The ranked picks with their context and explanations, and the approve / reject / swap buttons."""
    st.subheader("3 · Review the picks")
    picks = rounds.list_queries(project)
    if not picks:
        st.info("No pick yet this round: propose picks above.")
        return
    labelled = labels.current_labels(project)
    contexts = pick_contexts(project, picks)
    rows = [{**pick_numbers(c.query.rank, c.query.case_id, c.query.shown_status(labelled), c.query.explanation),
             "site": c.site} for c in contexts]
    with st.expander("All picks as numbers"):
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    deciding = info.state is RoundState.PROPOSED
    pending = [q for q in picks if q.status is QueryStatus.PROPOSED]
    if deciding and pending and st.button(f"Approve all {len(pending)} pending", key="approve-all", type="primary"):
        with guard("approve the picks"):
            rounds.approve(project)
            st.rerun()
    for c in contexts:
        q = c.query
        live = q.status in (QueryStatus.PROPOSED, QueryStatus.APPROVED)
        key = f"{info.idx}-{q.case_id}"
        with st.container(border=True):
            left, right = st.columns([1, 3])
            with left:
                pick_picture(project, scored if live else None, q.case_id, key)
            with right:
                st.markdown(f"**#{q.rank} · {q.case_id}** · site {c.site or '?'} — {q.shown_status(labelled)} "
                            f"({q.strategy})")
                st.write(pick_sentence(q.case_id, q.strategy, q.explanation))
                if c.nearest_id:
                    whose = "picked earlier this round" if c.nearest_kind == "picked" else "labelled"
                    st.caption(f"Most similar case already chosen: **{c.nearest_id}** ({whose}).")
                else:
                    st.caption("Most similar case already chosen: none yet (nothing labelled or picked before it).")
                with st.expander("How the score is computed"):
                    st.markdown("  \n".join(describe_pick(q.explanation)))
                if not (deciding and live):
                    continue
                c1, c2, c3 = st.columns(3)
                if q.status is QueryStatus.PROPOSED and c1.button("Approve", key=f"approve-{key}"):
                    with guard(f"approve {q.case_id}"):
                        rounds.approve(project, [q.case_id])
                        st.rerun()
                if c2.button("Reject", key=f"reject-{key}", help="Excluded for the rest of this round."):
                    with guard(f"reject {q.case_id}"):
                        rounds.reject(project, q.case_id)
                        st.rerun()
                if c3.button("Swap", key=f"swap-{key}", help="Reject it and take the strategy's next best case."):
                    with guard(f"swap {q.case_id}"):
                        swap_pick(project, q.case_id, q.strategy)
                        st.rerun()
    if deciding:
        next_in_line_section(project, picks[-1].strategy)


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
        frame = table.to_frame(pool)
        layers = [c for c in frame.columns if str(c).startswith(KL_PREFIX)]
        if layers and not st.toggle(f"Show the per-layer KL columns ({len(layers)})", key="scores-layers",
                                    help="How far each layer's image statistics sit from the images the model "
                                         "learned from (KL divergence); KG combines them."):
            frame = frame.drop(columns=layers)
        st.dataframe(frame, hide_index=True)


st.title("Query")
project = require_project()
info = round_banner(project, "Query")
scoring_section(project, info)
if info.state is RoundState.OPEN:
    st.warning("Score the pool first: the strategies rank cases from the stored scores of the current model.")
    st.stop()
scores = stored_scores(project, info)
if scores is not None:
    scores_section(project, scores)
scored = ScoredRound(info, scores, project.resolve(info.score_table)) if scores is not None else None
if info.state in PICKING_STATES:
    proposal_section(project, info)
else:  # keep the steps' numbering: say why step 2 is closed
    st.subheader("2 · Propose picks")
    st.caption(f"Closed: round {info.idx} has its picks ({STATE_WORDS[info.state]}); next: "
               f"{next_step(info.state, 'Query')}.")
picks_section(project, info, scored)
