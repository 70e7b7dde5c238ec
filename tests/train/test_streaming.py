"""Every pass over the pool streams: a `LazyCases` pool is never materialised (issue 16).

The pools here count their live cases (weak references); a pass that listed the pool would hold
all of them at once and fail the bound.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest

from assft_core.config import InferenceConfig, PreprocessConfig, SSFTConfig
from assft_core.data.records import CaseRecord, PreprocessedCase
from assft_core.data.stream import LazyCases, case_ids, case_lookup, case_sites, chain_cases
from assft_core.train.evaluate import EvalCase, evaluate
from assft_core.train.ssft import run_round_training
from tests.train.factories import ThresholdNet, cube_sample, identity_case
from tests.train.test_ssft import CARD, INFER, QUERY, SIZE, TRAIN, _net

N = 6


class CountingCases(LazyCases):
    """Tiny cube cases made on access; `peak` is the most cases alive when one more was made."""

    def __init__(self, n: int, prefix: str = "u") -> None:
        records = [CaseRecord(f"{prefix}{i}", (Path(f"{prefix}{i}.nii.gz"),), None, site="AB"[i % 2]) for i in range(n)]
        super().__init__(records, PreprocessConfig())
        self.alive = 0
        self.peak = 0
        self.loads = 0

    def load(self, record: CaseRecord) -> PreprocessedCase:
        self.peak = max(self.peak, self.alive)
        self.loads += 1
        i = int(record.case_id[1:])
        case = identity_case(cube_sample(record.case_id, 10 + i, size=SIZE, half=3), record.site)
        self.alive += 1
        weakref.finalize(case, self._released)
        return case

    def _released(self) -> None:
        self.alive -= 1


def test_lazy_cases_know_ids_and_sites_without_loading_and_iterate_one_at_a_time() -> None:
    cases = CountingCases(N)
    assert len(cases) == N and case_ids(cases) == [f"u{i}" for i in range(N)]
    assert case_sites(cases) == ["A", "B"] * (N // 2) and cases.loads == 0
    for case in cases:
        assert case.image.shape == (1, SIZE, SIZE, SIZE)
    assert cases.loads == N and cases.peak <= 1  # only the loop's previous case, never the pool
    both = chain_cases([identity_case(cube_sample("l0", 0, size=SIZE))], cases)
    assert len(both) == N + 1 and case_ids(both)[:2] == ["l0", "u0"] and cases.loads == N
    assert case_lookup(cases)("u3").case_id == "u3" and both[4].case_id == "u3"
    with pytest.raises(KeyError):
        case_lookup(cases)("nope")


def test_ssft_round_streams_the_unlabelled_pool(tmp_path: Path) -> None:
    labelled = [identity_case(cube_sample(f"l{i}", i, size=SIZE, half=3)) for i in range(2)]
    unlabelled = CountingCases(N)
    result = run_round_training(
        _net(), CARD, labelled, unlabelled, train_cfg=TRAIN,
        ssft_cfg=SSFTConfig(supervised_steps=1, ssft_steps=1, tau_v=0.0), query_cfg=QUERY, infer_cfg=INFER,
        run_dir=tmp_path,
    )
    assert result.report is not None and result.report.unlabelled_ids == case_ids(unlabelled)
    assert len(result.report.admitted_ids) == 3  # ceil(0.5 · 6), made again one by one for the SSFT phase
    assert unlabelled.loads >= N and unlabelled.peak <= 2, unlabelled.peak


def test_evaluation_consumes_one_case_at_a_time() -> None:
    alive = {"now": 0, "peak": 0}

    def cases():
        for i in range(N):
            alive["peak"] = max(alive["peak"], alive["now"])
            sample = cube_sample(f"t{i}", 100 + i, size=SIZE, half=3)
            ec = EvalCase(identity_case(sample), sample.label[0])
            alive["now"] += 1
            weakref.finalize(ec, lambda: alive.__setitem__("now", alive["now"] - 1))
            yield ec

    report = evaluate(ThresholdNet(), cases(), num_classes=2, cfg=InferenceConfig(roi_size=(SIZE,) * 3, device="cpu"))
    assert len(report.cases) == N and alive["peak"] <= 1
    assert all(np.isfinite(c.mean_dice) for c in report.cases)
