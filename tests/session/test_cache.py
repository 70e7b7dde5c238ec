"""The preprocessing cache: size per case, a least-recently-used limit, `assft cache` and status."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from assft_core.cli import main
from assft_core.config import PreprocessConfig
from assft_core.data.records import CaseRecord
from assft_core.session.cache import cache_usage, entry_path, prune_cache
from assft_core.session.project import open_project
from assft_core.session.workspace import CaseStream
from session_factories import make_dataset, write_nifti


def _names(folder: Path) -> list[str]:
    """The content hashes the cache entries in `folder` are named by."""
    return sorted(p.name.removesuffix(entry_path(folder, "").name) for p in folder.glob("*.npz"))


def _entry(folder: Path, name: str, size: int, mtime: float) -> Path:
    path = entry_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    return path


def test_prune_deletes_least_recently_used_first_and_keeps_the_one_in_use(tmp_path: Path) -> None:
    for i, name in enumerate("abcd"):
        _entry(tmp_path, name, 100, 1000.0 + i)  # a used longest ago
    (tmp_path / ".tmp123.tmp").write_bytes(b"y" * 1000)  # a write in progress: not an entry
    assert cache_usage(tmp_path).entries == 4 and cache_usage(tmp_path).per_entry_bytes == 100
    removed = prune_cache(tmp_path, 250, keep=["a"])
    assert removed == [entry_path(tmp_path, "b"), entry_path(tmp_path, "c")]
    assert _names(tmp_path) == ["a", "d"]
    assert prune_cache(tmp_path, 1000) == []


def test_a_stream_keeps_the_cache_under_its_limit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    records = [
        CaseRecord(f"c{i}", (write_nifti(tmp_path / f"c{i}.nii.gz", rng.normal(size=(8, 8, 8)).astype(np.float32)),))
        for i in range(4)
    ]
    cache = tmp_path / "cache"
    cfg = PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), divisor=8)
    for _ in CaseStream(records, cfg, cache):
        pass
    one = cache_usage(cache).per_entry_bytes
    assert cache_usage(cache).entries == 4 and one
    last = None
    for case in CaseStream(records, cfg, cache, limit_bytes=int(2.5 * one)):
        last = case.content_hash
    assert cache_usage(cache).entries == 2 and entry_path(cache, last).is_file()


def test_status_and_cache_command_show_the_size_and_set_the_limit(tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "data")
    model = tmp_path / "model.json"
    model.write_text("{}")
    proj = tmp_path / "proj"
    assert main(["init", str(proj), "--dataset", str(data), "--model-config", str(model), "--cache-limit", "2"]) == 0
    assert open_project(proj).config.cache_limit_gb == 2.0
    capsys.readouterr()
    assert main(["status", "-p", str(proj)]) == 0
    assert "preprocessing cache: 0 entries, 0.0 MB; limit 2 GB" in capsys.readouterr().out
    cache = proj / "artifacts" / "cache" / "preprocessed"
    _entry(cache, "old", 2000, 1000.0)
    _entry(cache, "new", 2000, 2000.0)
    assert main(["cache", "-p", str(proj), "--limit", "0.000003"]) == 0
    out = capsys.readouterr().out
    assert "deleted 1 least recently used cache entry" in out and "1 entry, 0.0 MB (0.0 MB per entry)" in out
    assert _names(cache) == ["new"] and "smaller than one entry" not in out
    # A limit below one entry keeps nothing: said, with the size to give instead.
    assert main(["cache", "-p", str(proj), "--limit", "0.000001"]) == 0
    out = capsys.readouterr().out
    assert _names(cache) == [] and "smaller than one entry (0.0 MB)" in out and "raise it to at least 2e-06 GB" in out
    assert main(["cache", "-p", str(proj), "--no-limit"]) == 0
    assert open_project(proj).config.cache_limit_gb is None and "no limit" in capsys.readouterr().out
