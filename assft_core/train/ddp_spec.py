"""Job specs for the `torchrun` entry: one JSON file that every rank reads.

A launcher cannot hand Python objects to N worker processes on several nodes, so the caller
writes what a job needs into a folder (settings, model folder, training arrays) and passes the
spec's path. Relative paths in a spec are relative to its folder, so a spec folder on shared
storage reads the same on every node.

    spec = write_train_spec(run / "ddp", model_dir=model, data=data, cfg=cfg, run_dir=run / "train")
    launch_torchrun(4, ["train", str(spec)])        # or, one process: run_train_spec(spec)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assft_core.config import InferenceConfig, PreprocessConfig, QueryConfig, TrainConfig, from_dict, to_dict
from assft_core.data.records import CaseRecord, Split
from assft_core.errors import AssftError
from assft_core.fsutil import atomic_write, atomic_write_json
from assft_core.train.data import TrainData, TrainSample

TRAIN_SPEC_FORMAT = "assft-ddp-train/1"
SCORE_SPEC_FORMAT = "assft-ddp-score/1"
TRAIN_SPEC_NAME = "ddp_train.json"
SCORE_SPEC_NAME = "ddp_score.json"
SAMPLES_DIR = "samples"


class SpecError(AssftError):
    """A job spec file is missing, unreadable or of another kind."""


@dataclass
class TrainSpec:
    """A fine-tuning job for `ddp_entry train`.

    Attributes:
        model_dir: model folder (model card + weights) to start from.
        run_dir: the trainer's run folder (config.json, checkpoint.pt with the trained weights).
        train: the run's settings; `batch_size` is per rank (effective batch N · batch_size).
        labelled: `.npz` files (image, label, case_id) of the labelled cases.
        pseudo: `.npz` files of the pseudo-labelled cases (empty: supervised run).
        phase: progress label ("supervised", "ssft"); None: the trainer's default.
        sync_batchnorm: with several CUDA ranks, BatchNorm layers become SyncBatchNorm, so their
            batch statistics cover the global batch (equal to one process with batch N·b).
    """

    model_dir: Path
    run_dir: Path
    train: TrainConfig
    labelled: list[Path]
    pseudo: list[Path] = field(default_factory=list)
    phase: str | None = None
    sync_batchnorm: bool = True


@dataclass
class ScoreSpec:
    """A scoring pass for `ddp_entry score` (cases preprocessed lazily, each by one rank).

    Attributes:
        model_dir: model folder to score with.
        out_dir: the score table's folder (per-case maps in `out_dir/cases`).
        model_tag: the table's model name ("f0", "round2", ...).
        cache_key: per-case cache key of model + preprocessing; None disables the cache.
        cases: the cases, in table order.
        preprocess: preprocessing settings of the cases.
        preprocess_cache: cache folder of preprocessed cases, or None.
        query: query settings of the pass.
        inference: sliding-window settings; its device is replaced by each rank's own.
    """

    model_dir: Path
    out_dir: Path
    model_tag: str
    cache_key: str | None
    cases: list[CaseRecord]
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    preprocess_cache: Path | None = None
    query: QueryConfig = field(default_factory=QueryConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


def write_train_spec(
    folder: Path,
    *,
    model_dir: Path,
    data: TrainData,
    cfg: TrainConfig,
    run_dir: Path,
    phase: str | None = None,
    sync_batchnorm: bool = True,
) -> Path:
    """Write a `TrainSpec` and its training arrays into `folder` (created; files temp-then-rename).

    Args:
        folder: the spec's folder (engine-owned; `ddp_train.json` and `samples/` are replaced).
        model_dir: model folder to start from.
        data: labelled and pseudo-labelled cases; each is saved as `samples/<kind>/<i>.npz`.
        cfg: training settings (per-rank `batch_size`).
        run_dir: the trainer's run folder.
        phase, sync_batchnorm: see `TrainSpec`.

    Returns:
        Path of the spec file.
    """
    folder = Path(folder)
    files: dict[str, list[str]] = {}
    for kind, samples in (("labelled", data.labelled), ("pseudo", data.pseudo)):
        files[kind] = [_save_sample(folder, f"{SAMPLES_DIR}/{kind}/{i:05d}.npz", s) for i, s in enumerate(samples)]
    spec = {
        "format": TRAIN_SPEC_FORMAT,
        "model_dir": str(Path(model_dir).resolve()),
        "run_dir": str(Path(run_dir).resolve()),
        "train": to_dict(cfg),
        "phase": phase,
        "sync_batchnorm": bool(sync_batchnorm),
        **files,
    }
    return atomic_write_json(folder / TRAIN_SPEC_NAME, spec)


def read_train_spec(path: Path) -> TrainSpec:
    """Read a spec written by `write_train_spec`.

    Raises:
        SpecError: the file is missing, unreadable, of another format or has bad settings.
    """
    raw, base = _read(path, TRAIN_SPEC_FORMAT)
    try:
        return TrainSpec(
            model_dir=base / raw["model_dir"],
            run_dir=base / raw["run_dir"],
            train=from_dict(TrainConfig, raw["train"]),
            labelled=[base / p for p in raw["labelled"]],
            pseudo=[base / p for p in raw.get("pseudo", [])],
            phase=raw.get("phase"),
            sync_batchnorm=bool(raw.get("sync_batchnorm", True)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"{path}: bad training spec ({exc}). Fix: write it again with write_train_spec.") from None


def load_train_data(spec: TrainSpec) -> TrainData:
    """The spec's training cases.

    Raises:
        SpecError: a sample file is missing or unreadable.
        DataError: a sample's arrays have the wrong shapes (see `TrainSample`).
    """
    return TrainData([_load_sample(p) for p in spec.labelled], [_load_sample(p) for p in spec.pseudo])


def write_score_spec(path: Path, spec: ScoreSpec) -> Path:
    """Write `spec` as JSON to `path` (temp-then-rename); returns `path`."""
    raw = {
        "format": SCORE_SPEC_FORMAT,
        "model_dir": str(Path(spec.model_dir).resolve()),
        "out_dir": str(Path(spec.out_dir).resolve()),
        "model_tag": spec.model_tag,
        "cache_key": spec.cache_key,
        "cases": [_record_to_json(r) for r in spec.cases],
        "preprocess": to_dict(spec.preprocess),
        "preprocess_cache": str(Path(spec.preprocess_cache).resolve()) if spec.preprocess_cache is not None else None,
        "query": to_dict(spec.query),
        "inference": to_dict(spec.inference),
    }
    return atomic_write_json(Path(path), raw)


def read_score_spec(path: Path) -> ScoreSpec:
    """Read a spec written by `write_score_spec`.

    Raises:
        SpecError: the file is missing, unreadable, of another format or has bad settings.
    """
    raw, base = _read(path, SCORE_SPEC_FORMAT)
    try:
        return ScoreSpec(
            model_dir=base / raw["model_dir"],
            out_dir=base / raw["out_dir"],
            model_tag=str(raw["model_tag"]),
            cache_key=raw["cache_key"],
            cases=[_record_from_json(r, base) for r in raw["cases"]],
            preprocess=from_dict(PreprocessConfig, raw["preprocess"]),
            preprocess_cache=base / raw["preprocess_cache"] if raw.get("preprocess_cache") else None,
            query=from_dict(QueryConfig, raw["query"]),
            inference=from_dict(InferenceConfig, raw["inference"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"{path}: bad scoring spec ({exc}). Fix: write it again with write_score_spec.") from None


def _read(path: Path, fmt: str) -> tuple[dict[str, Any], Path]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecError(
            f"{path}: cannot read the job spec ({exc}). Fix: pass the spec file the launcher wrote."
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise SpecError(f"{path}: not a {fmt!r} spec (format {found!r}). Fix: use `train` for training specs and "
                        "`score` for scoring specs.")
    return raw, path.parent.resolve()


def _save_sample(folder: Path, rel: str, sample: TrainSample) -> str:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez(fh, image=sample.image, label=sample.label, case_id=np.array(sample.case_id))

    atomic_write(folder / rel, write)
    return rel


def _load_sample(path: Path) -> TrainSample:
    try:
        with np.load(path) as npz:
            return TrainSample(str(npz["case_id"]), npz["image"], npz["label"])
    except (OSError, ValueError, KeyError) as exc:
        raise SpecError(f"{path}: unreadable training sample ({exc}). Fix: write the spec again.") from None


def _record_to_json(record: CaseRecord) -> dict[str, Any]:
    return {
        "case_id": record.case_id,
        "image_paths": [str(Path(p).resolve()) for p in record.image_paths],
        "label_path": str(Path(record.label_path).resolve()) if record.label_path is not None else None,
        "site": record.site,
        "split": Split(record.split).value,
    }


def _record_from_json(raw: dict[str, Any], base: Path) -> CaseRecord:
    return CaseRecord(
        case_id=str(raw["case_id"]),
        image_paths=tuple(base / p for p in raw["image_paths"]),
        label_path=base / raw["label_path"] if raw.get("label_path") else None,
        site=str(raw.get("site", "unknown")),
        split=Split(raw.get("split", Split.POOL.value)),
    )
