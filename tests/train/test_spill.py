"""Training samples kept memory-mapped on disk (`train.spill`): same patches, one case in memory at a time."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assft_core.config import IntensityAugment
from assft_core.train import sampling
from assft_core.train.data import TrainSample
from assft_core.train.sampling import prepare_source, sample_batch, step_rng
from assft_core.train.spill import spill_samples


def _sample(case_id: str, seed: int, half_exact: bool = True) -> TrainSample:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(1, 12, 10, 14)).astype(np.float32)
    if half_exact:  # as read from the float16 preprocessing cache
        image = image.astype(np.float16).astype(np.float32)
    label = rng.integers(0, 3, size=(1, 12, 10, 14)).astype(np.uint8)
    return TrainSample(case_id, image, label, group="A")


def test_spilled_samples_are_memory_mapped_and_give_the_same_patches(tmp_path: Path) -> None:
    originals = [_sample("c0", 0), _sample("c1", 1, half_exact=False)]
    spilled = spill_samples(iter(originals), tmp_path)
    assert [s.case_id for s in spilled] == ["c0", "c1"] and all(s.group == "A" for s in spilled)
    assert all(isinstance(s.image, np.memmap) and isinstance(s.label, np.memmap) for s in spilled)
    assert spilled[0].image.dtype == np.float16 and spilled[1].image.dtype == np.float32  # exact either way
    for a, b in zip(originals, spilled):
        assert np.array_equal(a.image, b.image.astype(np.float32)) and np.array_equal(a.label, b.label)
    mem = [prepare_source(s, (8, 8, 8), 255) for s in originals]
    disk = [prepare_source(s, (8, 8, 8), 255) for s in spilled]
    assert all(isinstance(src.image, np.memmap) for src in disk)  # no full-volume copy
    for step in range(4):
        x = sample_batch(mem, 3, (8, 8, 8), 0.5, IntensityAugment.JITTER, step_rng(0, step, 0))
        y = sample_batch(disk, 3, (8, 8, 8), 0.5, IntensityAugment.JITTER, step_rng(0, step, 0))
        assert x[0].dtype == y[0].dtype == np.float32
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])


def test_spilling_holds_one_case_in_memory_at_a_time(tmp_path: Path) -> None:
    alive: list[weakref.ref] = []

    def made_one_at_a_time() -> Iterator[TrainSample]:
        for k in range(5):
            gc.collect()
            assert sum(r() is not None for r in alive) == 0, "an earlier case is still in memory"
            sample = _sample(f"c{k}", k)
            alive.append(weakref.ref(sample.image))
            yield sample
            del sample

    spilled = spill_samples(made_one_at_a_time(), tmp_path)
    gc.collect()
    assert len(spilled) == 5 and all(r() is None for r in alive)


def test_file_names_are_safe_and_distinct(tmp_path: Path) -> None:
    spilled = spill_samples([_sample("a/b", 0), _sample("a_b", 1)], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a_b-1.image.npy", "a_b-1.label.npy", "a_b.image.npy", "a_b.label.npy"]
    assert not np.array_equal(spilled[0].image, spilled[1].image)


def test_a_large_foreground_is_indexed_by_an_even_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampling, "MAX_FOREGROUND_INDEX", 100)
    sample = _sample("big", 0)
    full = np.flatnonzero(sample.label[0] >= 1)
    first = prepare_source(sample, (8, 8, 8), 255).foreground
    again = prepare_source(sample, (8, 8, 8), 255).foreground
    assert first.size == 100 and np.array_equal(first, again)  # the same draw for the same case
    assert np.all(np.isin(first, full)) and np.all(np.diff(first) > 0)
    assert first.max() > full[full.size // 2]  # spread over the volume, not its first voxels
