"""The result files of a strategy benchmark: schema JSON, CSV, and the learning-curve figure.

From the finished pieces in a `RunStore` (ASSFT, METHOD.md §5):

    strategies.json / .csv            the strategy comparison (schema v1: the Compare page reads it)
    strategies_summary.csv            mean ± sd over seeds per (pool, strategy, labelled count),
                                      then the ceiling and floor rows
    strategies_summary.md             the same with per-site Dice, as a Markdown table (README)
    strategies_curves.html / .png     learning curves, mean ± sd bands, ceiling and floor lines
    ssft_ablation.*                   the same for the SSFT ablation (when it ran)

A resumed benchmark rebuilds these files from every finished piece (each replaced atomically).
PNG export goes through kaleido with the system Chromium (`BROWSER_PATH`, never a download); when
it fails, the HTML is still written and the reason returned.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from assft_core.bench.config import StrategyBenchConfig
from assft_core.bench.schema import (
    SCHEMA_VERSION,
    BenchmarkResult,
    Machine,
    ReferenceRecord,
    RoundRecord,
    summarise,
    summarise_references,
    write_result,
)

SYSTEM_CHROMIUM = Path("/usr/bin/chromium")
PNG_SIZE = (1100, 500)


@dataclass
class WrittenReport:
    """Files one `write_report` call produced.

    Attributes:
        files: every file written.
        png_error: why the PNG figure could not be made (None when it was).
    """

    files: list[Path] = field(default_factory=list)
    png_error: str | None = None


def machine_info(device: str) -> Machine:
    """Where this benchmark runs (timings mean nothing without it)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"  # which GPU matters
    return Machine(
        platform=platform.platform(),
        python=platform.python_version(),
        torch=torch.__version__,
        device=device,
        cpu_count=os.cpu_count() or 1,
    )


def utc_stamp() -> str:
    """Now, in UTC, as the result files write it (e.g. 2026-11-30T01:02:03Z)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def command_line() -> list[str]:
    """The argv of this process as typed (`assft bench ...`), for the result files."""
    return [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []


def load_note() -> str:
    """The machine's load when the benchmark started (a shared machine inflates wall times)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable"
    return f"load average at start {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) on {os.cpu_count()} CPU(s)"


def build_result(
    cfg: StrategyBenchConfig,
    records: Sequence[RoundRecord],
    references: Sequence[ReferenceRecord],
    *,
    command: Sequence[str],
    machine: Machine,
    note: str,
) -> BenchmarkResult:
    """A schema-v1 result of the given records (sorted by pool, strategy, seed, round)."""
    return BenchmarkResult(
        version=SCHEMA_VERSION,
        created_utc=utc_stamp(),
        machine=machine,
        command=list(command),
        config=cfg.to_dict(),
        records=sorted(records, key=lambda r: (r.pool, r.strategy, r.seed, r.round)),
        references=sorted(references, key=lambda r: (r.pool, r.kind, r.seed)),
        note=note,
    )


def relabel(records: Sequence[RoundRecord], label: str) -> list[RoundRecord]:
    """The records under another strategy name (the ablation's `assft+ssft:MODE`)."""
    return [replace(r, strategy=label) for r in records]


def records_frame(result: BenchmarkResult) -> pd.DataFrame:
    """One CSV row per record: ids, metrics, `dice_site_<S>`, `dice_class_<C>`, `time_<phase>_s`,
    and the picks joined by ';'."""
    rows = []
    for rec in result.records:
        row = {k: v for k, v in asdict(rec).items()
               if k not in ("per_class_dice", "per_site_dice", "picks", "wall_time_s", "annotation_effort")}
        row.update({f"effort_{k}": v for k, v in (rec.annotation_effort or {}).items()})
        row.update({f"dice_site_{k}": v for k, v in rec.per_site_dice.items()})
        row.update({f"dice_class_{k}": v for k, v in rec.per_class_dice.items()})
        row.update({f"time_{k}_s": v for k, v in rec.wall_time_s.items()})
        row["picks"] = ";".join(rec.picks)
        rows.append(row)
    return pd.DataFrame(rows)


def summary_frame(result: BenchmarkResult) -> pd.DataFrame:
    """`summarise` rows, then the references as rows with `strategy` = their kind."""
    summary = summarise(result)
    refs = summarise_references(result).rename(columns={"kind": "strategy"})
    return pd.concat([summary, refs[summary.columns]], ignore_index=True) if not refs.empty else summary


