"""Result files of the strategy benchmark, from the schema fixture: CSV rows, the README table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pandas as pd

from assft_core.bench.report import summary_markdown, write_report
from assft_core.bench.schema import load_results, validate_result

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bench_result.json"


def test_report_files_from_the_fixture(tmp_path: Path) -> None:
    result = load_results(FIXTURE)
    written = write_report(result, tmp_path, "strategies", png=False)
    names = sorted(p.name for p in written.files)
    assert names == ["strategies.csv", "strategies.json", "strategies_curves.html", "strategies_summary.csv",
                     "strategies_summary.md"]
    assert validate_result(json.loads((tmp_path / "strategies.json").read_text())) == []
    rows = pd.read_csv(tmp_path / "strategies.csv")
    assert len(rows) == len(result.records)
    first = result.records[0]
    match = rows[(rows["pool"] == first.pool) & (rows["strategy"] == first.strategy) & (rows["seed"] == first.seed)
                 & (rows["round"] == first.round)].iloc[0]
    assert match["dice_site_A"] == first.per_site_dice["A"] and match["picks"] == ";".join(first.picks)
    # Rebuilt in place on a resume: the old files are replaced, nothing else is left behind.
    write_report(result, tmp_path, "strategies", png=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_markdown_table_is_mean_and_sd_over_seeds() -> None:
    result = load_results(FIXTURE)
    table = summary_markdown(result)
    group = [r for r in result.records if (r.pool, r.strategy, r.labelled_count) == ("balanced", "random", 2)]
    dice = [r.mean_dice for r in group]
    site_d = [r.per_site_dice["D"] for r in group]
    line = next(line for line in table.splitlines() if line.startswith("| balanced | random | 2 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == str(len(group))
    assert cells[4] == f"{statistics.mean(dice):.3f} ± {statistics.stdev(dice):.3f}"
    assert cells[9] == f"{statistics.mean(site_d):.3f} ± {statistics.stdev(site_d):.3f}"
    assert any(line.startswith("| balanced | ceiling |") for line in table.splitlines())
