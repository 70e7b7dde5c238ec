"""A progress sink for tests that keeps every call (`assft_core.session.progress.ProgressSink`)."""

from __future__ import annotations


class Recorder:
    """A progress sink that keeps every call as (fraction, message, metrics)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, dict]] = []

    def progress(self, fraction: float, message: str = "", **metrics: object) -> None:
        self.calls.append((fraction, message, metrics))

    def should_stop(self) -> bool:
        return False