def summary_markdown(result: BenchmarkResult) -> str:
    """The README's table: per (pool, strategy, labelled count) and per reference, the mean ± sd
    over seeds of mean Dice, HD95 (mm) and each site's Dice, with the missed-class count."""
    rows = [asdict(r) for r in result.records] + [
        {**asdict(r), "strategy": r.kind, "round": None} for r in result.references
    ]
    if not rows:
        return "(no finished runs)\n"
    frame = pd.DataFrame(rows)
    sites = sorted({s for r in rows for s in r["per_site_dice"]})
    for site in sites:
        frame[f"site {site}"] = [r["per_site_dice"].get(site) for r in rows]
    frame["hd95_mm"] = pd.to_numeric(frame["hd95_mm"], errors="coerce")
    keys = ["pool", "strategy", "labelled_count"]
    columns = ["mean_dice", "hd95_mm", *[f"site {s}" for s in sites]]
    head = ["pool", "strategy", "labelled", "seeds", "mean Dice", "HD95 mm", *[f"Dice {s}" for s in sites], "missed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, part in frame.groupby(keys, sort=True):
        cells = [str(key[0]), str(key[1]), str(int(key[2])), str(part["seed"].nunique())]
        for col in columns:
            values = pd.to_numeric(part[col], errors="coerce").dropna()
            if values.empty:
                cells.append("n/a")
            elif len(values) == 1:
                cells.append(f"{values.iloc[0]:.3f}" if col != "hd95_mm" else f"{values.iloc[0]:.1f}")
            else:
                fmt = ".1f" if col == "hd95_mm" else ".3f"
                cells.append(f"{values.mean():{fmt}} ± {values.std():{fmt}}")
        cells.append(str(int(part["hd95_missed_count"].sum())))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(result: BenchmarkResult, out_dir: Path, stem: str, *, png: bool = True) -> WrittenReport:
    """Write `<stem>.json`, `<stem>.csv`, `<stem>_summary.csv`, `<stem>_summary.md` (the README's
    table), `<stem>_curves.html` and `.png`.

    Each file is made in a temporary folder inside `out_dir`, then renamed into place, so a kill
    leaves either the old report or the new one.

    Args:
        result: the benchmark result (validated by `write_result`).
        out_dir: the benchmark's output folder.
        stem: file name stem ("strategies", "ssft_ablation").
        png: also export the figure as PNG.

    Returns:
        The files written and, if the PNG failed, why.

    Raises:
        DataError: when the result breaks the schema.
    """
    from assft_core.viz.curves import learning_curve_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = WrittenReport()
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        write_result(result, staging / f"{stem}.json")
        records_frame(result).to_csv(staging / f"{stem}.csv", index=False)
        summary_frame(result).to_csv(staging / f"{stem}_summary.csv", index=False, float_format="%.4f")
        (staging / f"{stem}_summary.md").write_text(summary_markdown(result), encoding="utf-8")
        fig = learning_curve_figure(summarise(result), summarise_references(result))
        fig.write_html(staging / f"{stem}_curves.html", include_plotlyjs="cdn")
        if png:
            written.png_error = export_png(fig, staging / f"{stem}_curves.png")
        for path in sorted(staging.iterdir()):
            target = out_dir / path.name
            os.replace(path, target)
            written.files.append(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def export_png(fig: go.Figure, path: Path) -> str | None:
    """Write `fig` as PNG with kaleido and the system Chromium; the error text on failure.

    kaleido ≥ 1 drives a Chrome it finds through the `BROWSER_PATH` environment variable; it is
    pointed at /usr/bin/chromium when the variable is unset, so nothing is ever downloaded.
    """
    if "BROWSER_PATH" not in os.environ and SYSTEM_CHROMIUM.is_file():
        os.environ["BROWSER_PATH"] = str(SYSTEM_CHROMIUM)
    try:
        fig.write_image(str(path), width=PNG_SIZE[0], height=PNG_SIZE[1])
    except Exception as exc:  # kaleido raises many kinds (no browser, timeout): report, keep the HTML
        path.unlink(missing_ok=True)
        return f"{type(exc).__name__}: {exc}"
    return None
