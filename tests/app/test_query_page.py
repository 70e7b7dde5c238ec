"""Query page: scoring as a job, proposals with explanations, approve / reject / swap in the store."""

from __future__ import annotations

from app_factories import CASES, store_scores
from scored_maps import store_scores_with_maps

from assft_core.query.table import Availability
from assft_core.session import jobs, rounds
from assft_core.session.rounds import QueryStatus, RoundState


def _statuses(project) -> dict[str, str]:
    return {q.case_id: q.status.value for q in rounds.list_queries(project)}


def test_open_round_asks_for_scoring_and_the_button_queues_a_launched_job(run_page, oracle_project, fake_jobs) -> None:
    other = run_page("query", oracle_project.folder)  # a second browser session, opened before the click
    at = run_page("query", oracle_project.folder)
    assert "Score the pool first" in at.warning[0].value
    assert [b.label for b in at.button] == ["Score the pool"]
    # The time it will take, before launch: the scoring pass, and a whole round at the project's settings.
    (expected,) = [c.value for c in at.caption if c.value.startswith("Expected time of the scoring pass")]
    assert "scoring 6 cases" in expected and "A whole round" in expected and "evaluation" in expected
    at.button(key="score").click().run()
    assert not at.exception
    (job,) = jobs.list_jobs(oracle_project)
    assert (job.kind, job.status, job.params) == ("score", jobs.JobStatus.QUEUED, {"round": 0})
    assert fake_jobs == [job.id]
    assert at.get("progress")[0].proto.text.startswith(f"score job #{job.id}: queued")
    assert at.button(key="score").disabled  # one scoring job at a time
    # The other session's page still shows an enabled button: its click starts no second job.
    other.button(key="score").click().run()
    assert not other.exception and other.button(key="score").disabled
    assert len(jobs.list_jobs(oracle_project)) == 1 and fake_jobs == [job.id]


def test_propose_shows_explained_picks_and_approve_reject_update_the_store(run_page, oracle_project) -> None:
    store_scores(oracle_project)
    at = run_page("query", oracle_project.folder)
    assert at.selectbox(key="query-strategy").value == "assft"
    at.button(key="propose").click().run()
    picks = rounds.list_queries(oracle_project)
    assert len(picks) == 2 and {q.status for q in picks} == {QueryStatus.PROPOSED}
    first, second = picks
    text = "\n".join(m.value for m in at.markdown)
    assert f"KG = {first.explanation['kg']:.3f}" in text  # the stored explanation, in words
    assert f"#1 · {first.case_id}" in text

    at.button(key=f"approve-0-{first.case_id}").click().run()
    assert _statuses(oracle_project) == {first.case_id: "approved", second.case_id: "proposed"}
    at.button(key=f"reject-0-{second.case_id}").click().run()
    assert not at.exception
    assert _statuses(oracle_project) == {first.case_id: "approved", second.case_id: "rejected"}
    assert rounds.current_round(oracle_project).state is RoundState.APPROVED
    # The steps keep their numbers: step 2 says it is closed and what comes next.
    assert [h.value for h in at.subheader][:3] == ["1 · Score the pool", "2 · Propose picks", "3 · Review the picks"]
    assert any("Closed: round 0 has its picks (picks approved, waiting for labels)" in c.value
               and "**Labels** page" in c.value for c in at.caption)


def test_swap_replaces_a_pick_and_a_larger_budget_proposes_more(run_page, oracle_project) -> None:
    store_scores(oracle_project)
    at = run_page("query", oracle_project.folder)
    at.button(key="propose").click().run()
    first, second = (q.case_id for q in rounds.list_queries(oracle_project))
    at.button(key=f"swap-0-{first}").click().run()
    statuses = _statuses(oracle_project)
    assert statuses[first] == "swapped" and statuses[second] == "proposed"
    (new,) = [c for c, s in statuses.items() if c not in (first, second)]
    assert statuses[new] == "proposed"
    assert any("2 live pick(s) fill the budget" in c.value for c in at.caption)  # no propose button then
    assert not [b for b in at.button if b.key == "propose"]
    # A larger budget: one more pick is proposed with the live ones fixed.
    at.number_input(key="query-budget").set_value(3).run()
    assert at.button(key="propose").label == "Propose 1 more"
    at.button(key="propose").click().run()
    assert not at.exception
    assert sorted(_statuses(oracle_project).values()) == ["proposed", "proposed", "proposed", "swapped"]


