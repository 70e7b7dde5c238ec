"""What a round changed: f_t → f_{t+1} test Dice, mean and per site, and which sites got worse.

Fine-tuning on a few scans of some sites can lower the others (METHOD.md §5–§6); users must see
it wherever a round's result appears (`assft train`, `assft status`, the Fine-tune and Project
pages), in plain words first. Only test-split evaluations are compared: the biased fallback
(new labels under the model that chose them) is not a before/after measure, and is said so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assft_core.session.evaluation import ON_TEST, baseline_metrics, dice_text
from assft_core.session.project import Project
from assft_core.session.rounds import RoundState, list_rounds
from assft_core.session.workspace import model_name, model_symbol

# A site whose mean Dice falls by more than this counts as worse (smaller changes are within the
# spread of seeds measured on the demo corpus, docs/benchmarks.md).
WORSE_BY = 0.01


@dataclass(frozen=True)
class SiteChange:
    """One site's test Dice before and after a round (None where the site was not evaluated)."""

    site: str
    before: float | None
    after: float | None

    @property
    def delta(self) -> float | None:
        """after − before, or None when either is missing."""
        return None if self.before is None or self.after is None else self.after - self.before


@dataclass(frozen=True)
class RoundChange:
    """f_t → f_{t+1} of one evaluated round.

    Attributes:
        round: t (the round whose training made f_{t+1}).
        before / after: model symbols ("f₀", "f₁", ...; `workspace.model_symbol`), the table's columns.
        mean_before / mean_after: mean foreground test Dice (None when not evaluated on test).
        sites: per-site change, sorted by site.
        comparable: both models were evaluated on the same labelled test split.
        note: why the change cannot be shown, when not comparable.
    """

    round: int
    before: str
    after: str
    mean_before: float | None
    mean_after: float | None
    sites: list[SiteChange] = field(default_factory=list)
    comparable: bool = True
    note: str = ""

    @property
    def mean_delta(self) -> float | None:
        """mean_after − mean_before, or None."""
        return None if self.mean_before is None or self.mean_after is None else self.mean_after - self.mean_before

    @property
    def worse_sites(self) -> list[SiteChange]:
        """Sites whose Dice fell by more than `WORSE_BY`."""
        return [s for s in self.sites if s.delta is not None and s.delta < -WORSE_BY]

    def sentences(self) -> list[str]:
        """The change in plain words: the mean first, then every site that got worse."""
        if not self.comparable:
            return [self.note]
        out = [
            f"Round {self.round}: mean Dice {dice_text(self.mean_before)} → {dice_text(self.mean_after)} "
            f"({_signed(self.mean_delta)}), from the {model_name(self.round)} to the {model_name(self.round + 1)}."
        ]
        for s in self.worse_sites:
            out.append(f"Site {s.site} got worse: Dice {dice_text(s.before)} → {dice_text(s.after)} "
                       f"({_signed(s.delta)}).")
        if not self.worse_sites and self.sites:
            out.append(f"No site got worse by more than {WORSE_BY:.2f}.")
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Table rows: "site" ("mean" first), before, after, "change" (JSON-ready)."""
        rows = [{"site": "mean", self.before: self.mean_before, self.after: self.mean_after, "change": self.mean_delta}]
        rows += [{"site": s.site, self.before: s.before, self.after: s.after, "change": s.delta} for s in self.sites]
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (stored with a training job's metrics)."""
        return {
            "round": self.round, "before": self.before, "after": self.after, "comparable": self.comparable,
            "mean_before": self.mean_before, "mean_after": self.mean_after, "mean_delta": self.mean_delta,
            "per_site": {s.site: {"before": s.before, "after": s.after, "delta": s.delta} for s in self.sites},
            "worse_sites": [s.site for s in self.worse_sites], "sentences": self.sentences(),
        }


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _site_means(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        str(site): float(summary["mean_dice"])
        for site, summary in (metrics.get("per_site") or {}).items()
        if isinstance(summary, Mapping) and summary.get("mean_dice") is not None
    }


def compare_evaluations(
    round_idx: int, before: Mapping[str, Any] | None, after: Mapping[str, Any]
) -> RoundChange:
    """The change between two stored evaluations (`session.evaluation.evaluate_model` dicts)."""
    names = (model_symbol(round_idx), model_symbol(round_idx + 1))
    if before is None:
        fix = "evaluate it (`assft evaluate --baseline`, or the Project page)" if round_idx == 0 else "evaluate it"
        return RoundChange(
            round_idx, *names, None, _mean(after) if after.get("evaluated_on") == ON_TEST else None, comparable=False,
            note=f"Round {round_idx}: the {model_name(round_idx)} has no stored test evaluation, so the change per site cannot be "
            f"shown yet: {fix}.",
        )
    if before.get("evaluated_on") != ON_TEST or after.get("evaluated_on") != ON_TEST:
        return RoundChange(
            round_idx, *names, None, None, comparable=False,
            note=f"Round {round_idx}: no before/after on a labelled test split, so the change per site cannot be "
            "shown (the biased fallback scores only the new labels).",
        )
    b, a = _site_means(before), _site_means(after)
    sites = [SiteChange(s, b.get(s), a.get(s)) for s in sorted(set(b) | set(a))]
    return RoundChange(round_idx, *names, _mean(before), _mean(after), sites)


def _mean(metrics: Mapping[str, Any]) -> float | None:
    value = (metrics.get("overall") or {}).get("mean_dice", metrics.get("mean_dice"))
    return None if value is None else float(value)


def round_changes(project: Project) -> list[RoundChange]:
    """f_t → f_{t+1} of every evaluated round, oldest first (f_0's stored evaluation before round 0)."""
    evaluated = [info for info in list_rounds(project) if info.state is RoundState.EVALUATED]
    if not evaluated:
        return []  # nothing to compare: f_0's evaluation is not even looked up
    previous: Mapping[str, Any] | None = baseline_metrics(project)
    out: list[RoundChange] = []
    for info in evaluated:
        out.append(compare_evaluations(info.idx, previous, info.metrics))
        previous = info.metrics
    return out


def format_change(change: RoundChange, *, indent: str = "  ") -> str:
    """A terminal table of one round's change, then its sentences."""
    if not change.comparable:
        shown = f"{indent}mean Dice of {change.after}: {dice_text(change.mean_after)}\n" if change.mean_after is not None else ""
        return shown + indent + change.note
    lines = [f"{indent}{'site':<10} {change.before:>7} {change.after:>7} {'change':>7}"]
    for row in change.rows():
        before, after, delta = row[change.before], row[change.after], row["change"]
        cells = [f"{dice_text(v):>7}" for v in (before, after)]
        lines.append(f"{indent}{row['site']:<10} {cells[0]} {cells[1]} {_signed(delta):>7}")
    return "\n".join([*lines, *(indent + s for s in change.sentences())])
