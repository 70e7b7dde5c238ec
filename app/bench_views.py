"""Glue of the Compare page: where benchmark result files are found, reading uploads, the
mean ± sd tables (strategies × labelled counts per pool, with ceiling and floor rows), and the
open project's own learning curve beside them.

No Streamlit here: the page places what these functions return, and tests call them directly.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from app.presenters import HistoryPoint
from assft_core.bench.schema import BenchmarkResult, load_results
from assft_core.errors import DataError
from assft_core.session.evaluation import ON_TEST
from assft_core.session.paths import sanitize_filename
from assft_core.session.workspace import model_name, model_symbol

ROOT = Path(__file__).resolve().parent.parent
# Folders searched for result files, besides a project's `artifacts/benchmarks/`.
REPO_RESULTS = ROOT / "benchmarks"
PROJECT_RESULTS = ("artifacts", "benchmarks")


def result_files(folders: Iterable[Path]) -> list[Path]:
    """The benchmark result files under the given folders (recursively, missing folders skipped),
    newest first (then the largest: in a fresh checkout every file has the same time, and the
    biggest benchmark is the one to see first): JSON files holding a result's `version` and
    `records`, so a benchmark's own run, reference and config files and `assft bench cost`
    reports are not offered."""
    found: set[Path] = set()
    for folder in folders:
        if Path(folder).is_dir():
            found.update(p.resolve() for p in Path(folder).rglob("*.json") if p.is_file())
    results = [p for p in found if _looks_like_result(str(p), *_stamp(p))]
    return sorted(results, key=lambda p: (-p.stat().st_mtime_ns, -p.stat().st_size, str(p)))


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4096)
def _looks_like_result(path: str, mtime_ns: int, size: int) -> bool:
    """Cheap pre-check (cached per file version); `load_results` validates the chosen ones fully."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "version" in data and "records" in data


def load_upload(name: str, data: bytes) -> BenchmarkResult:
    """Validate and read an uploaded result file (the upload is written to a private temp folder).

    Args:
        name: the uploaded file's name (named in error messages).
        data: its bytes.

    Raises:
        DataError: naming the upload when it is not a valid result file (with the schema problems).
    """
    with tempfile.TemporaryDirectory(prefix="assft-upload-") as tmp:
        path = Path(tmp) / sanitize_filename(name)
        path.write_bytes(data)
        try:
            return load_results(path)
        except DataError as exc:
            raise DataError(str(exc).replace(str(path), f"uploaded file {name}")) from None


def mean_sd(mean: float, sd: float, n: int) -> str:
    """"0.604 ± 0.010 (3)" — mean ± sample sd over n seeds ("± n/a" with one seed)."""
    spread = f"{sd:.3f}" if isinstance(sd, float) and math.isfinite(sd) else "n/a"
    return f"{mean:.3f} ± {spread} ({n})"


def budget_table(summary: pd.DataFrame, references: pd.DataFrame, pool: str) -> pd.DataFrame:
    """Mean Dice ± sd over seeds of one pool: one row per strategy (then ceiling, floor), one
    column per labelled-case count (METHOD.md §5: strategies compared at equal budgets).

    Args:
        summary: `assft_core.bench.schema.summarise` output.
        references: `summarise_references` output.
        pool: "balanced" or "unbalanced".

    Returns:
        Cells "mean ± sd (seeds)", "" where a strategy has no result at that count; the reference
        rows put their value in a "reference" column with their labelled count.
    """
    part = summary[summary["pool"] == pool]
    table = pd.DataFrame(
        {
            str(count): {
                row.strategy: mean_sd(row.dice_mean, row.dice_sd, int(row.n_seeds))
                for row in part[part["labelled_count"] == count].itertuples()
            }
            for count in sorted(part["labelled_count"].unique())
        }
    )
    table.columns = [f"{c} labelled" for c in table.columns]
    refs = references[references["pool"] == pool]
    for row in refs.itertuples():
        table.loc[row.kind, "reference"] = f"{mean_sd(row.dice_mean, row.dice_sd, int(row.n_seeds))} at {row.labelled_count:g} labelled"
    table.index.name = "strategy"
    return table.fillna("")


PROJECT_CURVE_COLUMNS = ["model", "labelled_count", "dice_mean"]


@dataclass(frozen=True)
class ProjectCurve:
    """The open project's learning curve (ASSFT, METHOD.md §5), as the Compare page draws it.

    Attributes:
        points: columns `PROJECT_CURVE_COLUMNS`: model ("f₀", "f₁", ... `model_symbol`), pool cases labelled
            when it was evaluated (0 for f_0), its mean foreground test Dice; in model order.
        left_out: names (`model_name`) of models evaluated without a labelled test split (the biased fallback, not a
            test-set result, so not on the curve).
    """

    points: pd.DataFrame
    left_out: list[str]


def project_curve(history: Sequence[HistoryPoint]) -> ProjectCurve:
    """Mean test Dice against labelled scans, f_0 at 0, from the Project page's round history.

    Args:
        history: `app.presenters.round_history(list_rounds(project), baseline_metrics(project))`.

    Returns:
        The curve: test-split evaluations with a mean Dice and a labelled count only; the others
        are named in `left_out` when they are fallback evaluations (a model with no case to
        evaluate on, or no recorded count, is skipped silently: it has no point to draw).
    """
    on_test = [p for p in history if p.evaluated_on == ON_TEST]
    rows = [
        {"model": model_symbol(p.model_round), "labelled_count": p.labelled, "dice_mean": p.mean_dice}
        for p in sorted(on_test, key=lambda p: p.model_round)
        if p.mean_dice is not None and p.labelled is not None
    ]
    left_out = [model_name(p.model_round) for p in history if p.evaluated_on != ON_TEST]
    return ProjectCurve(pd.DataFrame(rows, columns=PROJECT_CURVE_COLUMNS), left_out)
