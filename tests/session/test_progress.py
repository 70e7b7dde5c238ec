"""Per-case progress: the fraction within a phase's share of the bar, and time left from measured case times."""

from __future__ import annotations

import pytest

from assft_core.session.progress import CaseProgress
from progress_recorder import Recorder


def test_case_progress_reports_each_case_with_time_left_from_the_mean_case_time() -> None:
    now = [100.0]
    sink = Recorder()
    step = CaseProgress(sink, "evaluate", "evaluating f0", 4, share=(0.5, 1.0), later=2, clock=lambda: now[0])
    step(0)
    now[0] += 6.0  # two cases in 6 s: 3 s a case
    step(2, "t1")
    (f0, m0, x0), (f2, m2, x2) = sink.calls
    assert (f0, x0["eta_s"], x0["cases_done"]) == (0.5, None, 0)  # nothing measured yet: no guess
    assert f2 == pytest.approx(0.75) and m2 == "evaluating f0: 2/4 cases (t1)"
    assert x2 == {"phase": "evaluate", "cases_done": 2, "cases_total": 4, "eta_s": pytest.approx(3.0 * (2 + 2))}
    CaseProgress(None, "x", "y", 3)(1)  # no sink: nothing happens
