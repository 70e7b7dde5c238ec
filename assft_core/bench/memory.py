"""Peak memory of a block of work, on the CPU (resident set) or a CUDA device.

CPU: tracemalloc does not see torch's or numpy's native allocations, and `ru_maxrss` is a
process-wide high-water mark that never goes down, so neither isolates one phase. Instead a
background thread samples the resident set size from /proc/self/statm every `interval_s` and the
peak above the size at entry is reported (a sample can miss a spike shorter than the interval:
the value is a lower bound). CUDA: `torch.cuda.max_memory_allocated` after a reset, exact for
tensors allocated through torch.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

import torch

_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """The process's resident set size in bytes (None where /proc is absent)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


class PeakMemory:
    """Context manager measuring the peak memory a block adds, in MiB (`peak_mib` after exit).

    Args:
        device: where the work runs; a CUDA device is measured with torch's allocator statistics.
        interval_s: sampling interval of the resident set on the CPU.

    Attributes:
        peak_mib: peak increase over the value at entry (None when it cannot be measured).
        method: "cuda_max_allocated", "rss_sampled" or "unavailable".
    """

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_mib: float | None = None
        self.method = "unavailable"
        self._start = 0
        self._peak = 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.method = "cuda_max_allocated"
            return self
        start = resident_bytes()
        if start is None:
            return self
        self._start = self._peak = start
        self.method = "rss_sampled"
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(self.interval_s):
            now = resident_bytes()
            if now is not None and now > self._peak:
                self._peak = now

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.method == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            self._peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._done.set()
            self._thread.join()
            now = resident_bytes()
            if now is not None:
                self._peak = max(self._peak, now)
        if self.method != "unavailable":
            self.peak_mib = max(self._peak - self._start, 0) / 2**20
