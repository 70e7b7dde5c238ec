"""`assft stats`: source statistics of a model's encoder norm layers over source data the user owns.

Writes `source_stats.pt` beside the checkpoint and records it in the model card, so the query's
knowledge gap uses exact source statistics (ASSFT, METHOD.md §1, choice a).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from assft_core.config import InferenceConfig
from assft_core.data.records import Split
from assft_core.errors import DataError, ModelError
from assft_core.models.card import CARD_FILE
from assft_core.models.loaded import load_model
from assft_core.models.source_stats import STATS_FILE, compute_source_stats, save_source_stats


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `assft stats` to the `assft` parser."""
    p = subparsers.add_parser(
        "stats",
        help="compute a model's source statistics over source cases you own (for the knowledge gap)",
        description="Run the scoring pass of the model over every case of one split of a dataset and save "
        "per-layer source statistics beside the checkpoint (source_stats.pt); the model card is updated.",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder (folder of pairs, MSD or nnU-Net v2)")
    p.add_argument("--checkpoint", type=Path, required=True, help="model folder holding model_card.json, or the card file")
    p.add_argument(
        "--split", default=Split.SOURCE_TRAIN.value, choices=[s.value for s in Split],
        help="which cases are source data (default: source_train)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing source_stats.pt")
    p.set_defaults(func=run_stats)

    info = subparsers.add_parser(
        "model-info",
        help="load a model and print its card, load report and source-statistics origin",
        description="Load a model folder (or card) exactly as a project would, and say what it can do: "
        "matched / missing / re-initialised keys, whether it has a head for the card's classes (ASD), an "
        "embedding (diversity) and source statistics (knowledge gap).",
    )
    info.add_argument("model", type=Path, help="model folder holding model_card.json, or the card file")
    info.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    info.set_defaults(func=run_model_info)


def run_stats(args: argparse.Namespace) -> int:
    """Handler of `assft stats`; returns the exit code."""
    from assft_core.data.importers import import_dataset
    from assft_core.data.preprocess import preprocess_case

    model_dir = Path(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint).parent
    target = model_dir / STATS_FILE
    if target.exists() and not args.overwrite:
        raise ModelError(f"{target} exists; pass --overwrite to replace it with statistics over {args.data}.")
    loaded = load_model(args.checkpoint, device=args.device)
    manifest = import_dataset(args.data)
    cases = [c for c in manifest.cases if c.split.value == args.split]
    if not cases:
        raise DataError(
            f"{args.data}: no case has split {args.split!r}; mark source cases in cases.csv (column split) "
            "or choose another --split."
        )
    card = loaded.card
    cfg = InferenceConfig(roi_size=card.roi_size, device=args.device)
    images = (torch.as_tensor(preprocess_case(c, card.preprocess).image) for c in cases)
    stats = compute_source_stats(loaded, images, cfg)
    save_source_stats(stats, target, meta={"dataset": str(args.data), "split": args.split, "cases": len(cases)})
    card.source_stats = STATS_FILE
    card_path = card.save(Path(args.checkpoint) if Path(args.checkpoint).is_file() else model_dir / CARD_FILE)
    print(f"source statistics of {len(stats)} layers over {len(cases)} case(s) written to {target}; "
          f"{card_path} now names it (source_stats: {STATS_FILE}).")
    return 0


def run_model_info(args: argparse.Namespace) -> int:
    """Handler of `assft model-info`; returns the exit code."""
    loaded = load_model(args.model, device=args.device)
    card = loaded.card
    print(f"backbone {card.backbone} {card.backbone_kwargs}, {card.in_channels} channel(s), classes {card.classes}")
    print(f"ROI {list(card.roi_size)} voxels, spacing {list(card.spacing_mm or ())} mm, {card.preprocess.modality.value}")
    print(loaded.report)
    print(f"head for the card's classes: {'yes' if loaded.has_head else 'no (ASD unavailable until fine-tuning)'}")
    print(f"embedding z: {'yes' if loaded.has_embedding else 'no (diversity unavailable)'}")
    print(f"source statistics: {loaded.source_stats_origin}")
    return 0
