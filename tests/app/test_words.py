"""Words on every page: the glossary is there, plain words instead of symbols-only and state names,
one name per model, Dice with 3 decimals, and the step inputs kept after training."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from app_factories import EVAL_METRICS
from scored_maps import store_scores_with_maps

from assft_core.session import jobs, rounds
from assft_core.session.evaluation import baseline_path
from assft_core.session.jobs import JobContext, JobStatus
from assft_core.session.labels import label_with_oracle
from assft_core.session.query import propose_round
from assft_core.session.rounds import RoundState
from assft_core.session.workspace import base_model, model_name
from assft_core.train.reliability import trusted_words

PAGES = ["project", "query", "labels", "finetune", "viewer"]
# Text no page may show: set symbols, the old model names, engine state names in quotes.
FORBIDDEN = {
    "set-size symbol": re.compile(r"\|R\|"),
    "old model name": re.compile(r"round \d+ model|\bf_(\d|t)\b"),
    "quoted state name": re.compile(r"'(open|scored|proposed|approved|labelled|trained|evaluated)'"),
}


def _elements(node) -> Iterator:  # noqa: ANN001 - an AppTest tree node
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _elements(child)


def rendered_text(at) -> str:  # noqa: ANN001 - an AppTest
    """Every string the page sent to the browser (bodies, labels, help, options), one element a line."""
    texts = []
    for element in _elements(at._tree):
        proto = getattr(element, "proto", None)
        if proto is not None and element.type != "dataframe":  # a table's cells are bytes, not words
            fields = [v for _, v in proto.ListFields() if isinstance(v, str)]
            fields += [o for _, v in proto.ListFields() if not isinstance(v, (str, bytes)) and hasattr(v, "__iter__")
                       for o in v if isinstance(o, str)]
            texts.append(" ".join(fields))
    return "\n".join(texts)


def _fake_training(ctx: JobContext) -> dict:
    """A train job as the engine reports one: the SSFT progress message, then its metrics."""
    ctx.progress(1.0, f"SSFT step 3/3 ({trusted_words(1)})")
    return {"final_loss": 0.25, "mean_dice": 0.61234, "labelled": 2, "unlabelled": 2, "admitted": 1,
            "ssft_mode": "selective", "ssft_cases": [], "wall_s": {"supervised": 5.0}}


def _trained_round(project, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Round 0 taken to `trained` through the engine, with maps (for the Viewer) and a finished train job."""
    store_scores_with_maps(project)
    propose_round(project, "assft", 2)
    rounds.approve(project)
    label_with_oracle(project)
    monkeypatch.setitem(jobs._REGISTRY, "train", _fake_training)
    job_id = jobs.submit_job(project, "train", {"round": 0})
    assert jobs.run_job(project, job_id) is JobStatus.DONE
    rounds.mark_trained(project, "artifacts/models/round0")


def _evaluated_round(project, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """`_trained_round`, then the round's evaluation and f₀'s."""
    _trained_round(project, monkeypatch)
    rounds.mark_evaluated(project, EVAL_METRICS)
    path = baseline_path(project, base_model(project))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"overall": {"mean_dice": 0.3}, "per_site": {}, "evaluated_on": "test"}')


@pytest.mark.parametrize("page", PAGES)
def test_every_page_has_the_glossary_and_says_things_in_plain_words(run_page, oracle_project, monkeypatch, page) -> None:
    _evaluated_round(oracle_project, monkeypatch)
    at = run_page(page, oracle_project.folder)
    assert not at.exception, at.exception
    assert "Words used here" in [e.label for e in at.expander]
    text = rendered_text(at)
    assert "Round 0: " in text and "**R**: The unlabelled scans trusted for pseudo-labels" in text  # read it all
    if page == "finetune":  # the train job's own progress message, from the engine
        assert f"SSFT step 3/3 ({trusted_words(1)})" in text
    for what, pattern in FORBIDDEN.items():
        assert not pattern.search(text), f"{what} on the {page} page: {pattern.search(text).group(0)!r}"


