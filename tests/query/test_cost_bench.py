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
    report = json.loads(out.read_text())
    assert report["version"] == 1 and set(report["machine"]) >= {"platform", "torch", "device"}  # one format
    scoring = report["phases"]["scoring"]
    assert scoring["phase"] == "scoring" and scoring["unit"] == "case"
    details = scoring["details"]
    assert scoring["ratio_to_inference"] == pytest.approx(scoring["median_s"] / details["plain_s"])
    assert details["meets_goal"] == (scoring["ratio_to_inference"] <= details["goal_ratio"] == 1.3)
    printed = capsys.readouterr().out
    assert "goal" in printed and "only 1 timing(s)" in printed  # one case, one repeat: said to be noise
    before = out.read_text()
    assert main(args) == 1  # exists: refused, file untouched
    assert out.read_text() == before and "--force" in capsys.readouterr().err


def test_paired_ratios_cancel_a_drifting_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from assft_core.bench import cost
    from assft_core.config import InferenceConfig, QueryConfig

    calls: list[str] = []
    cost_of = {"plain": 1.0, "hooked": 1.02, "full": 1.1}

    def timed(fn, image, device, clock):  # noqa: ANN001 - stands in for cost._timed
        calls.append(fn.__name__)
        slowdown = 1.0 + 0.5 * ((len(calls) - 1) // 3)  # the machine slows down rotation by rotation
        return cost_of[fn.__name__] * slowdown

    monkeypatch.setattr(cost, "_timed", timed)
    model = cost.tiny_model()
    infer = InferenceConfig(roi_size=(16, 16, 16), device="cpu")
    result = cost.measure_scoring_cost(model, cost.synthetic_cases(2, (16, 16, 16)), infer, QueryConfig(), repeats=3)
    assert len(calls) == 2 * 3 * 3  # warm-ups go around _timed
    assert result.paired_ratio == pytest.approx(1.1) and result.paired_pass_ratio == pytest.approx(1.02)


def test_cpu_clock_counts_this_process_work_not_sleep_and_refuses_a_gpu() -> None:
    import time

    import torch

    from assft_core.bench.timing import timed

    cpu = torch.device("cpu")
    assert timed(lambda: time.sleep(0.2), cpu, "cpu") < 0.1 <= timed(lambda: time.sleep(0.2), cpu, "wall")
    busy = timed(lambda: sum(i * i for i in range(300_000)), cpu, "cpu")
    assert busy > 0.0
    with pytest.raises(ValueError, match="wall clock"):
        timed(lambda: None, torch.device("cuda"), "cpu")
    with pytest.raises(ValueError, match="unknown clock"):
        timed(lambda: None, cpu, "sundial")


def test_bench_cost_on_the_cpu_clock_with_one_thread(tmp_path) -> None:
    out = tmp_path / "cost.json"
    assert main(["bench", "cost", "--phase", "scoring", "--cases", "1", "--shape", "16", "16", "16", "--repeats", "1",
                 "--device", "cpu", "--clock", "cpu", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["clock"] == "cpu" and report["phases"]["scoring"]["details"]["plain_s"] > 0
