"""What a round changed: f_t → f_{t+1} per site, and plain words for a site that got worse."""

from __future__ import annotations

import pytest

from assft_core.session.round_change import WORSE_BY, compare_evaluations, format_change


def _ev(mean: float, sites: dict[str, float], on: str = "test") -> dict:
    return {"overall": {"mean_dice": mean}, "mean_dice": mean, "evaluated_on": on,
            "per_site": {s: {"mean_dice": v} for s, v in sites.items()}}


def test_change_per_site_and_the_sites_that_got_worse() -> None:
    change = compare_evaluations(0, _ev(0.545, {"A": 0.58, "B": 0.25, "C": 0.69}), _ev(0.507, {"A": 0.43, "B": 0.52, "C": 0.685}))
    assert change.before == "f₀" and change.after == "f₁" and change.mean_delta == pytest.approx(-0.038)
    assert [s.site for s in change.worse_sites] == ["A"]  # C fell by 0.005 < WORSE_BY
    assert 0.005 < WORSE_BY
    sentences = change.sentences()
    assert sentences[0] == ("Round 0: mean Dice 0.545 → 0.507 (-0.038), from the pre-trained model (f₀) to the model "
                            "fine-tuned in round 0 (f₁).")
    assert sentences[1] == "Site A got worse: Dice 0.580 → 0.430 (-0.150)."
    assert len(sentences) == 2
    assert change.rows()[0]["site"] == "mean" and change.rows()[1] == {"site": "A", "f₀": 0.58, "f₁": 0.43, "change": pytest.approx(-0.15)}
    table = format_change(change)
    assert "A" in table and "-0.150" in table and "got worse" in table
    assert change.to_dict()["worse_sites"] == ["A"]


def test_no_worse_site_is_said_too() -> None:
    change = compare_evaluations(1, _ev(0.5, {"A": 0.5}), _ev(0.6, {"A": 0.6}))
    assert change.sentences()[-1].startswith("No site got worse")


def test_a_biased_evaluation_is_not_compared() -> None:
    change = compare_evaluations(0, _ev(0.5, {"A": 0.5}), _ev(0.6, {"A": 0.6}, on="new_labels_biased"))
    assert not change.comparable and "cannot be shown" in change.sentences()[0]
    missing = compare_evaluations(0, None, _ev(0.6, {"A": 0.6}))
    assert not missing.comparable and "assft evaluate --baseline" in missing.sentences()[0]
    # The new model's own mean still shows in the terminal table when f_0 has no evaluation.
    assert format_change(missing).splitlines()[0] == "  mean Dice of f₁: 0.600"
