"""A benchmark run's dataset: a view of an nnU-Net v2 raw folder holding only some of its cases.

Each seed of a benchmark works on its own subset of the pool (METHOD.md §5) plus the whole test
split. The view is a new folder of symbolic links to the original files (never copied, never
modified) with its own `dataset.json` and `cases.csv`, so the run's project imports exactly those
cases through the ordinary import path. Identical bytes behind the links keep every
content-keyed cache (preprocessing, `f_0` scores) valid across runs.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from assft_core.data.importers import CASES_CSV, import_dataset
from assft_core.data.records import CaseRecord, DatasetManifest, Split
from assft_core.errors import DataError
from assft_core.fsutil import atomic_write

DATASET_JSON = "dataset.json"


def read_benchmark_dataset(root: Path) -> DatasetManifest:
    """Import a dataset folder and check it can host a benchmark.

    Raises:
        DataError: naming the folder and the fix, when it is not an nnU-Net v2 raw folder with a
            cases.csv, or has no pool case or no labelled test case, or a pool case lacks its label.
    """
    root = Path(root)
    manifest = import_dataset(root)
    if manifest.schema != "nnunetv2":
        raise DataError(
            f"{root}: the strategy benchmark reads nnU-Net v2 raw folders (dataset.json with channel_names, "
            f"imagesTr/, labelsTr/, cases.csv); this one is '{manifest.schema}'. Fix: convert it, or build the demo "
            "corpus with `assft demo build`."
        )
    pool = [c for c in manifest.cases if c.split is Split.POOL]
    test = [c for c in manifest.cases if c.split is Split.TEST and c.label_path is not None]
    unlabelled = [c.case_id for c in pool if c.label_path is None]
    problems = []
    if not pool:
        problems.append("no pool case")
    if not test:
        problems.append("no labelled test case (the benchmark reports test-set Dice only)")
    if unlabelled:
        problems.append(f"pool case(s) {unlabelled[:5]} without a label (the oracle needs every pool label)")
    if problems:
        raise DataError(f"{root}: cannot run a benchmark: {'; '.join(problems)}. Fix: set splits in {CASES_CSV}.")
    return manifest


def write_view(manifest: DatasetManifest, keep: Iterable[str], out_dir: Path) -> Path:
    """Write the view of `manifest` holding the cases `keep` into `out_dir` (replaced if present).

    The view is made in a temporary sibling folder and renamed into place, so `out_dir` is
    either absent or complete.

    Args:
        manifest: an imported nnU-Net v2 dataset (`read_benchmark_dataset`).
        keep: ids of the cases the view holds.
        out_dir: the view folder.

    Returns:
        `out_dir`.

    Raises:
        DataError: when an id in `keep` is not a case of the dataset.
    """
    by_id = {c.case_id: c for c in manifest.cases}
    keep = sorted(set(keep))
    unknown = [c for c in keep if c not in by_id]
    if unknown:
        raise DataError(f"{manifest.root}: no case(s) {unknown[:5]}; the view can only hold the dataset's cases.")
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        cases = [by_id[c] for c in keep]
        for case in cases:
            _link_case(case, staging)
        meta = json.loads((manifest.root / DATASET_JSON).read_text(encoding="utf-8"))
        meta["numTraining"] = len(cases)
        (staging / DATASET_JSON).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        _write_cases_csv(cases, staging / CASES_CSV)
        if out_dir.exists():
            shutil.rmtree(out_dir)  # a stale view of this benchmark's own making
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _link_case(case: CaseRecord, view: Path) -> None:
    for image in case.image_paths:
        _link(image, view / "imagesTr" / image.name)
    if case.label_path is not None:
        _link(case.label_path, view / "labelsTr" / case.label_path.name)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(Path(src).resolve(), dst)


def _write_cases_csv(cases: list[CaseRecord], path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case_id", "site", "split"])
            writer.writerows([c.case_id, c.site, c.split.value] for c in cases)

    atomic_write(path, write)
