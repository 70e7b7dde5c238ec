"""Which unlabelled cases join the SSFT phase, and why (ASSFT, METHOD.md §4).

For every `u ∈ U \\ L`: confidence `c(u)` (mean of `max_k p_k` over the ASD ROI, a column of the
scoring pass of `f_t^sup`), semantic distance `s(u) = min_{l∈L} (1 − cos(z_t(u), z_t(l)))` and
reliability `r(u) = ĉ(u) · (1 − ŝ(u))`, hats being percentile ranks within `U \\ L`. A mode picks
`R` from these values; every mode shares `reliability_report`, so the ablations differ only in
their selection score:

    selective        top ρ by r                   (default)
    confidence_only  top ρ by ĉ
    distance_only    top ρ by 1 − ŝ               (nearest to L first)
    all              every unlabelled case        (naive self-training; ρ and c_min unused)
    none             no case                      (supervised only)

Rounding: `|R| = ceil(ρ · |U \\ L|)` (so any ρ > 0 admits at least one case of a non-empty pool;
with the 2–8 unlabelled cases of an early round, `round` would admit none at ρ < 1/(2n)). Ties at
the cut go to the higher confidence, then to the earlier case. The optional floor `c ≥ c_min`
then removes selected cases below it (without replacing them); it does not apply to `all`.

The `ReliabilityReport` records, per case, c, s, r, their ranks, whether it was selected and
admitted and why, the kept-voxel fraction of its pseudo-label, and the distributions of c, s and r
over `U \\ L`, with warnings; it is JSON-serialisable for the store and the dashboard.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assft_core.config import SSFTConfig, SSFTMode
from assft_core.errors import StateError
from assft_core.fsutil import atomic_write_json
from assft_core.query.metrics import cosine_distance_to_set, percentile_rank
from assft_core.train.pseudo import PseudoLabelStats

REPORT_FORMAT = "assft-reliability-report/1"
# Float fields of a case that JSON stores as null when not finite.
_FLOAT_FIELDS = {"confidence", "distance", "reliability", "confidence_rank", "distance_rank", "selection_score"}

# Name of each ranking mode's selection score, as shown in reasons (`all` and `none` rank nothing:
# their reasons say so without a score).
_SCORE_NAMES = {
    SSFTMode.SELECTIVE: "reliability r = ĉ·(1 − ŝ)",
    SSFTMode.CONFIDENCE_ONLY: "confidence rank ĉ",
    SSFTMode.DISTANCE_ONLY: "closeness to L, 1 − ŝ",
}


def trusted_words(n: int) -> str:
    """The size of R in plain words first: "19 unlabelled scans trusted for pseudo-labels (R)"."""
    if n == 0:
        return "no unlabelled scan trusted for pseudo-labels (R is empty)"
    return f"{n} unlabelled scan{'' if n == 1 else 's'} trusted for pseudo-labels (R)"


def admitted_count(rho: float, n: int) -> int:
    """`ceil(ρ · n)` clipped to [0, n]: how many of `n` unlabelled cases the top-ρ rule takes.

    A tolerance of 1e-9 keeps float error from adding a case (0.3 · 10 is 3.0000000000000004).

    Raises:
        ValueError: ρ outside [0, 1] or n < 0.
    """
    if not 0.0 <= rho <= 1.0 or n < 0:
        raise ValueError(f"SSFTConfig.rho must be in [0, 1] (got {rho}) and n ≥ 0 (got {n})")
    return min(n, max(0, math.ceil(rho * n - 1e-9)))


def semantic_distance(
    z_unlabelled: np.ndarray, z_labelled: np.ndarray, labelled_ids: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """`s(u) = min_{l∈L} (1 − cos(z_t(u), z_t(l)))` and the nearest labelled case (METHOD.md §4).

    Args:
        z_unlabelled: (N, E) embeddings z_t of U \\ L from `f_t^sup`'s encoder.
        z_labelled: (M, E) embeddings z_t of L, M ≥ 1.
        labelled_ids: the M labelled case ids, in `z_labelled` order.

    Returns:
        (N,) float64 s in [0, 2] and the N nearest labelled ids.

    Raises:
        ValueError: L is empty.
    """
    if len(z_unlabelled) == 0:
        return np.zeros(0), []
    dist, nearest = cosine_distance_to_set(z_unlabelled, z_labelled)
    return dist, [labelled_ids[i] for i in nearest]


@dataclass
class Distribution:
    """Five-number summary of one score over U \\ L (`np.percentile`, linear interpolation)."""

    n: int
    min: float
    q1: float
    median: float
    q3: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> Distribution | None:
        """The summary of the finite `values`; None when there are none."""
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return None
        q = np.percentile(v, [0, 25, 50, 75, 100])
        return cls(int(v.size), *(float(x) for x in q))


@dataclass
class CaseReliability:
    """Why one unlabelled case did or did not join the SSFT phase.

    Attributes:
        case_id: the case.
        site: its site (per-site reading of the report).
        confidence: c, mean of `max_k p_k` over the ASD ROI.
        distance: s, cosine distance of z_t to the nearest labelled case.
        reliability: r = ĉ · (1 − ŝ).
        confidence_rank: ĉ, percentile rank of c within U \\ L, in (0, 1].
        distance_rank: ŝ, percentile rank of s within U \\ L, in (0, 1].
        selection_score: the mode's score (r, ĉ, 1 − ŝ; c for `all` and `none`).
        order: 1-based position by the mode's score (ties: higher c first).
        nearest_labelled: id of the labelled case nearest in z_t.
        selected: chosen by the mode's rule (top ρ, c_min floor).
        admitted: selected and its pseudo-label keeps at least one voxel: trained on.
        reason: the rule that decided, in plain words.
        kept_fraction: fraction of its pseudo-label's voxels kept (`max_k p_k ≥ τ_v`); None when
            no pseudo-label was made.
        kept_accuracy: voxel accuracy of the kept voxels against a reference label (demo /
            benchmark only; never used for training); None without one.
        kept_voxels: kept voxels of the pseudo-label (None without one).
        voxels: voxels of the grid (None without a pseudo-label).
        compared_voxels / correct_voxels: kept voxels with a reference value, and those equal to
            it (None without a reference).
    """

    case_id: str
    site: str
    confidence: float
    distance: float
    reliability: float
    confidence_rank: float
    distance_rank: float
    selection_score: float
    order: int
    nearest_labelled: str
    selected: bool
    admitted: bool
    reason: str
    kept_fraction: float | None = None
    kept_accuracy: float | None = None
    kept_voxels: int | None = None
    voxels: int | None = None
    compared_voxels: int | None = None
    correct_voxels: int | None = None


@dataclass
class ReliabilityReport:
    """The SSFT selection of one round: per-case decisions, distributions and warnings.

    Attributes:
        mode: the SSFT mode.
        rho / c_min / tau_v: the settings used (METHOD.md §4).
        n_selectable: ceil(ρ · |U \\ L|), the size of the top-ρ cut (|U \\ L| for `all`, 0 for `none`).
        labelled_ids: L, the cases z_t distances are measured to.
        cases: one entry per unlabelled case, in the order given.
        distributions: "confidence", "distance", "reliability" -> five-number summary over U \\ L
            (None when U \\ L is empty).
        warnings: what a user must know (|R| < 2, empty R, all-ignored pseudo-labels).
        notes: plain information (e.g. mode `none` made no pseudo-labels).
        scoring_s: wall time of the scoring pass and pseudo-labels in seconds.
    """

    mode: SSFTMode
    rho: float
    c_min: float | None
    tau_v: float
    n_selectable: int
    labelled_ids: list[str]
    cases: list[CaseReliability] = field(default_factory=list)
    distributions: dict[str, Distribution | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scoring_s: float = 0.0

    @property
    def admitted_ids(self) -> list[str]:
        """Ids of R, the cases trained on with their pseudo-labels, in report order."""
        return [c.case_id for c in self.cases if c.admitted]

    @property
    def unlabelled_ids(self) -> list[str]:
        """Ids of every unlabelled case considered."""
        return [c.case_id for c in self.cases]

    @property
    def trains_on_labelled_only(self) -> bool:
        """True when the SSFT phase has no pseudo-labelled case (R empty)."""
        return not self.admitted_ids

    def pseudo_summary(self, admitted_only: bool = True, site: str | None = None) -> dict[str, float | int | None]:
        """Voxel-weighted pseudo-label totals over R (or over every unlabelled case), optionally of
        one site only.

        Returns:
            {"cases", "voxels", "kept_voxels", "kept_fraction", "kept_accuracy"}; fractions are
            None when nothing was counted, accuracy None without reference labels.
        """
        rows = [
            c for c in self.cases
            if c.voxels is not None and (c.admitted or not admitted_only) and (site is None or c.site == site)
        ]
        voxels = sum(int(c.voxels or 0) for c in rows)
        kept = sum(int(c.kept_voxels or 0) for c in rows)
        correct = sum(int(c.correct_voxels or 0) for c in rows)
        compared = sum(int(c.compared_voxels or 0) for c in rows)
        return {
            "cases": len(rows),
            "voxels": voxels,
            "kept_voxels": kept,
            "kept_fraction": kept / voxels if voxels else None,
            "kept_accuracy": correct / compared if compared else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN and ±inf become None)."""
        data = asdict(self)
        data["mode"] = self.mode.value
        data["format"] = REPORT_FORMAT
        data["pseudo_summary"] = {"admitted": self.pseudo_summary(True), "all_unlabelled": self.pseudo_summary(False)}
        data["pseudo_per_site"] = {
            site: {"admitted": self.pseudo_summary(True, site), "all_unlabelled": self.pseudo_summary(False, site)}
            for site in sorted({c.site for c in self.cases})
        }
        return _finite(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReliabilityReport:
        """Inverse of `to_dict`.

        Raises:
            StateError: not a reliability report of this format.
        """
        if data.get("format") != REPORT_FORMAT:
            raise StateError(f"not an SSFT reliability report (format {REPORT_FORMAT!r} expected)")
        nan = float("nan")
        cases = [
            CaseReliability(**{k: (nan if v is None and k in _FLOAT_FIELDS else v) for k, v in c.items()})
            for c in data["cases"]
        ]
        dists = {k: (Distribution(**v) if v is not None else None) for k, v in data["distributions"].items()}
        return cls(
            mode=SSFTMode(data["mode"]),
            rho=float(data["rho"]),
            c_min=data["c_min"],
            tau_v=float(data["tau_v"]),
            n_selectable=int(data["n_selectable"]),
            labelled_ids=list(data["labelled_ids"]),
            cases=cases,
            distributions=dists,
            warnings=list(data["warnings"]),
            notes=list(data["notes"]),
            scoring_s=float(data["scoring_s"]),
        )

    def save(self, path: Path) -> Path:
        """Write the report as JSON (temp-then-rename); returns `path`."""
        return atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> ReliabilityReport:
        """Read a report written by `save`.

        Raises:
            StateError: the file is missing, unreadable or not a report.
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"{path}: no readable SSFT reliability report ({exc}).") from None
        try:
            return cls.from_dict(data)
        except StateError as exc:
            raise StateError(f"{path}: {exc}") from None


def reliability_report(
    case_ids: Sequence[str],
    confidence: np.ndarray,
    distance: np.ndarray,
    cfg: SSFTConfig,
    *,
    labelled_ids: Sequence[str] = (),
    nearest_labelled: Sequence[str] | None = None,
    sites: Sequence[str] | None = None,
    pseudo_labels: Mapping[str, PseudoLabelStats] | None = None,
) -> ReliabilityReport:
    """Select R from c and s under `cfg.mode` and explain every decision (ASSFT, METHOD.md §4).

    Args:
        case_ids: the N unlabelled cases U \\ L (test cases never belong here).
        confidence: (N,) c per case, finite.
        distance: (N,) s per case, finite.
        cfg: mode, ρ, c_min, τ_v.
        labelled_ids: L (recorded in the report).
        nearest_labelled: (N,) nearest labelled id per case (recorded).
        sites: (N,) site per case (recorded).
        pseudo_labels: case id -> its pseudo-label's counts; a selected case whose pseudo-label
            keeps no voxel is not admitted. Without it, admitted = selected.

    Returns:
        The report; `admitted_ids` is R.

    Raises:
        ValueError: mismatched lengths, non-finite c or s, or ρ outside [0, 1].
    """
    ids = list(case_ids)
    n = len(ids)
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    s = np.asarray(distance, dtype=np.float64).reshape(-1)
    if c.shape != (n,) or s.shape != (n,):
        raise ValueError(f"{n} case ids but {c.size} confidences and {s.size} distances")
    if not (np.isfinite(c).all() and np.isfinite(s).all()):
        bad = [ids[i] for i in np.flatnonzero(~(np.isfinite(c) & np.isfinite(s)))]
        raise ValueError(f"confidence or distance is not finite for {bad[:5]}")
    mode = SSFTMode(cfg.mode)
    c_rank, s_rank = percentile_rank(c), percentile_rank(s)
    r = c_rank * (1.0 - s_rank)
    score = {
        SSFTMode.SELECTIVE: r,
        SSFTMode.CONFIDENCE_ONLY: c_rank,
        SSFTMode.DISTANCE_ONLY: 1.0 - s_rank,
        SSFTMode.ALL: c,
        SSFTMode.NONE: c,
    }[mode]
    # Best first; ties go to the higher confidence, then to the earlier case.
    ranking = np.lexsort((np.arange(n), -c, -score))
    order = np.empty(n, dtype=np.int64)
    order[ranking] = np.arange(1, n + 1)
    n_cut = {SSFTMode.ALL: n, SSFTMode.NONE: 0}.get(mode, admitted_count(cfg.rho, n))
    floor = cfg.c_min if mode not in (SSFTMode.ALL, SSFTMode.NONE) else None

    report = ReliabilityReport(
        mode=mode,
        rho=float(cfg.rho),
        c_min=cfg.c_min,
        tau_v=float(cfg.tau_v),
        n_selectable=n_cut,
        labelled_ids=list(labelled_ids),
        distributions={"confidence": Distribution.of(c), "distance": Distribution.of(s), "reliability": Distribution.of(r)},
    )
    for i, cid in enumerate(ids):
        in_cut = order[i] <= n_cut
        reason = _reason(mode, int(order[i]), n, n_cut, cfg.rho)
        selected = bool(in_cut)
        if in_cut and floor is not None and c[i] < floor:
            selected = False
            reason += f"; but confidence {c[i]:.3f} < c_min {floor}"
        pseudo = pseudo_labels.get(cid) if pseudo_labels is not None else None
        admitted = selected and (pseudo is None or pseudo.n_kept > 0)
        if selected and not admitted:
            reason += f"; but every pseudo-label voxel has max_k p_k < τ_v = {cfg.tau_v}: left out"
        report.cases.append(
            CaseReliability(
                case_id=cid,
                site=sites[i] if sites is not None else "unknown",
                confidence=float(c[i]),
                distance=float(s[i]),
                reliability=float(r[i]),
                confidence_rank=float(c_rank[i]),
                distance_rank=float(s_rank[i]),
                selection_score=float(score[i]),
                order=int(order[i]),
                nearest_labelled=nearest_labelled[i] if nearest_labelled is not None else "",
                selected=selected,
                admitted=admitted,
                reason=reason,
                kept_fraction=pseudo.kept_fraction if pseudo is not None else None,
                kept_accuracy=pseudo.kept_accuracy if pseudo is not None else None,
                kept_voxels=pseudo.n_kept if pseudo is not None else None,
                voxels=pseudo.n_voxels if pseudo is not None else None,
                compared_voxels=pseudo.n_compared if pseudo is not None else None,
                correct_voxels=pseudo.n_correct if pseudo is not None else None,
            )
        )
    report.warnings, report.notes = _warnings(report)
    return report


def _reason(mode: SSFTMode, order: int, n: int, n_cut: int, rho: float) -> str:
    if mode is SSFTMode.NONE:
        return "mode none: supervised only, no unlabelled case is used"
    if mode is SSFTMode.ALL:
        return "mode all: every unlabelled case is used (naive self-training)"
    where = "within" if order <= n_cut else "outside"
    return f"{_SCORE_NAMES[mode]}: rank {order} of {n}, {where} the top {n_cut} (ρ = {rho}, ceil(ρ·{n}))"


def _warnings(report: ReliabilityReport) -> tuple[list[str], list[str]]:
    warnings: list[str] = []
    notes: list[str] = []
    if report.mode is SSFTMode.NONE:
        notes.append("mode none: no pseudo-labels; f_{t+1} is the supervised model f_t^sup.")
        return warnings, notes
    empty = [c.case_id for c in report.cases if c.selected and not c.admitted]
    if empty:
        warnings.append(
            f"every pseudo-label voxel was below τ_v = {report.tau_v} for {len(empty)} selected case(s) "
            f"({', '.join(empty[:5])}{' …' if len(empty) > 5 else ''}): left out of R."
        )
    n_r = len(report.admitted_ids)
    if not report.cases:
        warnings.append("no unlabelled case in the pool: the SSFT phase trains on the labelled cases (L) alone.")
    elif n_r == 0:
        warnings.append(
            f"{trusted_words(0)}: the SSFT phase trains on the labelled cases (L) alone. "
            "Check the distributions of c, s and r (and c_min / τ_v)."
        )
    elif n_r < 2:
        warnings.append(
            f"only {trusted_words(n_r)}, fewer than 2: a single pseudo-labelled scan joins the SSFT phase; "
            "check the distributions of c, s and r (and c_min)."
        )
    return warnings, notes


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
