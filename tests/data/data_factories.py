"""Tiny synthetic NIfTI files for data-layer tests (made in the test, never shipped data)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (12, 10, 8)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save `array` as NIfTI at `path` (parents created); returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def scan(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """A float32 'scan': a noisy bright box on a zero background."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    inner = tuple(s - 4 for s in shape)
    img[2:-2, 2:-2, 2:-2] = 100 + rng.normal(0, 5, inner)
    return img


def label(shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A uint8 label map with classes 0, 1, 2."""
    lab = np.zeros(shape, np.uint8)
    lab[3:6, 3:6, 3:5] = 1
    lab[6:9, 4:7, 4:6] = 2
    return lab
