"""`assft bench cost --phase all|inference|train_step|umap|pages`: the multi-phase cost report.

Builds the inputs once (a model: `--model` or a tiny random UNet; cases: `--data` pool cases or
synthetic volumes), measures each asked phase with `cost_phases`, and writes one JSON file:

    {"version": 1, "created_utc": str, "machine": {...}, "note": str, "command": [argv],
     "settings": {...}, "phases": {name: PhaseCost as a dict}, "skipped": {name: reason}}

A phase that cannot run here (pages without `--project`) is listed under "skipped" with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assft_core.bench.report import utc_stamp
from assft_core.config import InferenceConfig, QueryConfig, TrainConfig
from assft_core.data.records import PreprocessedCase, Split
from assft_core.errors import DataError
from assft_core.fsutil import atomic_write_json
from assft_core.models.loaded import LoadedModel

COST_REPORT_VERSION = 1


def dataset_cases(root: Path, model: LoadedModel, limit: int) -> Iterator[PreprocessedCase]:
    """Up to `limit` pool cases of the dataset at `root`, preprocessed for `model` (with labels).

    Raises:
        DataError: when the dataset has no pool case.
    """
    from assft_core.data.importers import import_dataset
    from assft_core.data.preprocess import preprocess_case

    manifest = import_dataset(root)
    pool = [c for c in manifest.cases if c.split is Split.POOL][:limit]
    if not pool:
        raise DataError(f"{root}: no pool cases to measure on; check the dataset folder (and its cases.csv split).")
    for record in pool:
        yield preprocess_case(record, model.card.preprocess)


def with_timing_labels(cases: Sequence[PreprocessedCase], n_classes: int) -> list[PreprocessedCase]:
    """Cases without a label get one for timing only: voxels above one standard deviation of the
    first channel are class 1 (a training step's cost does not depend on what the label says)."""
    out = []
    for case in cases:
        if case.label is None:
            image = case.image[0]
            label = (image > image.mean() + image.std()).astype(np.uint8)[None] * min(1, n_classes - 1)
            case = dataclasses.replace(case, label=label)
        out.append(case)
    return out


def load_cost_model(args: argparse.Namespace) -> LoadedModel:
    """`--model`'s model, or a tiny random-weights UNet (`cost.tiny_model`)."""
    from assft_core.bench.cost import tiny_model

    if args.model:
        from assft_core.models.loaded import load_model

        return load_model(Path(args.model), device=args.device)
    return tiny_model(seed=args.seed, device=args.device)


def load_cost_cases(args: argparse.Namespace, model: LoadedModel) -> list[PreprocessedCase]:
    """`--cases` pool cases of `--data` preprocessed for `model`, or synthetic volumes of `--shape`."""
    from assft_core.bench.cost import synthetic_cases

    if args.data:
        return list(dataset_cases(Path(args.data), model, args.cases))
    return list(synthetic_cases(args.cases, tuple(args.shape), in_channels=model.card.in_channels, seed=args.seed))


def measure_phases(args: argparse.Namespace, phases: Sequence[str]) -> dict[str, Any]:
    """Measure `phases` (names of `commands.MEASURED_PHASES`) with the settings in `args`.

    Returns:
        The report dict (see the module docstring).

    Raises:
        DataError / ModelError: from loading the model or the cases.
    """
    from assft_core.bench import cost_phases
    from assft_core.bench.report import command_line, load_note, machine_info

    needs_model = any(p in ("inference", "scoring", "train_step") for p in phases)
    model = load_cost_model(args) if needs_model else None
    cases = load_cost_cases(args, model) if model is not None else []
    infer_cfg = (
        InferenceConfig(roi_size=tuple(model.card.roi_size), n_tta=args.n_tta, device=args.device) if model else None
    )
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for phase in phases:
        if phase == "inference":
            cost = cost_phases.measure_inference(model, cases, infer_cfg, repeats=args.repeats, clock=args.clock)
        elif phase == "scoring":
            cost = cost_phases.measure_scoring(model, cases, infer_cfg, QueryConfig(), repeats=args.repeats, clock=args.clock)
        elif phase == "train_step":
            shape = cases[0].image.shape[1:]
            patch = tuple(args.patch) if args.patch else tuple(min(r, s) for r, s in zip(model.card.roi_size, shape))
            train_cfg = TrainConfig(batch_size=args.batch_size, patch_size=patch, seed=args.seed)
            cost = cost_phases.measure_train_step(
                model, with_timing_labels(cases, model.card.out_channels), train_cfg, steps=args.steps
            )
        elif phase == "umap":
            cost = cost_phases.measure_umap(args.umap_points, args.umap_dim, seed=args.seed)
        elif phase == "pages":
            if not args.project:
                skipped[phase] = "no --project given (a scored project whose pages are loaded)"
                continue
            cost = cost_phases.measure_pages(Path(args.project), repeats=args.page_repeats)
        else:
            raise ValueError(f"unknown cost phase {phase!r}")
        results[phase] = dataclasses.asdict(cost)
    plain = results.get("inference", {}).get("median_s")
    if plain and "train_step" in results:
        # One optimiser step in units of one whole-case inference: what a round's S steps cost.
        results["train_step"]["ratio_to_inference"] = results["train_step"]["median_s"] / plain
    return {
        "version": COST_REPORT_VERSION,
        "created_utc": utc_stamp(),
        "machine": dataclasses.asdict(machine_info(str(args.device))),
        "note": load_note(),
        "command": command_line(),
        "settings": {k: v for k, v in vars(args).items() if k != "func"},
        "phases": results,
        "skipped": skipped,
    }


def write_cost_report(report: dict[str, Any], path: Path) -> Path:
    """Write the report as JSON to `path` (temp-then-rename; parent folders created)."""
    return atomic_write_json(Path(path), json.loads(json.dumps(report, default=str)))
