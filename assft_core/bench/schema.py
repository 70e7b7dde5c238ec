"""The JSON schema of strategy-benchmark results (version 1), its validation, loading and summary.

One result file holds one benchmark run (ASSFT, METHOD.md §5): strategies compared at equal
budgets over several seeds, on a balanced and an unbalanced pool, plus the full-supervision
ceiling and the `f_0` floor. Layout (every key required unless marked optional):

    {
      "version": 1,
      "created_utc": "2026-11-29T23:00:00Z",
      "machine": {"platform": str, "python": str, "torch": str, "device": str, "cpu_count": int},
      "command": ["assft", "bench", ...],          # argv that produced the file
      "config": {...},                              # config.to_dict of the run (free-form)
      "note": str,                                  # optional, e.g. "fixture: made-up values"
      "records": [                                  # one per (pool, strategy, seed, round)
        {"pool": "balanced" | "unbalanced", "strategy": str, "seed": int, "round": int,
         "labelled_count": int, "mean_dice": float in [0, 1],
         "per_class_dice": {class name: float in [0, 1]},
         "per_site_dice": {site: float in [0, 1]},
         "hd95_mm": float >= 0 | null,              # mean over test cases found; null if none
         "hd95_missed_count": int,                  # (test case, class) pairs missed entirely
         "picks": [case id, ...],                   # cases picked in this round
         "wall_time_s": {phase: float >= 0},        # e.g. score, query, train, ssft, evaluate
         "annotation_effort": {                     # optional: labelling this round's picks from f_t's
           "changed_voxels": int, "changed_slices": int,  # pre-annotation to the oracle's label
           "preannotation_dice": float in [0, 1]}}
      ],
      "references": [                               # ceiling / floor, one per (pool, kind, seed)
        {"kind": "ceiling" | "floor", "pool": ..., "seed": int, "labelled_count": int,
         "mean_dice": ..., "per_class_dice": ..., "per_site_dice": ..., "hd95_mm": ...,
         "hd95_missed_count": ..., "wall_time_s": ...}
      ]
    }

Dice values are means over foreground classes of the held-out test set; HD95 in mm on the native
grid (METHOD.md §5).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from assft_core.errors import DataError
from assft_core.fsutil import atomic_write_text

SCHEMA_VERSION = 1
POOLS = ("balanced", "unbalanced")
REFERENCE_KINDS = ("ceiling", "floor")
_MAX_ERRORS_SHOWN = 10


@dataclass(frozen=True)
class Machine:
    """Where the benchmark ran (timings mean nothing without it)."""

    platform: str
    python: str
    torch: str
    device: str
    cpu_count: int


@dataclass(frozen=True)
class RoundRecord:
    """Test metrics of one strategy after one round, for one pool and seed (METHOD.md §5)."""

    pool: str
    strategy: str
    seed: int
    round: int
    labelled_count: int
    mean_dice: float
    per_class_dice: dict[str, float]
    per_site_dice: dict[str, float]
    hd95_mm: float | None
    hd95_missed_count: int
    picks: list[str]
    wall_time_s: dict[str, float]
    annotation_effort: dict[str, float] | None = None


@dataclass(frozen=True)
class ReferenceRecord:
    """Ceiling (all of the pool labelled) or floor (`f_0` as it is) for one pool and seed."""

    kind: str
    pool: str
    seed: int
    labelled_count: int
    mean_dice: float
    per_class_dice: dict[str, float]
    per_site_dice: dict[str, float]
    hd95_mm: float | None
    hd95_missed_count: int
    wall_time_s: dict[str, float]


@dataclass(frozen=True)
class BenchmarkResult:
    """One benchmark result file."""

    version: int
    created_utc: str
    machine: Machine
    command: list[str]
    config: dict[str, Any]
    records: list[RoundRecord]
    references: list[ReferenceRecord] = field(default_factory=list)
    note: str = ""


# --- validation -------------------------------------------------------------------------------

_TOP_KEYS = {"version", "created_utc", "machine", "command", "config", "records", "references"}
_OPTIONAL_TOP_KEYS = {"note"}
_METRIC_KEYS = {"labelled_count", "mean_dice", "per_class_dice", "per_site_dice", "hd95_mm", "hd95_missed_count", "wall_time_s"}
_RECORD_KEYS = _METRIC_KEYS | {"pool", "strategy", "seed", "round", "picks"}
_OPTIONAL_RECORD_KEYS = {"annotation_effort"}
_EFFORT_KEYS = {"changed_voxels", "changed_slices", "preannotation_dice"}
_REFERENCE_KEYS = _METRIC_KEYS | {"kind", "pool", "seed"}
_MACHINE_KEYS = {"platform", "python", "torch", "device", "cpu_count"}


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _check_keys(obj: Any, required: set[str], optional: set[str], where: str, errors: list[str]) -> bool:
    if not isinstance(obj, Mapping):
        errors.append(f"{where}: expected an object, got {type(obj).__name__}")
        return False
    missing, unknown = required - set(obj), set(obj) - required - optional
    if missing:
        errors.append(f"{where}: missing key(s) {sorted(missing)}")
    if unknown:
        errors.append(f"{where}: unknown key(s) {sorted(unknown)}")
    return True


def _check_score_map(obj: Any, where: str, errors: list[str]) -> None:
    if not isinstance(obj, Mapping):
        errors.append(f"{where}: expected an object of name -> Dice, got {type(obj).__name__}")
        return
    for name, value in obj.items():
        if not (_is_num(value) and 0.0 <= value <= 1.0):
            errors.append(f"{where}.{name}: expected a Dice in [0, 1], got {value!r}")


def _check_metrics(rec: Mapping[str, Any], where: str, errors: list[str]) -> None:
    if "pool" in rec and rec["pool"] not in POOLS:
        errors.append(f"{where}.pool: expected one of {list(POOLS)}, got {rec['pool']!r}")
    for key in ("seed", "labelled_count", "hd95_missed_count") + (("round",) if "round" in rec else ()):
        if key in rec and not (_is_int(rec[key]) and rec[key] >= 0):
            errors.append(f"{where}.{key}: expected an integer >= 0, got {rec[key]!r}")
    if "mean_dice" in rec and not (_is_num(rec["mean_dice"]) and 0.0 <= rec["mean_dice"] <= 1.0):
        errors.append(f"{where}.mean_dice: expected a Dice in [0, 1], got {rec['mean_dice']!r}")
    for key in ("per_class_dice", "per_site_dice"):
        if key in rec:
            _check_score_map(rec[key], f"{where}.{key}", errors)
    hd = rec.get("hd95_mm")
    if hd is not None and not (_is_num(hd) and hd >= 0.0):
        errors.append(f"{where}.hd95_mm: expected a distance >= 0 in mm or null, got {hd!r}")
    times = rec.get("wall_time_s", {})
    if not isinstance(times, Mapping):
        errors.append(f"{where}.wall_time_s: expected an object of phase -> seconds")
    else:
        for phase, seconds in times.items():
            if not (_is_num(seconds) and seconds >= 0.0):
                errors.append(f"{where}.wall_time_s.{phase}: expected seconds >= 0, got {seconds!r}")


def _check_effort(obj: Any, where: str, errors: list[str]) -> None:
    if not _check_keys(obj, _EFFORT_KEYS, set(), where, errors):
        return
    for key in ("changed_voxels", "changed_slices"):
        if key in obj and not (_is_int(obj[key]) and obj[key] >= 0):
            errors.append(f"{where}.{key}: expected an integer >= 0, got {obj[key]!r}")
    dice = obj.get("preannotation_dice")
    if "preannotation_dice" in obj and not (_is_num(dice) and 0.0 <= dice <= 1.0):
        errors.append(f"{where}.preannotation_dice: expected a Dice in [0, 1], got {dice!r}")


def validate_result(obj: Any) -> list[str]:
    """Every way `obj` (parsed JSON) departs from the result schema; empty when valid.

    Args:
        obj: the parsed content of a result file.

    Returns:
        One message per problem, each starting with the JSON path at fault
        (e.g. "records[3].mean_dice: expected a Dice in [0, 1], got 1.3").
    """
    errors: list[str] = []
    if not _check_keys(obj, _TOP_KEYS, _OPTIONAL_TOP_KEYS, "(top level)", errors):
        return errors
    if obj.get("version") != SCHEMA_VERSION:
        errors.append(f"version: expected {SCHEMA_VERSION}, got {obj.get('version')!r}")
    if "created_utc" in obj and not isinstance(obj["created_utc"], str):
        errors.append("created_utc: expected an ISO 8601 string")
    if "machine" in obj and _check_keys(obj["machine"], _MACHINE_KEYS, set(), "machine", errors):
        if "cpu_count" in obj["machine"] and not _is_int(obj["machine"]["cpu_count"]):
            errors.append("machine.cpu_count: expected an integer")
    command = obj.get("command")
    if "command" in obj and not (isinstance(command, list) and all(isinstance(a, str) for a in command)):
        errors.append("command: expected a list of strings (the argv)")
    if "config" in obj and not isinstance(obj["config"], Mapping):
        errors.append("config: expected an object")
    if "note" in obj and not isinstance(obj["note"], str):
        errors.append("note: expected a string")

    seen: set[tuple[Any, ...]] = set()
    records = obj.get("records", [])
    if not isinstance(records, list):
        errors.append("records: expected a list")
        records = []
    for i, rec in enumerate(records):
        where = f"records[{i}]"
        if not _check_keys(rec, _RECORD_KEYS, _OPTIONAL_RECORD_KEYS, where, errors):
            continue
        _check_metrics(rec, where, errors)
        if rec.get("annotation_effort") is not None:
            _check_effort(rec["annotation_effort"], f"{where}.annotation_effort", errors)
        if "strategy" in rec and not (isinstance(rec["strategy"], str) and rec["strategy"]):
            errors.append(f"{where}.strategy: expected a non-empty string")
        picks = rec.get("picks", [])
        if not (isinstance(picks, list) and all(isinstance(p, str) for p in picks)):
            errors.append(f"{where}.picks: expected a list of case ids")
        key = tuple(repr(rec.get(k)) for k in ("pool", "strategy", "seed", "round"))
        if key in seen:
            errors.append(f"{where}: duplicate (pool, strategy, seed, round) = ({', '.join(key)})")
        seen.add(key)

    references = obj.get("references", [])
    if not isinstance(references, list):
        errors.append("references: expected a list")
        references = []
    for i, ref in enumerate(references):
        where = f"references[{i}]"
        if not _check_keys(ref, _REFERENCE_KEYS, set(), where, errors):
            continue
        _check_metrics(ref, where, errors)
        if ref.get("kind") not in REFERENCE_KINDS:
            errors.append(f"{where}.kind: expected one of {list(REFERENCE_KINDS)}, got {ref.get('kind')!r}")
    return errors


# --- reading and writing ----------------------------------------------------------------------


def result_from_dict(obj: Mapping[str, Any]) -> BenchmarkResult:
    """Build a `BenchmarkResult` from parsed JSON that `validate_result` accepted."""
    return BenchmarkResult(
        version=int(obj["version"]),
        created_utc=obj["created_utc"],
        machine=Machine(**obj["machine"]),
        command=list(obj["command"]),
        config=dict(obj["config"]),
        records=[RoundRecord(**r) for r in obj["records"]],
        references=[ReferenceRecord(**r) for r in obj["references"]],
        note=obj.get("note", ""),
    )


def result_to_dict(result: BenchmarkResult) -> dict[str, Any]:
    """The JSON-ready dict of `result` (the inverse of `result_from_dict`)."""
    data = asdict(result)
    if not data["note"]:
        del data["note"]
    for rec in data["records"]:
        if rec["annotation_effort"] is None:  # optional: runs before effort was measured have none
            del rec["annotation_effort"]
    return data


def load_results(path: Path | str) -> BenchmarkResult:
    """Read and validate one benchmark result file.

    Args:
        path: a JSON file written by the benchmark (`write_result`).

    Returns:
        The parsed result.

    Raises:
        DataError: naming the file, if it is missing, not JSON, or breaks the schema (the first
            problems are listed with their JSON paths).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the benchmark result ({exc.strerror}). Fix: check the path.") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
            "Fix: regenerate the file with the benchmark, or repair it by hand."
        ) from None
    errors = validate_result(obj)
    if errors:
        shown = "\n  ".join(errors[:_MAX_ERRORS_SHOWN])
        more = f"\n  ... and {len(errors) - _MAX_ERRORS_SHOWN} more" if len(errors) > _MAX_ERRORS_SHOWN else ""
        raise DataError(
            f"{path}: not a benchmark result of schema version {SCHEMA_VERSION} "
            f"({len(errors)} problem(s)):\n  {shown}{more}\n"
            "Fix: regenerate the file with the benchmark; the schema is documented in assft_core/bench/schema.py."
        )
    return result_from_dict(obj)


