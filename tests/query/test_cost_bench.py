"""`assft bench cost --phase scoring`: runs on the built-in tiny model, writes JSON, never overwrites."""

from __future__ import annotations

import json

import pytest

from assft_core.cli import main


def test_bench_cost_scoring_writes_json_and_keeps_existing_files(tmp_path, capsys):
    out = tmp_path / "cost.json"
    args = ["bench", "cost", "--phase", "scoring", "--cases", "1", "--shape", "16", "16", "16",
            "--repeats", "1", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert data["phase"] == "scoring" and data["n_cases"] == 1 and data["shape"] == [1, 16, 16, 16]
    assert data["ratio"] == pytest.approx(data["scoring_s"] / data["plain_s"])
    assert data["meets_goal"] == (data["ratio"] <= 1.3)
    before = out.read_text()
    assert main(args) == 1  # exists: refused, file untouched
    assert out.read_text() == before and "--force" in capsys.readouterr().err
