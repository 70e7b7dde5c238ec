"""Where a strategy benchmark keeps its finished pieces, so a killed benchmark resumes.

Layout of the output folder (every file written temp-then-rename):

    bench_config.json               the StrategyBenchConfig; a resume must use the same one
    invocations.json                each invocation that computed units: when, command, machine, load
    runs/<run_id>/round-NNN.json    one RoundRecord per round, written as the round finishes
    runs/<run_id>/run.json          every RoundRecord of the run, written last: marks it done
    refs/<ref_id>.json              a finished ReferenceRecord (ceiling, floor)
    work/<run_id>/                  the run's project folder (the session store of its loop)

A run with `run.json` is never recomputed; a run without it starts again from its own folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from assft_core.bench.config import StrategyBenchConfig
from assft_core.bench.plan import ReferenceSpec, RunSpec
from assft_core.bench.schema import ReferenceRecord, RoundRecord
from assft_core.errors import DataError, StateError
from assft_core.fsutil import atomic_write_json

CONFIG_FILE = "bench_config.json"
RUN_FILE = "run.json"
INVOCATIONS_FILE = "invocations.json"


class RunStore:
    """The finished runs and references of one benchmark output folder.

    Args:
        out_dir: the benchmark's output folder.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)

    @staticmethod
    def check(out_dir: Path, cfg: StrategyBenchConfig, *, resume: bool) -> None:
        """Refuse an output folder the benchmark may not use (call before any long preparation).

        Raises:
            StateError: `out_dir` is a file, or holds files and `resume` is False (results are
                never overwritten), or it holds a benchmark made with other settings.
        """
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise StateError(f"{out_dir} is a file, not a folder; choose a folder for --out (new or empty).")
        if not out_dir.exists() or not any(out_dir.iterdir()):
            return
        if not resume:
            raise StateError(
                f"{out_dir} is not empty; pass --resume to continue the benchmark there, or choose a new --out folder."
            )
        saved = out_dir / CONFIG_FILE
        if not saved.is_file():
            raise StateError(f"{out_dir} holds no benchmark ({CONFIG_FILE} missing); choose a new --out folder.")
        # Settings added after a benchmark was started read as their defaults (from_dict fills them).
        old = type(cfg).from_dict(json.loads(saved.read_text(encoding="utf-8"))).to_dict()
        new = cfg.to_dict()
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise StateError(
                f"{out_dir} holds a benchmark with other settings ({', '.join(changed)} differ); resume it with "
                "the same --config and flags, or choose a new --out folder."
            )

    @classmethod
    def open(cls, out_dir: Path, cfg: StrategyBenchConfig, *, resume: bool) -> RunStore:
        """Start a benchmark in `out_dir`, or continue the one there (`resume`).

        Raises:
            StateError: as `check`.
        """
        cls.check(out_dir, cfg, resume=resume)
        saved = Path(out_dir) / CONFIG_FILE
        if not saved.is_file():
            atomic_write_json(saved, cfg.to_dict())
        return cls(Path(out_dir))

    def run_dir(self, spec: RunSpec) -> Path:
        """The folder of a run's records."""
        return self.out_dir / "runs" / spec.run_id

    def work_dir(self, spec: RunSpec | ReferenceSpec) -> Path:
        """The folder a run (or reference) computes in (its project)."""
        return self.out_dir / "work" / spec.run_id

    def is_done(self, spec: RunSpec) -> bool:
        """True when the run finished (its `run.json` exists)."""
        return (self.run_dir(spec) / RUN_FILE).is_file()

    def write_round(self, spec: RunSpec, record: RoundRecord) -> Path:
        """Record one finished round of a running run."""
        return atomic_write_json(self.run_dir(spec) / f"round-{record.round:03d}.json", asdict(record))

    def finish(self, spec: RunSpec, records: list[RoundRecord]) -> Path:
        """Record a whole run as done (its rounds, in order)."""
        return atomic_write_json(self.run_dir(spec) / RUN_FILE, [asdict(r) for r in records])

    def records(self, spec: RunSpec) -> list[RoundRecord]:
        """The records of a finished run.

        Raises:
            DataError: naming the file when it is unreadable.
        """
        return [RoundRecord(**r) for r in _read(self.run_dir(spec) / RUN_FILE)]

    def reference_path(self, spec: ReferenceSpec) -> Path:
        """The file of a finished reference."""
        return self.out_dir / "refs" / f"{spec.run_id}.json"

    def reference(self, spec: ReferenceSpec) -> ReferenceRecord | None:
        """The finished reference, or None when it has not run yet."""
        path = self.reference_path(spec)
        return ReferenceRecord(**_read(path)) if path.is_file() else None

    def write_reference(self, spec: ReferenceSpec, record: ReferenceRecord) -> Path:
        """Record a finished reference."""
        return atomic_write_json(self.reference_path(spec), asdict(record))

    def invocations(self) -> list[dict[str, Any]]:
        """Every logged invocation that computed units, oldest first (empty when none was logged)."""
        path = self.out_dir / INVOCATIONS_FILE
        return list(_read(path)) if path.is_file() else []

    def log_invocation(self, entry: dict[str, Any], *, replace_last: bool = False) -> Path:
        """Append one invocation (JSON-ready: when, command, machine, load, units computed), or
        update the last one (`replace_last`, as its units finish), so the result files name the
        machine that computed the units, not the one that last rebuilt them."""
        logged = self.invocations()
        return atomic_write_json(self.out_dir / INVOCATIONS_FILE, [*logged[: -1 if replace_last else None], entry])


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path}: unreadable benchmark piece ({exc}). Fix: delete it; a --resume recomputes that run."
        ) from None