def write_result(result: BenchmarkResult, path: Path | str) -> Path:
    """Write `result` as JSON, temp-then-rename; never over an existing file.

    Raises:
        DataError: if `path` exists already, or the result breaks the schema.
    """
    path = Path(path)
    if path.exists():
        raise DataError(f"{path}: exists already; results are never overwritten. Fix: choose a new file name.")
    data = result_to_dict(result)
    errors = validate_result(data)
    if errors:
        raise DataError(f"{path}: refusing to write an invalid result: {errors[:_MAX_ERRORS_SHOWN]}")
    return atomic_write_text(path, json.dumps(data, indent=1))


# --- summary ----------------------------------------------------------------------------------

SUMMARY_COLUMNS = ["pool", "strategy", "labelled_count", "n_seeds", "dice_mean", "dice_sd", "hd95_mean_mm", "hd95_sd_mm", "hd95_missed"]


def _as_list(results: BenchmarkResult | Iterable[BenchmarkResult]) -> list[BenchmarkResult]:
    return [results] if isinstance(results, BenchmarkResult) else list(results)


def _aggregate(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = frame.groupby(keys, sort=True)
    out = grouped.agg(
        n_seeds=("seed", "nunique"),
        dice_mean=("mean_dice", "mean"),
        dice_sd=("mean_dice", "std"),  # sample sd (ddof = 1): NaN with a single seed
        hd95_mean_mm=("hd95_mm", "mean"),  # NaN entries (every case missed) are skipped
        hd95_sd_mm=("hd95_mm", "std"),
        hd95_missed=("hd95_missed_count", "sum"),
    )
    return out.reset_index()


def summarise(results: BenchmarkResult | Iterable[BenchmarkResult]) -> pd.DataFrame:
    """Mean ± sd over seeds of every (pool, strategy, labelled count) in one or more results.

    Args:
        results: one result or several (e.g. one file per pool).

    Returns:
        Columns SUMMARY_COLUMNS, sorted by pool, strategy, labelled_count; `dice_sd` is the
        sample standard deviation over seeds (NaN with one seed); `hd95_missed` sums the missed
        counts over seeds.
    """
    rows = [asdict(r) for res in _as_list(results) for r in res.records]
    if not rows:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    frame = pd.DataFrame(rows)
    frame["hd95_mm"] = pd.to_numeric(frame["hd95_mm"], errors="coerce")
    return _aggregate(frame, ["pool", "strategy", "labelled_count"])[SUMMARY_COLUMNS]


def summarise_references(results: BenchmarkResult | Iterable[BenchmarkResult]) -> pd.DataFrame:
    """Mean ± sd over seeds of the ceiling and floor of each pool.

    Returns:
        Columns pool, kind, labelled_count, n_seeds, dice_mean, dice_sd, hd95_mean_mm,
        hd95_sd_mm, hd95_missed (labelled_count: the mean over seeds).
    """
    rows = [asdict(r) for res in _as_list(results) for r in res.references]
    columns = ["pool", "kind", "labelled_count"] + SUMMARY_COLUMNS[3:]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    frame["hd95_mm"] = pd.to_numeric(frame["hd95_mm"], errors="coerce")
    out = _aggregate(frame, ["pool", "kind"])
    out["labelled_count"] = frame.groupby(["pool", "kind"], sort=True)["labelled_count"].mean().to_numpy()
    return out[columns]
