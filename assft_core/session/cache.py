"""The preprocessing cache on disk: its size, and a least-recently-used limit.

Every preprocessed case is cached as `artifacts/cache/preprocessed/<content hash>.f16.npz` (image
float16, label uint8: `data.case_cache`), so a pool pass reads it instead of resampling the scan
again; entries of the previous format (`<content hash>.npz`, image float32) count here too and
are made compact as passes use them. A pool of hundreds of real-size scans makes that folder large
(a 512 × 512 × 240 CT at 1.5 mm is ~30 MB an entry, 3 bytes a voxel), so a project can set
`ProjectConfig.cache_limit_gb`: each entry's modification time is set when a pass uses it, and
entries used longest ago are deleted until the folder fits (the entry just used is kept). A deleted entry costs only time: the next pass that
needs it preprocesses the scan again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from assft_core.data.case_cache import LEGACY_SUFFIX, entry_path, is_legacy_entry, legacy_entry_path

_GB = 1e9


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """Every entry, compact or of the previous format (both end in `.npz`); temp files start with "."."""
    try:
        with os.scandir(folder) as it:
            return [e for e in it if e.is_file() and e.name.endswith(LEGACY_SUFFIX) and not e.name.startswith(".")]
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class CacheUsage:
    """How much disk the preprocessing cache takes.

    Attributes:
        entries: cached preprocessed cases. An entry is keyed by content (image files, label and
            settings), so a case whose label was replaced, or that was preprocessed with other
            settings, has one entry per version: this is not the number of cases.
        total_bytes: their size on disk in bytes.
        limit_bytes: the project's limit in bytes, or None (no limit).
        legacy_entries: those of them in the previous format (image float32), converted to the
            compact one (float16) when a pass next uses them.
    """

    entries: int
    total_bytes: int
    limit_bytes: int | None
    legacy_entries: int = 0

    @property
    def per_entry_bytes(self) -> float | None:
        """Mean size of an entry (one preprocessed case) in bytes (None when the cache is empty)."""
        return self.total_bytes / self.entries if self.entries else None

    def describe(self) -> str:
        """One line for `assft status`, e.g. "preprocessing cache: 3 entries, 140.0 MB (46.7 MB per entry); no limit"."""
        size = f"{self.total_bytes / 1e6:.1f} MB"
        per = f" ({self.per_entry_bytes / 1e6:.1f} MB per entry)" if self.per_entry_bytes else ""
        limit = (
            f"limit {self.limit_bytes / _GB:g} GB (least recently used entries are deleted)"
            if self.limit_bytes is not None
            else "no limit (set one with `assft cache --limit GB`)"
        )
        old = (
            f"; {self.legacy_entries} of them in the old float32 format (converted to float16 when next used)"
            if self.legacy_entries
            else ""
        )
        count = f"{self.entries} entr{'y' if self.entries == 1 else 'ies'}"
        return f"preprocessing cache: {count}, {size}{per}; {limit}{old}{too_small_note(self.limit_bytes, self.per_entry_bytes)}"


def too_small_note(limit_bytes: int | None, entry_bytes: float | None) -> str:
    """A warning when the limit cannot hold one entry (every pass then preprocesses again), else ""."""
    if limit_bytes is None or not entry_bytes or limit_bytes >= entry_bytes:
        return ""
    return (f"; the limit is smaller than one entry ({entry_bytes / 1e6:.1f} MB), so nothing stays cached and every "
            f"pass preprocesses again: raise it to at least {entry_bytes / _GB:.2g} GB")


def cache_usage(folder: Path, limit_bytes: int | None = None) -> CacheUsage:
    """The size of the cache folder `folder` (missing folder: empty)."""
    entries = _entries(Path(folder))
    legacy = sum(is_legacy_entry(e.name) for e in entries)
    return CacheUsage(len(entries), sum(e.stat().st_size for e in entries), limit_bytes, legacy)


def touch_entry(folder: Path, content_hash: str) -> None:
    """Mark the entry of `content_hash` as used now (its modification time); no entry: nothing."""
    try:
        os.utime(entry_path(folder, content_hash))
    except FileNotFoundError:
        pass


def prune_cache(folder: Path, limit_bytes: int, keep: Iterable[str] = ()) -> list[Path]:
    """Delete the least recently used entries until the folder holds at most `limit_bytes`.

    Args:
        folder: the cache folder.
        limit_bytes: the largest total size kept, in bytes (≥ 0).
        keep: content hashes never deleted now (the case a pass is using).

    Returns:
        The deleted files, oldest first. The folder may stay above the limit when the kept
        entries alone exceed it.

    Raises:
        ValueError: a negative limit.
    """
    if limit_bytes < 0:
        raise ValueError(f"cache limit {limit_bytes} bytes: must be ≥ 0.")
    entries = _entries(Path(folder))
    stats = [(e, e.stat()) for e in entries]
    total = sum(st.st_size for _e, st in stats)
    if total <= limit_bytes:
        return []
    kept = {path(folder, h).name for h in keep for path in (entry_path, legacy_entry_path)}
    removed: list[Path] = []
    for entry, st in sorted(stats, key=lambda es: es[1].st_mtime):
        if total <= limit_bytes:
            break
        if entry.name in kept:
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # another process pruned it first
        total -= st.st_size
        removed.append(Path(entry.path))
    return removed


def limit_bytes_of(limit_gb: float | None) -> int | None:
    """`ProjectConfig.cache_limit_gb` in bytes (None stays None).

    Raises:
        ValueError: a negative limit.
    """
    if limit_gb is None:
        return None
    if limit_gb < 0:
        raise ValueError(f"cache_limit_gb={limit_gb}: must be ≥ 0 (or None for no limit).")
    return int(limit_gb * _GB)
