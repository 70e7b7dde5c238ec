"""Build the demo corpus: virtual subjects of real MNI152 anatomy imaged at five simulated sites.

Layout of the written folder (an nnU-Net v2 raw dataset, so the demo goes through the real import
path; every case is labelled because the demo's ground truth plays the expert oracle):

    OUT/dataset.json                 labels name->index, channel_names {"0": "T1"}, numTraining
    OUT/imagesTr/{case}_0000.nii.gz  int16 image (site B is T2-like but still channel 0)
    OUT/labelsTr/{case}.nii.gz       uint8 classes 0 background, 1 CSF, 2 GM, 3 WM
    OUT/cases.csv                    case_id, site, split
    OUT/README.txt, OUT/NOTICE.txt   what is real and simulated; the McGill ICBM152 notice
    OUT/preview.png                  label overlays and one case per site, to check by eye
    OUT/demo_build.json              the build's parameters (makes a rebuild idempotent)

Splits: `source_train` / `source_test` (site "source", plain T1, pre-training only); `pool`
(sites A-D, the cases active learning queries) and `test` (A-D, balanced, never queried).
The unbalanced pool mimics an archive: A (bias field, the common old scanner) dominates, then B,
C, and D (the rare noisy protocol) is rarest. Every case's randomness comes from
(seed, site, split, index), so a case is identical in both layouts and in any build order.
Source: ASSFT Studio DATA.md, issue 2.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from assft_core.data.demo.anatomy import CLASS_NAMES, TemplateAnatomy, load_template_anatomy, voxel_spacing_mm
from assft_core.data.demo.atomic import atomic_directory
from assft_core.data.demo.notice import MCGILL_NOTICE, readme_text
from assft_core.data.demo.plan import (
    PLANS,
    DemoCase,
    DemoLayout,
    DemoSize,
    Site,
    parse_layout,
    parse_size,
    plan_cases,
)
from assft_core.data.demo.preview import PreviewVolume, write_preview
from assft_core.data.demo.sites import acquire
from assft_core.data.demo.subjects import make_subject
from assft_core.data.records import Split
from assft_core.errors import DataError

# Bump when the same parameters would produce different files (invalidates idempotent reuse).
BUILDER_VERSION = 1
MANIFEST = "demo_build.json"

ProgressCallback = Callable[[int, int, str], None]


def build_demo_corpus(
    out_dir: Path,
    *,
    layout: DemoLayout | str = DemoLayout.UNBALANCED,
    seed: int = 0,
    size: DemoSize | str = DemoSize.FULL,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Build the demo corpus into `out_dir` (an nnU-Net v2 raw folder; see the module docstring).

    The corpus is built in a sibling temporary folder and renamed into place, so `out_dir` is
    either absent/empty or complete. Rebuilding into a folder that holds a demo corpus with the
    same parameters returns it untouched (idempotent).

    Args:
        out_dir: the corpus folder to create; must be absent, empty, or a previous build with the
            same layout, seed and size.
        layout: target pool spread over sites A-D ("unbalanced" 24/10/4/2 or "balanced" 10 each;
            tiny: 3/1/1/1 or 2 each).
        seed: non-negative integer; same seed, same bytes.
        size: "full" (2 mm, box 80 x 96 x 80, 72 cases) or "tiny" (4 mm, box 40 x 48 x 40).
        on_progress: called as on_progress(done, total, case_id) after each case.

    Returns:
        `out_dir`.

    Raises:
        DataError: bad layout/size/seed, or `out_dir` is a file or holds anything else.
    """
    layout, size = parse_layout(layout), parse_size(size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"demo seed must be a non-negative integer, not {seed!r}.")
    out_dir = Path(out_dir)
    params = {"version": BUILDER_VERSION, "layout": layout.value, "seed": int(seed), "size": size.value}
    if _existing_build(out_dir, params):
        return out_dir
    with atomic_directory(out_dir) as tmp:
        _write_corpus(tmp, params, layout, size, int(seed), on_progress)
    return out_dir


