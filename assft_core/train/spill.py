"""Training samples kept on disk, not in memory: the unlabelled cases of a round (R, f_0's
retention targets) can be hundreds of real-size scans, and a step reads only a few patches.

Each sample is written once as uncompressed `.npy` files and opened again memory-mapped, so a
patch crop reads only the patch's pages and the resident memory stays flat in the number of cases
(issue 16; nnU-Net trains from unpacked `.npy` files the same way). Images are stored as float16
when that is exact (every image read from the preprocessing cache is) and as float32 otherwise,
so a patch has the same values as the in-memory array it replaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from assft_core.fsutil import atomic_write
from assft_core.train.data import TrainSample

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def spill_samples(samples: Iterable[TrainSample], folder: Path) -> list[TrainSample]:
    """Write each sample of `samples` to `folder` as it comes and return them memory-mapped.

    `samples` is consumed one at a time (pass a generator to load one case at a time); no sample's
    in-memory arrays are kept after it is written.

    Args:
        samples: training samples, image (C, D, H, W) float, label (1, D, H, W) uint8.
        folder: where `<case>.image.npy` and `<case>.label.npy` go (created; files replaced).

    Returns:
        The samples in order, with image (C, D, H, W) float16 or float32 and label (1, D, H, W)
        uint8, both read-only `np.memmap`s; `case_id` and `group` kept.

    Raises:
        OSError: the folder is not writable or the disk is full.
    """
    folder = Path(folder)
    out: list[TrainSample] = []
    for sample in samples:
        stem = _UNSAFE.sub("_", sample.case_id)
        if any(_UNSAFE.sub("_", s.case_id) == stem for s in out):  # two ids alike once made file-safe
            stem = f"{stem}-{len(out)}"
        image = _compact(np.asarray(sample.image))
        label = np.asarray(sample.label, dtype=np.uint8)
        image_path = _write_npy(folder / f"{stem}.image.npy", image)
        label_path = _write_npy(folder / f"{stem}.label.npy", label)
        out.append(
            TrainSample(
                sample.case_id,
                np.load(image_path, mmap_mode="r"),
                np.load(label_path, mmap_mode="r"),
                group=sample.group,
            )
        )
        del sample, image, label  # before the next case is made, not after
    return out


def _compact(image: np.ndarray) -> np.ndarray:
    """float16 when every value survives the round trip exactly, else float32."""
    if image.dtype == np.float16:
        return image
    image = image.astype(np.float32, copy=False)
    half = image.astype(np.float16)
    return half if np.array_equal(half.astype(np.float32), image, equal_nan=True) else image


def _write_npy(path: Path, array: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    return atomic_write(path, write)
