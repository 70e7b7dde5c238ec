"""`assft stats`, `assft model-info` and `assft pretrain`: source statistics, model inspection, pre-training.

`stats` writes `source_stats.pt` beside the checkpoint and records it in the model card, so the
query's knowledge gap uses exact source statistics (ASSFT, METHOD.md §1, choice a); `pretrain`
trains the demo model on a corpus's source split (`assft_core.models.pretrain`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from assft_core.data.records import Split
from assft_core.errors import DataError, ModelError
from assft_core.models.card import CARD_FILE
from assft_core.models.demo_paths import DEFAULT_CORPUS_DIR, DEFAULT_STEPS, DEMO_CORPUS, DEMO_MODEL_DIR

# Engine modules (torch, MONAI) are imported inside the handlers: `assft --help` must stay fast.

# What a model argument accepts (every command that loads a model says the same).
MODEL_FOLDER_HELP = ("model folder: this project's (holding model_card.json, or the card file), a MONAI bundle, "
                     "an nnU-Net v2 trained-model folder, or an `assft export` folder (docs/models.md)")

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `assft stats` to the `assft` parser."""
    p = subparsers.add_parser(
        "stats",
        help="compute a model's source statistics over source cases you own (for the knowledge gap)",
        description="Run the scoring pass of the model over every case of one split of a dataset and save "
        "per-layer source statistics beside the checkpoint (source_stats.pt); the model card is updated.",
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder (folder of pairs, MSD or nnU-Net v2)")
    p.add_argument("--checkpoint", type=Path, required=True, help=MODEL_FOLDER_HELP)
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
    info.add_argument("model", type=Path, help=MODEL_FOLDER_HELP)
    info.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    info.set_defaults(func=run_model_info)

    pre = subparsers.add_parser(
        "pretrain",
        help="pre-train the demo model (small BatchNorm UNet) on a corpus's source_train cases",
        description="Train a small BatchNorm MONAI UNet on the source_train cases of a corpus only, compute its "
        "source statistics over those whole volumes, evaluate it on source_test and on the target test split "
        "per site (the domain gap), and write weights, source_stats.pt, evaluation.json, NOTICE and a model card "
        "with its fingerprint to --out. Without --corpus, the demo corpus is built first (full size, unbalanced, "
        f"seed 0) in {DEFAULT_CORPUS_DIR}.",
    )
    pre.add_argument(
        "--corpus", type=Path, default=None,
        help=f"dataset folder with source_train (and source_test, test) cases in cases.csv (default: the demo "
        f"corpus in {DEFAULT_CORPUS_DIR}, built if missing)",
    )
    pre.add_argument("--out", type=Path, default=None, help=f"model folder to write (default: the shipped demo model, {DEMO_MODEL_DIR})")
    pre.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimiser steps (default {DEFAULT_STEPS})")
    pre.add_argument("--seed", type=int, default=0, help="seeds initialisation, crops and augmentation (default 0)")
    pre.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    pre.add_argument("--force", action="store_true", help="replace an existing model folder at --out")
    pre.add_argument(
        "--refresh-fingerprint", action="store_true",
        help="do not train: check that the present code preprocesses every case the model at --out used to the "
        "same arrays, bit for bit, and if so rewrite only the code entries of its fingerprint (after a change to "
        "the data code that leaves the inputs alone)",
    )
    pre.set_defaults(func=run_pretrain)


def run_stats(args: argparse.Namespace) -> int:
    """Handler of `assft stats`; returns the exit code."""
    import torch

    from assft_core.config import InferenceConfig
    from assft_core.data.importers import import_dataset
    from assft_core.data.preprocess import preprocess_case
    from assft_core.models.loaded import load_model
    from assft_core.models.source_stats import STATS_FILE, compute_source_stats, save_source_stats

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
    from assft_core.models.formats import detect_format, update_override

    if Path(args.checkpoint).is_dir() and not (model_dir / CARD_FILE).is_file() and detect_format(model_dir):
        card_path = update_override(model_dir, source_stats=STATS_FILE)  # a bundle / nnU-Net folder keeps its own files
    else:
        card_path = card.save(Path(args.checkpoint) if Path(args.checkpoint).is_file() else model_dir / CARD_FILE)
    print(f"source statistics of {len(stats)} layers over {len(cases)} case(s) written to {target}; "
          f"{card_path} now names it (source_stats: {STATS_FILE}).")
    return 0


def run_model_info(args: argparse.Namespace) -> int:
    """Handler of `assft model-info`; returns the exit code."""
    from assft_core.models.loaded import load_model

    from assft_core.models.formats import detect_format

    loaded = load_model(args.model, device=args.device)
    card = loaded.card
    path = Path(args.model)
    fmt = detect_format(path) if path.is_dir() and not (path / CARD_FILE).is_file() else None
    print(f"format: { {'monai_bundle': 'MONAI bundle', 'nnunet_v2': 'nnU-Net v2 trained-model folder'}.get(fmt or '', 'ASSFT model folder')}")
    kwargs = card.backbone_kwargs
    if card.backbone in ("monai_bundle", "nnunet"):  # their kwargs carry whole configs / plans
        kwargs = {k: v for k, v in kwargs.items() if k not in ("config", "metadata", "plans", "dataset_json", "arch_kwargs")}
    print(f"backbone {card.backbone} {kwargs}, {card.in_channels} channel(s), classes {card.classes}")
    pre = card.preprocess
    if pre.modality.value == "CT":
        norm = f"CT window {list(pre.ct_window)} HU"
    elif pre.mri_normalisation.value == "percentile":
        norm = f"MRI percentiles {list(pre.mri_percentiles)}"
    else:
        norm = f"MRI {pre.mri_normalisation.value} per image"
    spacing = " × ".join(f"{float(v):.4g}" for v in card.spacing_mm or ()) or "n/a"
    print(f"ROI {list(card.roi_size)} voxels, spacing {spacing} mm, {pre.modality.value}, {norm}")
    if card.notes:
        print(f"notes: {card.notes}")
    print(loaded.report)
    norms = loaded.encoder_norm_layers()
    print("at round 0:")
    print(f"  head for the card's classes: {'yes (ASD available)' if loaded.has_head else 'no (ASD unavailable until fine-tuning)'}")
    print(f"  embedding z: {'yes (diversity available)' if loaded.has_embedding else 'no (diversity unavailable)'}")
    hint = {
        "file": "from the statistics file",
        "batchnorm": "BatchNorm running statistics (run `assft stats` for exact ones)",
        "none": "none (KG ≡ 1)" + (f"; {len(norms)} encoder norm layers are hooked: run `assft stats` over source "
                                    "data you own to turn the knowledge gap on" if norms else "; no hookable encoder"),
    }[loaded.source_stats_origin]
    print(f"  source statistics: {loaded.source_stats_origin}: {hint}")
    if not norms and card.backbone == "monai_bundle":
        from assft_core.models.formats.monai_bundle import LAYOUT_KEY, normalisation_layers

        print(f"  to hook this {type(loaded.network).__name__}'s encoder, name it in assft_override.json "
              f"backbone_kwargs.{LAYOUT_KEY} (norm_layers, stages, head, total_stride; docs/models.md); "
              f"its normalisation layers: {normalisation_layers(loaded.network)}")
    return 0


def run_pretrain(args: argparse.Namespace) -> int:
    """Handler of `assft pretrain`; returns the exit code."""
    from assft_core.models.pretrain import pretrain, pretrain_train_config, site_dice
    from assft_core.train.trainer import ProgressEvent

    if args.steps < 1:
        raise ModelError(f"--steps {args.steps}: give at least 1 optimiser step (default {DEFAULT_STEPS}).")
    out = args.out if args.out is not None else DEMO_MODEL_DIR
    corpus = args.corpus
    if corpus is None:
        from assft_core.data.demo.builder import build_demo_corpus

        corpus = DEFAULT_CORPUS_DIR
        print(f"demo corpus: {corpus} (built now if missing: {DEMO_CORPUS})", flush=True)
        build_demo_corpus(corpus, **DEMO_CORPUS)  # type: ignore[arg-type]
    elif not Path(corpus).is_dir():
        raise DataError(f"{corpus}: corpus folder not found; build one with `assft demo build DIR` or omit --corpus.")

    if args.refresh_fingerprint:
        from assft_core.models.pretrain import refresh_demo_fingerprint

        changed = refresh_demo_fingerprint(Path(out), Path(corpus))
        print(f"{out}: the present code preprocesses every case the model used to the same arrays; "
              + (f"fingerprint entries rewritten: {', '.join(changed)}." if changed else "its fingerprint was already current."))
        return 0

    def progress(event: ProgressEvent) -> None:
        if event.step == 1 or event.step % 25 == 0 or event.step == event.total:
            print(f"  step {event.step}/{event.total} loss {event.loss:.3f} lr {event.lr:.2e} "
                  f"{event.elapsed_s:.0f} s, about {event.eta_s:.0f} s left", flush=True)

    result = pretrain(
        Path(corpus),
        Path(out),
        train_cfg=pretrain_train_config(args.steps, args.seed, args.device),
        force=args.force,
        on_progress=progress,
        on_message=lambda msg: print(msg, flush=True),
    )
    for name, report in (("source_test", result.source_test), ("target test", result.target_test)):
        per_site = ", ".join(f"{site} {d:.3f}" if d is not None else f"{site} n/a" for site, d in site_dice(report).items())
        print(f"mean foreground Dice, {name}: {per_site or 'no labelled cases'}")
    times = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings_s.items())
    print(f"wall time: {times}")
    return 0
