from __future__ import annotations

from pathlib import Path

import pytest

from assft_core.errors import ModelError
from assft_core.models.fingerprint import files_hash, make_fingerprint, module_files, stale_fields


def test_files_hash_tracks_bytes_and_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    h = files_hash([a, b], tmp_path)
    assert h == files_hash([b, a], tmp_path)  # order-free
    b.write_bytes(b"two!")
    assert files_hash([a, b], tmp_path) != h
    b.write_bytes(b"two")
    b.rename(tmp_path / "c.nii.gz")
    assert files_hash([a, tmp_path / "c.nii.gz"], tmp_path) != h
    with pytest.raises(ModelError, match="not found"):
        files_hash([tmp_path / "missing"], tmp_path)


def test_fingerprint_and_staleness(tmp_path: Path) -> None:
    data = tmp_path / "x.nii.gz"
    data.write_bytes(b"volume")
    fp = make_fingerprint([data], tmp_path, ["assft_core.config"], steps=600)
    assert fp["steps"] == 600 and len(fp["code"]) == 64
    assert module_files(["assft_core.config"])[0].name == "config.py"
    assert stale_fields(fp, make_fingerprint([data], tmp_path, ["assft_core.config"], steps=600)) == []
    data.write_bytes(b"volume2")
    assert stale_fields(fp, make_fingerprint([data], tmp_path, ["assft_core.config"])) == ["data"]
    assert stale_fields(fp, make_fingerprint([data], tmp_path, ["assft_core.errors"])) == ["data", "code"]
