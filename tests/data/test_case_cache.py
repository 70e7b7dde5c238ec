"""The compact preprocessing cache: float16 image and uint8 label on disk, old float32 entries read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_factories import label, scan, write_nifti
from assft_core.config import PreprocessConfig
from assft_core.data import preprocess as pp
from assft_core.data.case_cache import entry_path, legacy_entry_path, load_case
from assft_core.data.preprocess import preprocess_case
from assft_core.data.records import CaseRecord
from assft_core.session.cache import cache_usage

CFG = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), divisor=4)


@pytest.fixture()
def record(tmp_path: Path) -> CaseRecord:
    return CaseRecord(
        "c1",
        (write_nifti(tmp_path / "c1.nii.gz", scan()),),
        write_nifti(tmp_path / "c1_seg.nii.gz", label()),
        site="A",
    )


def _count_pipeline_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = pp._run_pipeline
    monkeypatch.setattr(pp, "_run_pipeline", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_round_trip_stores_float16_image_and_uint8_label(
    tmp_path: Path, record: CaseRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    exact = preprocess_case(record, CFG)
    calls = _count_pipeline_runs(monkeypatch)
    cache = tmp_path / "cache"
    first = load_case(record, CFG, cache_dir=cache)
    again = load_case(CaseRecord("other", record.image_paths, record.label_path, site="B"), CFG, cache_dir=cache)
    assert len(calls) == 1 and (again.case_id, again.site) == ("other", "B")
    with np.load(entry_path(cache, first.content_hash)) as z:
        assert z["image"].dtype == np.float16 and z["label"].dtype == np.uint8
    # What a pass gets does not depend on the cache being warm: float32, rounded to float16 both times.
    rounded = exact.image.astype(np.float16).astype(np.float32)
    for case in (first, again):
        assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
        np.testing.assert_array_equal(case.image, rounded)
        np.testing.assert_array_equal(case.label, exact.label)
        np.testing.assert_array_equal(case.affine, exact.affine)
        assert case.native_shape == exact.native_shape and case.spacing_mm == exact.spacing_mm
    assert float(np.abs(first.image - exact.image).max()) <= 2.5e-4  # half an ulp of float16 below 1
    assert not legacy_entry_path(cache, first.content_hash).exists()


def test_an_old_float32_entry_is_read_and_made_compact(
    tmp_path: Path, record: CaseRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    old = preprocess_case(record, CFG, cache_dir=cache)  # the previous format: `<hash>.npz`, float32
    legacy = legacy_entry_path(cache, old.content_hash)
    assert legacy.is_file() and "1 of them in the old float32 format" in cache_usage(cache).describe()
    calls = _count_pipeline_runs(monkeypatch)
    case = load_case(record, CFG, cache_dir=cache)
    assert calls == []  # read from the old entry, not recomputed
    np.testing.assert_array_equal(case.image, old.image.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(case.label, old.label)
    assert not legacy.exists() and entry_path(cache, old.content_hash).is_file()
    usage = cache_usage(cache)
    assert usage.entries == 1 and usage.legacy_entries == 0 and "old float32" not in usage.describe()


def test_a_damaged_entry_is_recomputed(tmp_path: Path, record: CaseRecord) -> None:
    cache = tmp_path / "cache"
    good = load_case(record, CFG, cache_dir=cache)
    path = entry_path(cache, good.content_hash)
    path.write_bytes(path.read_bytes()[:100])
    case = load_case(record, CFG, cache_dir=cache)
    np.testing.assert_array_equal(case.image, good.image)
    with np.load(path) as z:
        assert z["image"].shape == good.image.shape


def test_without_a_cache_the_image_is_the_exact_float32_one(record: CaseRecord) -> None:
    np.testing.assert_array_equal(load_case(record, CFG).image, preprocess_case(record, CFG).image)
