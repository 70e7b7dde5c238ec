"""`assft predict`: segment new scans with a model folder (card + weights)."""

from __future__ import annotations

import argparse
from pathlib import Path

from assft_core.config import InferenceConfig
from assft_core.models.commands import MODEL_FOLDER_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `assft predict` to the `assft` parser."""
    p = subparsers.add_parser(
        "predict",
        help="segment new scans with a model; writes <case>.nii.gz label maps, never overwriting",
        description="Segment NIfTI scans with a model (this project's folder, a MONAI bundle or an nnU-Net v2 folder). Each label is "
        "written on its scan's own grid (same shape and affine). Channel files of one case named "
        "nnU-Net style (case_0000.nii.gz, case_0001.nii.gz) are grouped into one case. Existing "
        "output files are never overwritten: the command refuses and writes nothing.",
    )
    p.add_argument("model", type=Path, help=MODEL_FOLDER_HELP)
    p.add_argument("images", type=Path, nargs="+", help="NIfTI scans (.nii or .nii.gz)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder for the label maps")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:i]")
    p.add_argument("--tta", type=int, default=1, help="flip test-time augmentations averaged (1-8; default 1)")
    p.add_argument("--overlap", type=float, default=InferenceConfig.overlap, help="sliding-window overlap fraction")
    p.set_defaults(func=run_predict)


def group_channels(images: list[Path]) -> list[list[Path]]:
    """Group files by case name (nnU-Net `_0000`, `_0001` channel suffixes), keeping input order."""
    from assft_core.train.predict import output_name

    groups: dict[str, list[Path]] = {}
    for path in images:
        groups.setdefault(output_name([path]), []).append(path)
    return [sorted(files) for files in groups.values()]


def run_predict(args: argparse.Namespace) -> int:
    """Handler of `assft predict`; returns the exit code."""
    from assft_core.models.loaded import load_model  # heavy imports only when the command runs
    from assft_core.train.predict import predict

    model_dir = Path(args.model)
    if not (model_dir / "model_card.json").exists() and (model_dir / "model" / "model_card.json").is_file():
        model_dir = model_dir / "model"  # an `assft export` folder: the model sits in model/
    model = load_model(model_dir, device=args.device)
    infer = InferenceConfig(roi_size=model.card.roi_size, overlap=args.overlap, n_tta=args.tta, device=args.device)
    written = predict(
        model.network, group_channels(list(args.images)), args.out, preprocess_cfg=model.card.preprocess, infer_cfg=infer
    )
    for path in written:
        print(path)
    return 0
