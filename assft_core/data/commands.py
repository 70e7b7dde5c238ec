"""`assft validate`: integrity report of one image (and label) or of a whole dataset folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from assft_core.data.importers import import_dataset
from assft_core.data.integrity import check_dataset, check_image, check_pair
from assft_core.data.records import IntegrityReport
from assft_core.errors import DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `validate` to the `assft` parser."""
    p = subparsers.add_parser(
        "validate",
        help="check an image/label pair or a dataset folder before training (exit 1 on errors)",
        description="Integrity check (nnU-Net style): every problem with its file and fix. "
        "Exit 0 when clean (warnings allowed), 1 when there are errors.",
    )
    p.add_argument("image", nargs="?", type=Path, help="image file (.nii or .nii.gz; 3D, or 4D with --channels)")
    p.add_argument("label", nargs="?", type=Path, help="label map of the image (optional)")
    p.add_argument("--classes", type=_positive_int, metavar="K",
                   help="number of classes including background (label values must lie in 0..K-1; a class absent "
                   "from a label is then a warning); with --dataset, for a folder that declares no classes")
    p.add_argument("--channels", type=_positive_int, metavar="N", help="declared channel count of a 4D image")
    p.add_argument("--dataset", type=Path, metavar="DIR",
                   help="check every case of a dataset folder (pairs, DICOM series folders, MSD or nnU-Net v2) instead")
    p.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """Handler of `assft validate`; returns 0 (no errors) or 1 (errors)."""
    if args.dataset is not None:
        if args.image is not None:
            raise DataError("give either IMAGE [LABEL] or --dataset DIR, not both.")
        import tempfile

        with tempfile.TemporaryDirectory(prefix="assft-validate-") as tmp:  # DICOM series read as NIfTI here
            manifest = import_dataset(args.dataset, dicom_out=Path(tmp))
            reports = check_dataset(manifest, classes=_classes(args.classes))
        n_lab = sum(c.label_path is not None for c in manifest.cases)
        print(f"dataset {manifest.name} ({manifest.schema}, {manifest.modality}, {len(manifest.channel_names)} channel(s), "
              f"classes {manifest.classes or 'undeclared'}): {len(manifest.cases)} cases, {n_lab} labelled")
    else:
        if args.image is None:
            raise DataError("give an IMAGE file (and optionally its LABEL), or --dataset DIR. See: assft validate --help")
        if args.label is None:
            reports = [check_image([args.image], expected_channels=args.channels)]
        else:
            reports = [check_pair([args.image], args.label, _classes(args.classes), expected_channels=args.channels)]
    return _print_reports(reports)


def _classes(k: int | None) -> dict[int, str] | None:
    return {i: f"class_{i}" for i in range(k)} if k else None


def _print_reports(reports: list[IntegrityReport]) -> int:
    n_err = sum(len(r.errors) for r in reports)
    n_warn = sum(len(r.warnings) for r in reports)
    for r in reports:
        for problem in r.problems:
            print(f"[{r.case_id}] {problem}")
    bad = sum(not r.ok for r in reports)
    verdict = "FAILED" if n_err else "OK"
    print(f"{verdict}: {len(reports)} case(s) checked, {bad} with errors; {n_err} error(s), {n_warn} warning(s).")
    return 1 if n_err else 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