def test_the_model_names_are_the_same_on_every_page(run_page, oracle_project, monkeypatch) -> None:
    _evaluated_round(oracle_project, monkeypatch)
    names = {page: rendered_text(run_page(page, oracle_project.folder)) for page in ("project", "finetune", "viewer")}
    assert model_name(1) == "model fine-tuned in round 0 (f₁)"
    assert all(model_name(1) in text for text in names.values())
    assert model_name(0) in names["project"] and model_name(0) in names["viewer"]


def test_query_page_does_not_send_the_user_to_itself(run_page, oracle_project) -> None:
    at = run_page("query", oracle_project.folder)
    banner = at.info[0].value
    assert "Next: score the pool below." in banner and "**Query** page" not in banner
    at = run_page("labels", oracle_project.folder)
    assert "Next: score the pool on the **Query** page." in at.info[0].value


def test_strategy_help_is_a_plain_sentence_with_the_formula_behind_an_expander(run_page, oracle_project) -> None:
    store_scores_with_maps(oracle_project)
    at = run_page("query", oracle_project.folder)
    assert any(c.value.startswith("Picks scans unlike the images the model learned from") for c in at.caption)
    (formula,) = [e for e in at.expander if e.label == "How it scores (formula)"]
    assert "δ(x|S)" in formula.markdown[0].value and "METHOD.md" in formula.markdown[0].value


@pytest.mark.parametrize("state", [RoundState.TRAINED, RoundState.EVALUATED])
def test_a_trained_round_can_be_fine_tuned_again_with_other_settings(run_page, oracle_project, monkeypatch,
                                                                     fake_jobs, state) -> None:
    (_evaluated_round if state is RoundState.EVALUATED else _trained_round)(oracle_project, monkeypatch)
    model = oracle_project.folder / "artifacts" / "models" / "round-000"
    model.mkdir(parents=True)
    (model / "model.pt").write_bytes(b"f1")
    at = run_page("finetune", oracle_project.folder)
    assert not at.exception, at.exception
    assert at.number_input(key="ft-sup").value == oracle_project.config.ssft.supervised_steps
    assert any("Round 0 is fine-tuned already" in i.value and "kept (moved aside, not deleted)" in i.value
               for i in at.info)
    assert at.button(key="train").label == "Fine-tune again" and not at.button(key="train").disabled
    at.number_input(key="ft-sup").set_value(7)
    at = at.button(key="train").click().run()
    assert not at.exception, at.exception
    info = rounds.current_round(oracle_project)
    assert info.state is RoundState.LABELLED and info.checkpoint is None and info.metrics == {}
    assert (model.parent / "round-000-earlier-1" / "model.pt").read_bytes() == b"f1" and not model.exists()
    (job,) = [j for j in jobs.list_jobs(oracle_project) if j.id in fake_jobs]
    assert job.kind == "train" and job.params["supervised_steps"] == 7
    assert any("round-000-earlier-1" in s.value for s in at.success)


def test_dice_has_three_decimals(run_page, oracle_project, monkeypatch) -> None:
    _evaluated_round(oracle_project, monkeypatch)
    at = run_page("finetune", oracle_project.folder)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Mean Dice"] == "0.612" and metrics["Test mean Dice"] == "0.600"


def test_the_glossary_defines_every_word_the_pages_use() -> None:
    from app.glossary import GLOSSARY

    terms = " | ".join(term for term, _ in GLOSSARY)
    for word in ("Dice", "HD95", "f₀", "f₁", "Round", "Budget", "Pick (query)", "DKD", "KG", "DIV", "ASD", "SSFT",
                 "Pseudo-label", "R |", "Retention recipe", "Foreground", "Spacing"):
        assert word in terms + " |", word
    assert all(meaning.endswith(".") and term for term, meaning in GLOSSARY)


@pytest.mark.parametrize("page", ["embedding", "compare"])
def test_embedding_and_compare_use_the_same_words(run_page, oracle_project, monkeypatch, page) -> None:
    _evaluated_round(oracle_project, monkeypatch)
    at = run_page(page, oracle_project.folder)
    assert not at.exception, at.exception
    assert "Words used here" in [e.label for e in at.expander]
    text = rendered_text(at)
    if page == "embedding":  # the map's caption names the model whose embeddings it shows
        assert model_name(0) in text
    for what, pattern in FORBIDDEN.items():
        assert not pattern.search(text), f"{what} on the {page} page: {pattern.search(text).group(0)!r}"
