"""Plain words for a pick: why a case was chosen, in a sentence a clinician reads (METHOD.md §3).

Shared by the dashboard (Query page) and the CLI (`assft query`, `approve`, `swap`), so both
say the same thing. Pure functions of a pick's stored explanation; no store access.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def nearest_case(explanation: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The case a pick's diversity was measured against and its kind ("labelled" / "picked").

    The nearest case of S when the pick was made (`nearest_id`, `nearest_kind`); explanations
    stored before that was recorded name the nearest labelled case only.
    """
    if explanation.get("nearest_id"):
        return str(explanation["nearest_id"]), str(explanation.get("nearest_kind") or "labelled")
    nearest = explanation.get("nearest_labelled_id")
    return (str(nearest), "labelled") if nearest else (None, None)


def _than(rank: Any) -> str:
    """A percentile rank as "83 %" ("any other" at the top: the rank counts the case itself)."""
    share = 100.0 * float(rank)
    return "any other" if share >= 99.5 else f"{share:.0f} %"


def _share(rank: Any) -> str:
    than = _than(rank)
    return "any other unlabelled scan" if than == "any other" else f"{than} of the unlabelled scans"


def _known(value: Any) -> bool:
    """A stored metric that was computed (not None, not NaN)."""
    return value is not None and math.isfinite(float(value))


def pick_sentence(case_id: str, strategy: str, explanation: Mapping[str, Any]) -> str:
    """One sentence for clinicians on why a case was picked: no symbols, the terms its strategy uses.

    The terms come from the stored criterion (k̂: unlike the training data; â / ASD / entropy:
    the model unsure of its outline; δ / DIV: unlike the cases already chosen); the formula
    itself is `describe_pick`'s.

    Args:
        case_id: the pick.
        strategy: the strategy's registered name.
        explanation: the stored explanation (see `describe_pick`).
    """
    e = dict(explanation)
    if strategy == "random":
        return f"{case_id} was drawn at random (a baseline that ignores the scores)."
    criterion = str(e.get("criterion") or "")
    unavailable = " ".join(str(u) for u in e.get("unavailable") or ())
    reasons = []
    if "â" in criterion or "ASD" in criterion or "entropy" in criterion:
        if _known(e.get("asd")) and e.get("asd_rank") is not None:
            reasons.append("the model is less sure of its outline here than on " + _share(e["asd_rank"]))
        else:
            reasons.append("the model has no output for these structures yet, so its doubt about the outline did not count")
    if "k̂" in criterion:
        if "source statistics" not in unavailable and _known(e.get("kg")) and e.get("kg_rank") is not None:
            reasons.append("the scan looks less like the images the model learned from than " + _share(e["kg_rank"]))
        else:
            reasons.append("the model carries no record of the images it learned from, so how unlike them the "
                           "scan looks did not count")
    nearest, kind = nearest_case(e)
    uses_diversity = "δ" in criterion or "DIV" in criterion
    if uses_diversity and nearest:
        whose = "picked earlier this round" if kind == "picked" else "already labelled"
        reasons.append(f"it adds variety: even the most similar case already chosen, {nearest} ({whose}), "
                       "differs from it")
    elif uses_diversity:
        reasons.append("no case was labelled or chosen yet, so similarity to other cases did not count")
    if not reasons:
        return f"{case_id} was picked by {strategy}: {criterion or 'its score'} ranked it highest."
    text = reasons[0] if len(reasons) == 1 else ", ".join(reasons[:-1]) + ", and " + reasons[-1]
    return f"{case_id} was picked because {text}."
