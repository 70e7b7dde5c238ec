"""Preprocessed cases through a compact cache: image float16, label uint8 (half the disk of float32).

A project caches every preprocessed case as `<cache_dir>/<content hash>.f16.npz` (uncompressed
npz: image stored float16, label uint8, the geometry float64). A CT window or MRI percentile
image lies in [0, 1], where float16 keeps every value to within 2.5e-4 (half a unit in the last
place); on the demo corpus that changes Dice by at most 1.1e-4 and every scored column by at most
1e-4. An MRI z-score image (`mri_normalisation` zscore*) keeps each value to within 2.5e-4 where
|z| ≤ 1 and to within 4.9e-4 of its size above.

The case handed out is the same whether it was computed now or read back: a freshly
preprocessed image is rounded to float16 too, so a pass never depends on the cache being warm.
Callers still get a float32 image (the networks' dtype).

Older projects hold `<content hash>.npz` entries written by `preprocess.preprocess_case`
(float32 image). Such an entry is still read, then rewritten compactly and deleted: the cache
is converted case by case as passes use it, never recomputed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from assft_core.config import PreprocessConfig
from assft_core.data.preprocess import content_hash, preprocess_case
from assft_core.data.records import CaseRecord, PreprocessedCase
from assft_core.fsutil import atomic_write

ENTRY_SUFFIX = ".f16.npz"
# Entries of the previous format (`preprocess_case`'s own cache), read and converted on use.
LEGACY_SUFFIX = ".npz"
_STORED_IMAGE = np.float16


def entry_path(cache_dir: Path, key: str) -> Path:
    """Where the compact cache entry of the case with content hash `key` lives."""
    return Path(cache_dir) / f"{key}{ENTRY_SUFFIX}"


def legacy_entry_path(cache_dir: Path, key: str) -> Path:
    """Where an entry of the previous format (float32 image) of content hash `key` lives."""
    return Path(cache_dir) / f"{key}{LEGACY_SUFFIX}"


def is_legacy_entry(name: str) -> bool:
    """True for the file name of a previous-format entry (`<hash>.npz`, not `<hash>.f16.npz`)."""
    return name.endswith(LEGACY_SUFFIX) and not name.endswith(ENTRY_SUFFIX)


def load_case(record: CaseRecord, cfg: PreprocessConfig, *, cache_dir: Path | None = None) -> PreprocessedCase:
    """Preprocess one case, through the compact cache in `cache_dir` when one is given.

    Args:
        record: the case; `label_path` may be None (unlabelled pool case).
        cfg: preprocessing settings.
        cache_dir: the cache folder (created on first write); None: no cache, the exact float32
            image of `preprocess_case`.

    Returns:
        PreprocessedCase with `image` (C, D, H, W) float32 (float16-rounded when cached), `label`
        (1, D, H, W) uint8 or None.

    Raises:
        DataError: unreadable files, or a label that does not fit the image (`preprocess_case`).
    """
    if cache_dir is None:
        return preprocess_case(record, cfg)
    files = [*record.image_paths, *([record.label_path] if record.label_path is not None else [])]
    key = content_hash(files, cfg, has_label=record.label_path is not None)
    case = _read_entry(entry_path(cache_dir, key), key)
    if case is None:
        legacy = legacy_entry_path(cache_dir, key)
        # An old entry is read by preprocess_case itself; without one it must not write one.
        case = _compact(preprocess_case(record, cfg, cache_dir=cache_dir if legacy.is_file() else None))
        write_entry(cache_dir, case)
        legacy.unlink(missing_ok=True)
    case.case_id, case.site = record.case_id, record.site  # the entry is keyed by content only
    return case


def write_entry(cache_dir: Path, case: PreprocessedCase) -> Path:
    """Write `case` as the compact entry of its content hash (temp-then-rename); its path."""
    arrays = {
        "image": case.image.astype(_STORED_IMAGE),
        "label": case.label if case.label is not None else np.zeros((0,), np.uint8),
        "has_label": np.array(case.label is not None),
        "affine": case.affine,
        "spacing_mm": np.array(case.spacing_mm),
        "native_shape": np.array(case.native_shape),
        "native_affine": case.native_affine,
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # uncompressed: a read is a copy, not a decompression

    path = entry_path(cache_dir, case.content_hash)
    atomic_write(path, write)
    return path


def _read_entry(path: Path, key: str) -> PreprocessedCase | None:
    """The case stored in `path`; None when there is none or it is damaged (it is then rewritten)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return PreprocessedCase(
                case_id="",
                image=z["image"].astype(np.float32),
                label=z["label"].astype(np.uint8, copy=False) if z["has_label"] else None,
                affine=z["affine"],
                spacing_mm=tuple(float(s) for s in z["spacing_mm"]),  # type: ignore[arg-type]
                native_shape=tuple(int(s) for s in z["native_shape"]),  # type: ignore[arg-type]
                native_affine=z["native_affine"],
                content_hash=key,
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _compact(case: PreprocessedCase) -> PreprocessedCase:
    """`case` with its image rounded to float16 (kept as float32): what its entry reads back as."""
    case.image = case.image.astype(_STORED_IMAGE).astype(np.float32)
    if case.label is not None:
        case.label = case.label.astype(np.uint8, copy=False)
    return case