def _existing_build(out_dir: Path, params: dict[str, object]) -> bool:
    """True when `out_dir` already holds this exact build; False when absent or empty.

    Raises:
        DataError: `out_dir` is a file, another build, or a non-empty folder of something else.
    """
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: is a file, not a folder. Give a new folder for the demo corpus.")
    if not any(out_dir.iterdir()):
        return False
    manifest = out_dir / MANIFEST
    try:
        found = json.loads(manifest.read_text())
    except (OSError, ValueError):
        raise DataError(
            f"{out_dir}: folder is not empty and is not a demo corpus (no readable {MANIFEST}); "
            "refusing to write into it. Give a new or empty folder."
        ) from None
    if {k: found.get(k) for k in params} != params:
        have = ", ".join(f"{k}={found.get(k)}" for k in params)
        want = ", ".join(f"{k}={v}" for k, v in params.items())
        raise DataError(
            f"{out_dir}: holds a demo corpus built with {have}, not {want}. "
            "Give another folder, or delete this one to rebuild it."
        )
    return True


def _write_corpus(
    root: Path,
    params: dict[str, object],
    layout: DemoLayout,
    size: DemoSize,
    seed: int,
    on_progress: ProgressCallback | None,
) -> None:
    """Write every file of the corpus into `root` (a fresh temporary folder)."""
    template = load_template_anatomy(PLANS[size].voxel_mm)
    cases = plan_cases(layout, size)
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    examples: dict[Site, PreviewVolume] = {}
    for done, case in enumerate(cases, start=1):
        image, label, affine = _make_case(template, case, seed)
        _save_nifti(root / "imagesTr" / f"{case.case_id}_0000.nii.gz", image, affine)
        _save_nifti(root / "labelsTr" / f"{case.case_id}.nii.gz", label, affine)
        if case.site not in examples:
            title = f"{case.site.value} ({case.case_id})"
            examples[case.site] = PreviewVolume(title, image, label, voxel_spacing_mm(affine))
        if on_progress is not None:
            on_progress(done, len(cases), case.case_id)
    with open(root / "cases.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["case_id", "site", "split"])
        writer.writerows([c.case_id, c.site.value, c.split.value] for c in cases)
    (root / "dataset.json").write_text(json.dumps(_dataset_json(len(cases)), indent=2) + "\n")
    (root / "README.txt").write_text(readme_text(params, _counts_table(cases)))
    (root / "NOTICE.txt").write_text(MCGILL_NOTICE + "\n")
    write_preview(
        root / "preview.png",
        PreviewVolume("template", template.t1, template.label, template.spacing_mm),
        [examples[s] for s in Site if s in examples],
    )
    (root / MANIFEST).write_text(json.dumps({**params, "n_cases": len(cases)}, indent=2) + "\n")


def _make_case(template: TemplateAnatomy, case: DemoCase, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image int16, label uint8, affine) of one case, from its own random stream."""
    site_code = list(Site).index(case.site)
    split_code = list(Split).index(case.split)
    rng = np.random.default_rng(np.random.SeedSequence([seed, site_code, split_code, case.index]))
    t1, label = make_subject(template, rng)
    return acquire(t1, label, template.affine, case.site, rng)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write a NIfTI with qform = sform = `affine` (scanner RAS, mm)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, path)


def _dataset_json(n_cases: int) -> dict[str, object]:
    """nnU-Net v2 dataset.json (plus "modality" and provenance keys, which nnU-Net ignores)."""
    return {
        "name": "ASSFT_demo_MNI152",
        "description": "Virtual subjects of the MNI152 2009a template imaged at five simulated sites "
        "(see README.txt). Labels: 0 background, 1 CSF, 2 grey matter, 3 white matter.",
        "channel_names": {"0": "T1"},
        "labels": {name: index for index, name in CLASS_NAMES.items()},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "modality": "MRI",
        "licence": "McGill ICBM152 notice (NOTICE.txt)",
        "reference": "Fonov et al., NeuroImage 54(1) 2011; Fonov et al., NeuroImage 47 S102 2009",
    }


def _counts_table(cases: list[DemoCase]) -> str:
    """'site split count' lines for the README."""
    counts: dict[tuple[str, str], int] = {}
    for c in cases:
        key = (c.site.value, c.split.value)
        counts[key] = counts.get(key, 0) + 1
    return "\n".join(f"  {site:<7} {split:<13} {n:>3}" for (site, split), n in counts.items())
