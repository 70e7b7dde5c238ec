"""The clocks of the cost benchmark: wall time, or the CPU time of this process.

Wall time is what a user waits; on a shared machine it swings with the other jobs (±30 % between
runs on the 2-core CI machine). The process's CPU time (all its threads, user + system) counts only
this process's work, so a ratio of two paths measured with it stays put while the machine is
busy; with one torch thread it is the work each path does. It cannot see GPU work: CUDA timings
use the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn: Callable[[], Any], device: torch.device, clock: str = "wall") -> float:
    """Seconds `fn()` takes on `clock` ("wall" or "cpu"), CUDA work synchronised before each reading.

    Raises:
        ValueError: an unknown clock, or the "cpu" clock for a CUDA device (it cannot see GPU work).
    """
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; use one of {sorted(CLOCKS)}.")
    if clock == "cpu" and device.type == "cuda":
        raise ValueError("the cpu clock cannot see GPU work; time a CUDA device with the wall clock.")
    read = CLOCKS[clock]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = read()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return read() - start
