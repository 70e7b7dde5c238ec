"""`assft export-picks | import-labels`: the annotation round trip with an external tool.

`export-picks OUT` writes the current round's approved picks (images, pre-annotations from the
current model, ITK-SNAP / 3D Slicer label files, manifest) into a new folder; `import-labels DIR`
stores the corrected `<case>.nii.gz` files found in DIR and reports how much each pre-annotation
was changed. Exit codes: 0 ok, 1 user error (including any refused file), 2 usage error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from assft_core.session import annotation, rounds
from assft_core.session.commands import project_from_args, with_project_option


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `export-picks` and `import-labels` to `assft`."""
    p = with_project_option(sub.add_parser(
        "export-picks", help="write the approved picks with pre-annotations for 3D Slicer / ITK-SNAP into a new folder",
        description="For each approved pick of the current round: the original image (byte-identical), the "
        "current model's prediction on the image's grid as a pre-annotation (uint8), an ITK-SNAP label "
        "description file, a 3D Slicer colour table and a manifest naming the label file expected back. "
        "OUT must not exist or be empty."))
    p.add_argument("out", type=Path, metavar="OUT", help="new or empty folder")
    p.add_argument("--device", default=None, help="auto (CUDA when present), cpu or cuda[:i] (default: the project's)")
    p.set_defaults(func=_export_picks)

    p = with_project_option(sub.add_parser(
        "import-labels", help="store the corrected labels of a folder (matched by the export's names), with the effort",
        description="Each <case>.nii.gz in DIR (or DIR/labels/ of an export folder) is validated like `assft label` "
        "and stored as a new version; per case, the voxels and slices changed from the pre-annotation and their "
        "Dice are reported and kept. A file that fails stores nothing; the others are stored."))
    p.add_argument("folder", type=Path, metavar="DIR", help="folder holding the corrected label files")
    p.set_defaults(func=_import_labels)


def _export_picks(args: argparse.Namespace) -> int:
    project = project_from_args(args)
    device = args.device or project.config.inference.device
    exported = annotation.export_picks(project, args.out, device=device)
    print(f"exported {len(exported)} pick(s) of round {rounds.current_round(project).idx} to {args.out}:")
    for e in exported:
        print(f"  #{e.rank:<3} {e.case_id:<24} {e.site:<12} label back as {e.expected_label}")
    print(f"open images/ with preannotations/ in ITK-SNAP ({annotation.ITKSNAP_LABELS}) or 3D Slicer "
          f"({annotation.SLICER_CTBL}); then `assft import-labels -p {project.folder} {Path(args.out) / 'labels'}`")
    return 0


def _import_labels(args: argparse.Namespace) -> int:
    project = project_from_args(args)
    report = annotation.import_labels(project, args.folder)
    for e in report.stored:
        print(f"stored {annotation.format_effort(e)}")
    for name, why in sorted(report.refused.items()):
        print(f"refused {name}: {why}")
    if report.missing:
        print("no file yet for: " + ", ".join(report.missing))
    total_v = sum(e.changed_voxels for e in report.stored)
    total_s = sum(e.changed_slices for e in report.stored)
    print(f"{len(report.stored)} stored, {len(report.refused)} refused; effort {total_v} voxel(s), {total_s} slice(s) changed")
    info = rounds.current_round(project)
    print(f"round {info.idx}: {info.state.value}")
    return 1 if report.refused else 0