def test_engine_refusals_are_messages_not_tracebacks(run_page, oracle_project) -> None:
    store_scores(oracle_project, Availability(True, "file", False, True))  # a model without a target head
    at = run_page("query", oracle_project.folder)
    assert "ASD unavailable" in at.warning[0].value  # said plainly before any choice
    at.selectbox(key="query-strategy").set_value("fg_entropy")  # ASD alone: needs the head
    at.button(key="propose").click().run()
    assert not at.exception
    assert at.error[0].value.startswith("Could not propose picks: strategy 'fg_entropy'")
    assert rounds.list_queries(oracle_project) == []


def test_each_pick_has_its_site_picture_sentence_and_the_case_it_was_measured_against(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    at = run_page("query", oracle_project.folder)
    at.button(key="propose").click().run()
    assert not at.exception, at.exception
    first, second = rounds.list_queries(oracle_project)
    sites = dict((cid, site) for cid, site, _ in CASES)
    text = "\n".join(m.value for m in at.markdown)
    assert f"#1 · {first.case_id}** · site {sites[first.case_id]}" in text
    # Nothing is labelled: pick 2's diversity was measured against pick 1, and it says so by name.
    assert second.explanation["nearest_id"] == first.case_id and second.explanation["nearest_kind"] == "picked"
    captions = [c.value for c in at.caption]
    assert f"Most similar case already chosen: **{first.case_id}** (picked earlier this round)." in captions
    assert "Most similar case already chosen: none yet (nothing labelled or picked before it)." in captions
    assert "(picked earlier this round; DIV is measured against it)" in text  # the formula view says it too
    sentences = [m.value for m in at.markdown if m.value.startswith(f"{second.case_id} was picked because")]
    assert sentences and "k̂" not in sentences[0] and first.case_id in sentences[0]
    # A thumbnail per live pick (the slice through the ROI centre) and a button to open it in the Viewer.
    images = at.get("image")
    assert len(images) == 2 and "through the ROI centre" in images[0].proto.imgs[0].caption
    assert at.button(key=f"view-0-{first.case_id}").label == "Open in Viewer"


def test_runners_up_follow_the_picks_with_their_scores(run_page, oracle_project) -> None:
    store_scores(oracle_project)
    at = run_page("query", oracle_project.folder)
    at.button(key="propose").click().run()
    picked = {q.case_id for q in rounds.list_queries(oracle_project)}
    frames = [d.value for d in at.dataframe if "what the score is" in d.value.columns]
    assert frames, "no next-in-line table"
    following = frames[0]
    assert len(following) == 2 and not picked & set(following["case"])  # 4 pool cases, 2 picked
    assert following["score"].notna().all()
    # The first runner-up is what a swap of the last pick brings in.
    last = rounds.list_queries(oracle_project)[-1].case_id
    at.button(key=f"swap-0-{last}").click().run()
    assert following["case"].iloc[0] in {q.case_id for q in rounds.list_queries(oracle_project)}


def test_per_layer_columns_are_folded_away_by_default(run_page, oracle_project) -> None:
    store_scores(oracle_project)
    at = run_page("query", oracle_project.folder)
    (scores,) = [d.value for d in at.dataframe if "roi_fallback" in d.value.columns]
    assert not [c for c in scores.columns if c.startswith("kl:")]
    at.toggle(key="scores-layers").set_value(True).run()
    (scores,) = [d.value for d in at.dataframe if "roi_fallback" in d.value.columns]
    assert "kl:enc.0.bn" in scores.columns
