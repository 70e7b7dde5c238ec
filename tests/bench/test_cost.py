"""`assft bench cost`: the multi-phase report is well-formed for the cheap phases; memory is measured."""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import pytest

from assft_core.bench.memory import PeakMemory
from assft_core.cli import main

BASE = ["bench", "cost", "--cases", "1", "--shape", "16", "16", "16", "--device", "cpu"]


def test_inference_and_train_step_report(tmp_path) -> None:
    out = tmp_path / "cost.json"
    assert main([*BASE, "--phase", "inference", "--repeats", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["version"] == 1 and set(report["machine"]) >= {"platform", "torch", "cpu_count"}
    inference = report["phases"]["inference"]
    assert len(inference["times_s"]) == 2 and inference["median_s"] == pytest.approx(statistics.median(inference["times_s"]))
    assert inference["ratio_to_inference"] == 1.0 and inference["unit"] == "case"
    assert inference["details"]["shape"] == [1, 16, 16, 16] and report["skipped"] == {}

    out2 = tmp_path / "train.json"
    assert main([*BASE, "--phase", "train_step", "--steps", "2", "--batch-size", "1", "--out", str(out2)]) == 0
    step = json.loads(out2.read_text())["phases"]["train_step"]
    # steps + 1 steps run; the first is left out, so two step times remain.
    assert len(step["times_s"]) == 2 and step["median_s"] == pytest.approx(statistics.median(step["times_s"]))
    # The tiny model's ROI (32³) is capped by the 16³ synthetic case.
    assert step["details"]["patch_size"] == [16, 16, 16] and step["details"]["batch_size"] == 1


def test_pages_without_project_is_skipped_with_the_reason(tmp_path, capsys) -> None:
    out = tmp_path / "pages.json"
    assert main([*BASE, "--phase", "pages", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["phases"] == {} and "--project" in report["skipped"]["pages"]
    assert "skipped" in capsys.readouterr().out
    assert main([*BASE, "--phase", "pages", "--out", str(out)]) == 1  # never over an existing file


def test_peak_memory_sees_a_large_allocation() -> None:
    size_mib = 96
    with PeakMemory("cpu") as mem:
        block = np.ones(size_mib * 2**20, dtype=np.uint8)  # touched pages: resident
        time.sleep(0.05)
        del block
    assert mem.method == "rss_sampled"
    assert size_mib * 0.9 <= mem.peak_mib < size_mib * 3
    with PeakMemory("cpu") as idle:
        time.sleep(0.02)
    assert idle.peak_mib < size_mib * 0.5


def test_bench_job_kind_is_registered() -> None:
    from assft_core.bench.jobs import run_bench_job
    from assft_core.session.jobs import job_handler

    assert job_handler("bench") is run_bench_job
