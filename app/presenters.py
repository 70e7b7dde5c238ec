"""Pure presentation: store records and engine outputs turned into tables and plain words.

No Streamlit and no store access here, so every function is tested on hand-made inputs. Pages
fetch the records (engine calls), pass them through these functions and place the results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from assft_core.session.estimate import Estimate
from assft_core.session.pick_words import nearest_case
from assft_core.session.progress import read_progress_events  # noqa: F401 (the pages read it from here)
from assft_core.session.rounds import RoundInfo, RoundState

SUMMARY_COLUMNS = ["labelled", "unlabelled", "test", "other", "unusable", "total"]


def dataset_summary(cases: pd.DataFrame) -> pd.DataFrame:
    """Cases by site: labelled / unlabelled pool cases, test cases, other splits, unusable, total.

    Args:
        cases: `store_views.case_frame` output (site, split, usable, labelled per case).

    Returns:
        One row per site (sorted) plus an "all sites" row; columns `SUMMARY_COLUMNS`. Pool and
        test counts hold usable cases only; an unusable case counts in "unusable" whatever its
        split; usable cases of other splits (e.g. the model's source data) count in "other".
    """
    usable = cases["usable"].astype(bool)
    pool = usable & (cases["split"] == "pool")
    labelled = cases["labelled"].astype(bool)
    parts = pd.DataFrame(
        {
            "site": cases["site"],
            "labelled": (pool & labelled).astype(int),
            "unlabelled": (pool & ~labelled).astype(int),
            "test": (usable & (cases["split"] == "test")).astype(int),
            "other": (usable & ~cases["split"].isin(["pool", "test"])).astype(int),
            "unusable": (~usable).astype(int),
            "total": 1,
        }
    )
    table = parts.groupby("site", sort=True)[SUMMARY_COLUMNS].sum()
    table.loc["all sites"] = table.sum(axis=0)
    return table.astype(int)


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number for display with `digits` decimals ("n/a" for None, NaN or a non-number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _share(rank: float) -> str:
    """A percentile rank in (0, 1] in words: "percentile 80 of the unlabelled cases"."""
    return f"percentile {100.0 * float(rank):.0f} of the unlabelled cases"


def describe_pick(explanation: Mapping[str, Any]) -> list[str]:
    """Plain-words lines explaining one pick (ASSFT, METHOD.md §3: KG, ASD, diversity, ranks).

    Args:
        explanation: a stored pick explanation (`Pick.to_dict()` minus case_id): criterion,
            score, kg, kg_rank, asd, asd_rank, div, delta, nearest_labelled_id, unavailable, note.
            Missing keys or None values are reported as unavailable, never guessed.

    Returns:
        Markdown lines: what the score is, then one line per term, then notes.
    """
    e = dict(explanation)
    lines = [f"**Why**: {e.get('criterion') or 'strategy score'} = {fmt_number(e.get('score'))}."]
    if e.get("kg") is not None and e.get("kg_rank") is not None:
        lines.append(
            f"**Knowledge gap** KG = {fmt_number(e['kg'])} (k̂ = {fmt_number(e['kg_rank'], 2)}, {_share(e['kg_rank'])}): "
            "how far this scan's feature statistics sit from the pre-training data."
        )
    if e.get("asd") is not None and e.get("asd_rank") is not None:
        lines.append(
            f"**Segmentation difficulty** ASD = {fmt_number(e['asd'])} (â = {fmt_number(e['asd_rank'], 2)}, "
            f"{_share(e['asd_rank'])}): the model's uncertainty inside the predicted anatomy."
        )
    if e.get("div") is not None:
        lines.append(
            f"**Diversity** DIV = {float(e['div']):.3g} cosine distance to the nearest labelled or already "
            f"picked case (δ = {fmt_number(e.get('delta'), 2)} of the largest in the pool)."
        )
    else:
        lines.append("**Diversity**: not used for this pick (no labelled or picked case yet, or no embedding): δ = 1.")
    nearest, kind = nearest_case(e)
    if kind == "picked":
        lines.append(f"**Nearest labelled or already picked case**: {nearest} (picked earlier this round; "
                     "DIV is measured against it).")
    elif nearest and e.get("nearest_id"):
        lines.append(f"**Nearest labelled or already picked case**: {nearest} (labelled).")
    else:
        lines.append(f"**Nearest labelled case**: {nearest}." if nearest else "**Nearest labelled case**: none yet.")
    for note in e.get("unavailable") or []:
        lines.append(f"Unavailable: {note}.")
    if e.get("note"):
        lines.append(f"Note: {e['note']}.")
    return lines


# Explanation key -> column header of the picks table (METHOD.md §1–§3 symbols).
PICK_COLUMNS = {"score": "score", "kg": "KG", "kg_rank": "k̂", "asd": "ASD", "asd_rank": "â", "div": "DIV", "delta": "δ"}


def pick_numbers(rank: int, case_id: str, status: str, explanation: Mapping[str, Any]) -> dict[str, Any]:
    """One table row of a pick: rank, case, status, score and every term (None where unavailable)."""
    row: dict[str, Any] = {"rank": rank, "case": case_id, "status": status}
    row.update({header: explanation.get(key) for key, header in PICK_COLUMNS.items()})
    row["nearest labelled or picked"] = nearest_case(explanation)[0] or ""
    return row


@dataclass(frozen=True)
class HistoryPoint:
    """Test Dice of one model of the project (ASSFT, METHOD.md §5).

    Attributes:
        model_round: t of f_t: 0 for f_0 as it is, t + 1 for the model fine-tuned in round t.
        mean_dice: mean foreground Dice (None when the evaluation had no case).
        per_site: site -> mean Dice.
        labelled: pool cases labelled when the model was evaluated (None when not recorded).
        evaluated_on: "test", or "new_labels_biased" (no labelled test case: the round's new
            labels under the model that chose them; not a test-set result).
    """

    model_round: int
    mean_dice: float | None
    per_site: dict[str, float]
    labelled: int | None
    evaluated_on: str


def _history_point(model_round: int, metrics: Mapping[str, Any], labelled: int | None) -> HistoryPoint:
    per_site = {
        str(site): float(summary["mean_dice"])
        for site, summary in (metrics.get("per_site") or {}).items()
        if isinstance(summary, Mapping) and summary.get("mean_dice") is not None
    }
    mean = (metrics.get("overall") or {}).get("mean_dice")
    return HistoryPoint(model_round, None if mean is None else float(mean), per_site, labelled,
                        str(metrics.get("evaluated_on", "test")))


def round_history(rounds: Sequence[RoundInfo], baseline: Mapping[str, Any] | None) -> list[HistoryPoint]:
    """The project's evaluations as points, f_0 first (METHOD.md §5: mean and per-site Dice per round).

    Args:
        rounds: the project's rounds; `evaluated` ones carry the evaluation of the model they
            trained (`EvalReport.to_dict()`: "overall" and "per_site" with "mean_dice", plus
            "labelled" and "evaluated_on").
        baseline: f_0's stored evaluation (same format), or None when not computed.

    Returns:
        f_0 (when evaluated), then one point per evaluated round, in round order.
    """
    points = [] if baseline is None else [_history_point(0, baseline, 0)]
    for info in sorted(rounds, key=lambda r: r.idx):
        if info.state is RoundState.EVALUATED:
            labelled = info.metrics.get("labelled")
            points.append(_history_point(info.idx + 1, info.metrics, None if labelled is None else int(labelled)))
    return points


def format_seconds(seconds: float | None) -> str:
    """A duration for people: "42 s", "3 min 05 s", "1 h 02 min" ("–" for None)."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def describe_estimate(estimate: Estimate) -> tuple[str, str]:
    """An expected time in words: the headline and the breakdown per phase.

    Returns:
        ("about 2 min 10 s", "supervised 100 steps × 0.50 s (measured) · ... · start-up 5 s"); the
        headline says "(a first guess)" when no phase was measured in this project yet, "(partly
        measured)" when some were.
    """
    parts = [
        f"{p.phase} {p.units} {p.unit}{'s' if p.units != 1 else ''} × {p.per_unit_s:.2f} s ({p.basis})"
        for p in estimate.phases
    ]
    if estimate.fixed_s:
        parts.append(f"start-up about {format_seconds(estimate.fixed_s)} "
                     f"({'measured' if estimate.fixed_measured else 'guess'})")
    if estimate.measured:
        basis = "from this project's measured times"
    elif estimate.fixed_measured or any(p.measured for p in estimate.phases):
        basis = "partly measured, partly a first guess"
    else:
        basis = "a first guess: these steps have not run in this project yet"
    return f"about {format_seconds(estimate.total_s)} ({basis})", " · ".join(parts)
