"""Tiny NIfTI datasets for the session tests (imported by conftest and tests; unique module name)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Save `data` as NIfTI at `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def label_map(seed: int, shape: tuple[int, int, int] = (8, 8, 8)) -> np.ndarray:
    """A two-class label map (uint8) with a seeded foreground block."""
    lab = np.zeros(shape, dtype=np.uint8)
    lo = 1 + seed % 3
    lab[lo : lo + 4, 2:6, 2:6] = 1
    return lab


def make_dataset(root: Path, *, pool_labels: bool = True) -> Path:
    """An MSD dataset: pool cases p0..p3 (sites A, A, B, B) and test cases t0, t1 (sites A, B).

    Test cases always have labels; pool cases have them when `pool_labels`, else only p0 has.
    """
    rng = np.random.default_rng(0)
    training = []
    rows = []
    for i, (cid, site, split) in enumerate(
        [("p0", "A", "pool"), ("p1", "A", "pool"), ("p2", "B", "pool"), ("p3", "B", "pool"),
         ("t0", "A", "test"), ("t1", "B", "test")]
    ):
        write_nifti(root / "imagesTr" / f"{cid}.nii.gz", rng.normal(size=(8, 8, 8)).astype(np.float32))
        entry = {"image": f"./imagesTr/{cid}.nii.gz"}
        if split == "test" or pool_labels or cid == "p0":
            write_nifti(root / "labelsTr" / f"{cid}.nii.gz", label_map(i))
            entry["label"] = f"./labelsTr/{cid}.nii.gz"
        training.append(entry)
        rows.append({"case_id": cid, "site": site, "split": split})
    meta = {"name": "tiny", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "blob"},
            "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta))
    with open(root / "cases.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["case_id", "site", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root
