"""Pure presentation functions, checked against hand-counted and hand-written expectations."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from app.presenters import (
    HistoryPoint,
    dataset_summary,
    describe_pick,
    fmt_number,
    format_seconds,
    pick_numbers,
    read_progress_events,
    round_history,
)
from assft_core.session.pick_words import pick_sentence
from assft_core.session.rounds import RoundInfo, RoundState


def test_dataset_summary_counts_by_site() -> None:
    cases = pd.DataFrame(
        [
            ("a1", "A", "pool", True, True),
            ("a2", "A", "pool", True, False),
            ("a3", "A", "test", True, True),
            ("b1", "B", "pool", False, False),  # unusable pool case: not unlabelled, but unusable
            ("b2", "B", "source_train", True, True),  # other split: "other", not test or pool
        ],
        columns=["case_id", "site", "split", "usable", "labelled"],
    )
    table = dataset_summary(cases)
    assert list(table.index) == ["A", "B", "all sites"]
    assert list(table.columns) == ["labelled", "unlabelled", "test", "other", "unusable", "total"]
    assert table.loc["A"].tolist() == [1, 1, 1, 0, 0, 3]
    assert table.loc["B"].tolist() == [0, 0, 0, 1, 1, 2]
    assert table.loc["all sites"].tolist() == [1, 1, 1, 1, 1, 5]


def test_describe_pick_states_every_term_with_its_numbers() -> None:
    lines = describe_pick(
        {"criterion": "δ · (λ k̂ + (1 − λ) â)", "score": 0.4321, "kg": 1.5, "kg_rank": 0.8, "asd": 0.25,
         "asd_rank": 0.6, "div": 0.12, "delta": 0.75, "nearest_labelled_id": "p0", "unavailable": [], "note": None}
    )
    text = "\n".join(lines)
    assert "= 0.432" in lines[0]
    assert "KG = 1.500 (k̂ = 0.80, percentile 80 of the unlabelled cases)" in text
    assert "ASD = 0.250 (â = 0.60, percentile 60" in text
    assert "DIV = 0.12 cosine distance" in text and "δ = 0.75" in text
    assert "**Nearest labelled case**: p0." in text


def test_describe_pick_keeps_small_distances_readable() -> None:
    text = "\n".join(describe_pick({"score": 0.5, "div": 4.68e-05, "delta": 0.83}))
    assert "DIV = 4.68e-05 cosine distance" in text  # not rounded to 0.000 beside δ = 0.83


def test_describe_pick_says_what_is_unavailable_and_never_guesses() -> None:
    note = "no segmentation head for the target classes: ASD unavailable (â ≡ 1)"
    lines = describe_pick({"score": None, "kg": 1.0, "kg_rank": 1.0, "asd": None, "asd_rank": 1.0, "div": None,
                           "delta": 1.0, "nearest_labelled_id": None, "unavailable": [note]})
    text = "\n".join(lines)
    assert "= n/a" in lines[0]
    assert "Segmentation difficulty" not in text  # no ASD number is invented
    assert "Diversity**: not used" in text and "none yet" in text
    assert f"Unavailable: {note}." in text


def test_pick_numbers_row() -> None:
    row = pick_numbers(2, "p3", "approved", {"score": 0.5, "kg": 1.2, "nearest_labelled_id": None})
    assert row == {"rank": 2, "case": "p3", "status": "approved", "score": 0.5, "KG": 1.2, "k̂": None,
                   "ASD": None, "â": None, "DIV": None, "δ": None, "nearest labelled or picked": ""}


def _round(idx: int, state: RoundState, metrics: dict) -> RoundInfo:
    return RoundInfo(idx, state, {}, None, None, metrics)


def test_round_history_puts_f0_first_then_each_evaluated_round() -> None:
    rounds = [
        _round(1, RoundState.EVALUATED, {"overall": {"mean_dice": 0.7}, "labelled": 4, "evaluated_on": "new_labels_biased",
                                         "per_site": {"A": {"mean_dice": 0.8}, "B": {"mean_dice": None}}}),
        _round(0, RoundState.EVALUATED, {"overall": {"mean_dice": 0.5}, "labelled": 2,
                                         "per_site": {"A": {"mean_dice": 0.4}}}),
        _round(2, RoundState.LABELLED, {}),
    ]
    baseline = {"overall": {"mean_dice": 0.2}, "per_site": {}, "evaluated_on": "test"}
    assert round_history(rounds, baseline) == [
        HistoryPoint(0, 0.2, {}, 0, "test"),
        HistoryPoint(1, 0.5, {"A": 0.4}, 2, "test"),
        HistoryPoint(2, 0.7, {"A": 0.8}, 4, "new_labels_biased"),
    ]
    assert [p.model_round for p in round_history(rounds, None)] == [1, 2]


def test_read_progress_events_skips_a_cut_line(tmp_path: Path) -> None:
    assert read_progress_events(tmp_path) == []
    events = [{"step": 1, "loss": 0.9, "lr": 1e-3}, {"step": 2, "loss": 0.8, "lr": 1e-3}]
    (tmp_path / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"step": 3, "lo')
    assert read_progress_events(tmp_path) == events


@pytest.mark.parametrize(("value", "text"), [(0.12345, "0.123"), (2, "2.000"), (None, "n/a"),
                                           (float("nan"), "n/a"), ("x", "n/a"), (True, "n/a")])
def test_fmt_number(value: object, text: str) -> None:
    assert fmt_number(value) == text


@pytest.mark.parametrize(("seconds", "text"), [(None, "–"), (4.4, "4 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_format_seconds(seconds: float | None, text: str) -> None:
    assert format_seconds(seconds) == text


def test_pick_sentence_is_plain_words_naming_the_case_it_was_measured_against() -> None:
    e = {"criterion": "δ · (λ k̂ + (1 − λ) â)", "kg": 1.5, "kg_rank": 0.8, "asd": 0.25, "asd_rank": 0.6,
         "div": 0.12, "delta": 0.75, "nearest_labelled_id": None, "nearest_id": "p1", "nearest_kind": "picked"}
    text = pick_sentence("p3", "assft", e)
    assert text.startswith("p3 was picked because the model is less sure of its outline here than on 60 %")
    assert "than 80 % of the unlabelled scans" in text and "p1 (picked earlier this round)" in text
    assert "than on any other unlabelled scan" in pick_sentence("p3", "assft", {**e, "asd_rank": 1.0})
    assert not any(symbol in text for symbol in ("k̂", "â", "δ", "KG", "ASD", "DIV"))
    assert "Nearest labelled or already picked case**: p1 (picked earlier" in "\n".join(describe_pick(e))
    # DKD alone speaks of the training data and variety only; random says it is random.
    assert "outline" not in pick_sentence("p3", "dkd", {**e, "criterion": "DKD = k̂ · δ"})
    assert "at random" in pick_sentence("p3", "random", e)
    # A term the model could not compute (KG without source statistics, ASD without a head) is
    # said not to count, never ranked: its rank is 1 for every case.
    no_stats = pick_sentence("p3", "assft", {**e, "kg": 1.0, "kg_rank": 1.0, "unavailable": [
        "no source statistics in the checkpoint: KG ≡ 1 (DKD reduces to diversity)"]})
    assert "learned from, so how unlike them the scan looks did not count" in no_stats and "any other" not in no_stats
    no_head = pick_sentence("p3", "assft", {**e, "asd": float("nan"), "asd_rank": 1.0})
    assert "doubt about the outline did not count" in no_head and "less sure" not in no_head
    # An older explanation without nearest_id names the nearest labelled case.
    assert "p0 (already labelled)" in pick_sentence("p3", "assft", {**e, "nearest_id": None, "nearest_labelled_id": "p0"})
