"""Dataset import: folder of pairs, Medical Segmentation Decathlon and nnU-Net v2 raw layouts.

Each schema is detected and parsed explicitly (no guessing between them once detected):

- folder: `case.nii.gz` + `case_seg.nii.gz` side by side, or `images/` + `labels/` with the
  same file names; images without a label are unlabelled pool cases.
- MSD: `dataset.json` with `labels` (index -> name), `modality` (index -> name), `training`
  (image/label pairs, images may be 4D multi-channel) and `test` (unlabelled images).
- nnU-Net v2 raw: `dataset.json` with `labels` (name -> index), `channel_names`, `file_ending`;
  `imagesTr/{case}_{XXXX}{ending}` one file per channel, `labelsTr/{case}{ending}`, `imagesTs/`.

An optional `cases.csv` (columns case_id, site, split) sets each case's site and split; without
it every case has site "unknown" and split "pool". Original files are only read, never changed.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from assft_core.config import AIR_BELOW_HU
from assft_core.data.dicom import DicomSeriesError, convert_series, series_folders
from assft_core.data.io import NIFTI_SUFFIXES, load_image
from assft_core.data.records import CaseRecord, DatasetManifest, Problem, Severity, Split
from assft_core.errors import DataError
from assft_core.fsutil import read_json_object

CASES_CSV = "cases.csv"
DATASET_JSON = "dataset.json"
LABEL_SUFFIX = "_seg"
_CT_TOKENS = {"CT", "CECT", "NCCT", "HU"}
# MRI sequence names, plus nnU-Net v2 normalisation names that mean "not CT" (z-score family).
_MR_TOKENS = {"MR", "MRI", "T1", "T1W", "T2", "T2W", "T1GD", "T1C", "T1CE", "FLAIR", "PD", "ADC", "DWI", "DW", "HBV",
              "SWI", "BOLD", "ZSCORE", "NONORM", "RESCALE_TO_0_1", "RGB_TO_0_1"}


def _read_json_object(path: Path) -> dict[str, Any]:
    return read_json_object(path, error=DataError, fix="Fix the syntax (e.g. python -m json.tool FILE).")


def import_dataset(
    root: Path | str,
    *,
    classes: dict[int, str] | None = None,
    modality: str | None = None,
    dicom_out: Path | None = None,
) -> DatasetManifest:
    """Parse a dataset folder into a manifest (schema detected from its layout).

    Args:
        root: the dataset folder.
        classes: classes of a plain folder dataset (index -> name); ignored for MSD / nnU-Net,
            whose dataset.json declares them.
        modality: "CT" or "MRI" for a plain folder dataset (default: CT when the first image
            holds air below -500 HU, else MRI); ignored when dataset.json names it.
        dicom_out: where a plain folder dataset's DICOM series are written as NIfTI
            (`<dicom_out>/<case>.nii.gz` and a `.json` sidecar with the SeriesInstanceUID); needed
            only when the folder holds series (`assft_core.data.dicom`). A series that cannot be
            converted stays a case with its reason in `manifest.conversion_problems`.

    Returns:
        DatasetManifest with every case found, site and split from `cases.csv` when present.

    Raises:
        DataError: missing folder, malformed dataset.json or cases.csv, missing or duplicate
            files, with the file and the fix in the message.

    Example:
        >>> manifest = import_dataset("Task04_Hippocampus")  # doctest: +SKIP
        >>> manifest.schema, len(manifest.cases)  # doctest: +SKIP
        ('msd', 394)
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found. Give the folder holding the images (and dataset.json if any).")
    meta_path = root / DATASET_JSON
    if meta_path.exists():
        meta = _read_json_object(meta_path)
        if "channel_names" in meta:
            manifest = _import_nnunetv2(root, meta, meta_path)
        elif "modality" in meta or "training" in meta:
            manifest = _import_msd(root, meta, meta_path)
        else:
            raise DataError(
                f"{meta_path}: neither an nnU-Net v2 (channel_names) nor an MSD (modality, training) dataset.json. "
                "Fix the file, or remove it to import the folder as image/label pairs."
            )
    else:
        manifest = _import_folder(root, classes or {}, modality, dicom_out)
    _check_unique(manifest.cases, root)
    csv_path = root / CASES_CSV
    if csv_path.exists():
        manifest.cases = _apply_cases_csv(manifest.cases, csv_path)
    return manifest


def sanitise_case_id(raw: str) -> str:
    """A case id restricted to [A-Za-z0-9._-] (other characters become '_')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", raw.strip())
    return cleaned or "case"


def infer_modality(names: Iterable[str]) -> str:
    """"CT" or "MRI" from channel / modality names (e.g. {"0": "T2", "1": "ADC"} -> "MRI").

    Raises:
        DataError: when no name is recognisable.
    """
    names = list(names)
    tokens = {t for n in names for t in re.split(r"[^A-Z0-9_]+", n.upper()) if t}
    if tokens & _CT_TOKENS:
        return "CT"
    if tokens & _MR_TOKENS or any(t.startswith(("T1", "T2")) for t in tokens):
        return "MRI"
    raise DataError(
        f"cannot tell CT from MRI from the channel names {names}. Name a channel 'CT', or an MRI sequence (T1, T2, FLAIR, MRI)."
    )


def _import_folder(root: Path, classes: dict[int, str], modality: str | None, dicom_out: Path | None) -> DatasetManifest:
    images_dir, labels_dir = root / "images", root / "labels"
    pairs: list[tuple[str, Path, Path | None]] = []
    series: list[tuple[str, Path, Path | None]] = []  # DICOM series folders: case, folder, NIfTI label
    if images_dir.is_dir():
        for img in _nifti_files(images_dir):
            lab = labels_dir / img.name
            pairs.append((_strip_nifti(img.name), img, lab if lab.exists() else None))
        for folder in series_folders(images_dir):
            lab = next((labels_dir / (folder.name + s) for s in NIFTI_SUFFIXES if (labels_dir / (folder.name + s)).exists()), None)
            series.append((folder.name, folder, lab))
        if labels_dir.is_dir():
            known = {img.name for _, img, _ in pairs} | {f.name + s for _c, f, _l in series for s in NIFTI_SUFFIXES}
            orphans = sorted({p.name for p in _nifti_files(labels_dir)} - known)
            if orphans:
                raise DataError(f"{labels_dir}: label(s) {orphans[:5]} have no image of the same name in {images_dir}. "
                                "Rename them to match their images, or remove them.")
    else:
        files = _nifti_files(root)
        stems = {_strip_nifti(f.name): f for f in files}
        series_names = {f.name for f in series_folders(root)}
        for stem, img in stems.items():
            if stem.endswith(LABEL_SUFFIX):
                if stem[: -len(LABEL_SUFFIX)] not in stems and stem[: -len(LABEL_SUFFIX)] not in series_names:
                    raise DataError(f"{img}: label without its image {stem[: -len(LABEL_SUFFIX)]}.nii.gz. "
                                    "Add the image or remove the label.")
                continue
            lab = stems.get(stem + LABEL_SUFFIX)
            pairs.append((stem, img, lab))
        for folder in series_folders(root):
            series.append((folder.name, folder, stems.get(folder.name + LABEL_SUFFIX)))
    if not pairs and not series:
        raise DataError(
            f"{root}: no NIfTI images or DICOM series found. Expected case.nii.gz + case_seg.nii.gz, images/ + labels/, "
            "one DICOM series folder per case, an MSD or an nnU-Net v2 dataset.json."
        )
    cases = [CaseRecord(case_id=sanitise_case_id(cid), image_paths=(img,), label_path=lab) for cid, img, lab in pairs]
    problems: dict[str, list[Problem]] = {}
    dicom_modality = None
    if series:
        if dicom_out is None:
            raise DataError(f"{root}: holds DICOM series but no folder to convert them into was given "
                            "(import it into a project with `assft init` / `assft import`, or `assft validate --dataset`).")
        for cid, folder, lab in series:
            case_id = sanitise_case_id(cid)
            target = Path(dicom_out) / f"{case_id}.nii.gz"
            try:
                volume = convert_series(folder, target)
            except DicomSeriesError as exc:
                problems[case_id] = [Problem(Severity.ERROR, exc.folder, exc.reason, exc.fix)]
                cases.append(CaseRecord(case_id=case_id, image_paths=(folder,), label_path=lab))
                continue
            dicom_modality = dicom_modality or volume.modality
            cases.append(CaseRecord(case_id=case_id, image_paths=(target,), label_path=lab, series_uid=volume.series_uid))
    if modality is None:
        if dicom_modality is not None:
            modality = dicom_modality
        elif pairs:
            first = load_image([pairs[0][1]], keep_integer_dtype=True)
            modality = "CT" if float(np.min(first.array)) < AIR_BELOW_HU else "MRI"
        else:
            raise DataError(f"{root}: no DICOM series could be read (see each series' problem) and no NIfTI image "
                            "tells the modality. Fix the series, or give the modality.")
    else:
        modality = infer_modality([modality])
    return DatasetManifest(
        name=root.name, root=root, schema="folder", classes=dict(classes), channel_names=[modality],
        modality=modality, cases=cases, conversion_problems=problems,
    )


def _import_msd(root: Path, meta: dict[str, Any], meta_path: Path) -> DatasetManifest:
    labels = _require(meta, "labels", dict, meta_path, 'e.g. "labels": {"0": "background", "1": "tumour"}')
    try:
        classes = {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise DataError(f"{meta_path}: MSD 'labels' keys must be class indices (\"0\", \"1\", ...), got {list(labels)}. "
                        "An nnU-Net v2 file (name -> index) also needs 'channel_names'.") from None
    _check_classes(classes, meta_path)
    modality_map = _require(meta, "modality", dict, meta_path, 'e.g. "modality": {"0": "CT"}')
    channel_names = [str(modality_map[k]) for k in sorted(modality_map, key=lambda k: int(k))]
    cases: list[CaseRecord] = []
    training = meta.get("training", [])
    if not isinstance(training, list):
        raise DataError(f"{meta_path}: 'training' must be a list of {{\"image\": ..., \"label\": ...}} entries.")
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{meta_path}: training entry {i} must be an object with 'image' (and 'label'); got {entry!r}.")
        img = _existing(root, entry["image"], meta_path)
        lab = _existing(root, entry["label"], meta_path) if entry.get("label") else None
        cases.append(CaseRecord(sanitise_case_id(_strip_nifti(img.name)), (img,), lab))
    test = meta.get("test", [])
    if not isinstance(test, list):
        raise DataError(f"{meta_path}: 'test' must be a list of image paths.")
    for item in test:
        rel = item.get("image") if isinstance(item, dict) else item
        if not isinstance(rel, str):
            raise DataError(f"{meta_path}: test entry {item!r} is not an image path.")
        img = _existing(root, rel, meta_path)
        cases.append(CaseRecord(sanitise_case_id(_strip_nifti(img.name)), (img,), None))
    return DatasetManifest(
        name=str(meta.get("name", root.name)), root=root, schema="msd", classes=classes,
        channel_names=channel_names, modality=infer_modality(channel_names), cases=cases,
    )


def _import_nnunetv2(root: Path, meta: dict[str, Any], meta_path: Path) -> DatasetManifest:
    channels = _require(meta, "channel_names", dict, meta_path, 'e.g. "channel_names": {"0": "CT"}')
    labels = _require(meta, "labels", dict, meta_path, 'e.g. "labels": {"background": 0, "tumour": 1}')
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in NIFTI_SUFFIXES:
        raise DataError(f"{meta_path}: file_ending {ending!r} is not NIfTI. Convert the images to .nii.gz and set "
                        '"file_ending": ".nii.gz".')
    try:
        channel_names = [str(channels[k]) for k in sorted(channels, key=lambda k: int(k))]
        classes = {}
        for name, idx in labels.items():
            if isinstance(idx, (list, tuple)):
                raise DataError(f"{meta_path}: region-based label {name!r}: {idx} is not supported. "
                                "Use one index per class.")
            classes[int(idx)] = str(name)
    except (TypeError, ValueError):
        raise DataError(f"{meta_path}: 'labels' must map names to indices (nnU-Net v2) and 'channel_names' must be "
                        'keyed "0", "1", ...') from None
    if "ignore" in classes.values():
        raise DataError(f"{meta_path}: an 'ignore' label is not supported yet. Remove it from 'labels' "
                        "(set those voxels to 0 or label them).")
    _check_classes(classes, meta_path)
    n_ch = len(channel_names)
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    cases: list[CaseRecord] = []
    for folder, labelled in (("imagesTr", True), ("imagesTs", False)):
        img_dir = root / folder
        if not img_dir.is_dir():
            if labelled:
                raise DataError(f"{root}: nnU-Net v2 dataset without {folder}/. Put the images there as "
                                f"CASE_0000{ending}.")
            continue
        by_case: dict[str, dict[int, Path]] = {}
        for f in sorted(img_dir.iterdir()):
            if f.name.startswith(".") or not f.name.endswith(ending):
                continue
            m = pattern.match(f.name)
            if m is None:
                raise DataError(f"{f}: nnU-Net v2 image names are CASE_XXXX{ending} (XXXX = channel). Rename it.")
            by_case.setdefault(m["case"], {})[int(m["ch"])] = f
        for cid, files in by_case.items():
            if sorted(files) != list(range(n_ch)):
                raise DataError(f"{img_dir}: case {cid} has channels {sorted(files)}, dataset.json declares {n_ch} "
                                f"({channel_names}). Add the missing CASE_XXXX{ending} files.")
            lab = root / "labelsTr" / f"{cid}{ending}" if labelled else None
            cases.append(CaseRecord(sanitise_case_id(cid), tuple(files[c] for c in range(n_ch)),
                                    lab if lab is not None and lab.exists() else None))
    labels_dir = root / "labelsTr"
    if labels_dir.is_dir():
        known = {_strip_nifti(c.image_paths[0].name)[:-5] for c in cases}
        orphans = sorted(_strip_nifti(f.name) for f in labels_dir.iterdir()
                         if f.name.endswith(ending) and _strip_nifti(f.name) not in known)
        if orphans:
            raise DataError(f"{labels_dir}: label(s) {orphans[:5]} have no images in imagesTr/. Add CASE_0000{ending} "
                            "for them or remove the labels.")
    return DatasetManifest(
        name=str(meta.get("name", root.name)), root=root, schema="nnunetv2", classes=classes,
        channel_names=channel_names, modality=infer_modality(channel_names), cases=cases,
    )


def _apply_cases_csv(cases: list[CaseRecord], csv_path: Path) -> list[CaseRecord]:
    """Set site and split from cases.csv; every row must name a known case."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            header = [h.strip() for h in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot be read as CSV ({exc}). Save it as UTF-8 CSV with columns case_id, site, split.") from None
    if rows and "case_id" not in header:
        raise DataError(f"{csv_path}: no 'case_id' column (found {header}). The header row must be: case_id,site,split.")
    by_id = {c.case_id: c for c in cases}
    allowed = [s.value for s in Split]
    updates: dict[str, CaseRecord] = {}
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        cid = sanitise_case_id(row["case_id"])
        if cid not in by_id:
            raise DataError(f"{csv_path}: line {line}: case_id {row['case_id']!r} is not a case of this dataset. "
                            "Fix the id or remove the row.")
        if cid in updates:
            raise DataError(f"{csv_path}: line {line}: case_id {cid!r} appears twice. Keep one row per case.")
        split = row.get("split") or Split.POOL.value
        if split not in allowed:
            raise DataError(f"{csv_path}: line {line}: split {split!r} is not one of {allowed}.")
        old = by_id[cid]
        updates[cid] = CaseRecord(old.case_id, old.image_paths, old.label_path, row.get("site") or "unknown", Split(split),
                                  old.series_uid)
    return [updates.get(c.case_id, c) for c in cases]


def _check_unique(cases: list[CaseRecord], root: Path) -> None:
    seen: dict[str, CaseRecord] = {}
    for c in cases:
        if c.case_id in seen:
            raise DataError(f"{root}: two cases share the id {c.case_id!r} ({seen[c.case_id].image_paths[0].name}, "
                            f"{c.image_paths[0].name}) after sanitising. Rename one of them.")
        seen[c.case_id] = c


def _check_classes(classes: dict[int, str], meta_path: Path) -> None:
    if sorted(classes) != list(range(len(classes))) or not classes:
        raise DataError(f"{meta_path}: label indices {sorted(classes)} must be consecutive from 0 (background). "
                        "Renumber the classes in dataset.json and in the label files.")


def _require(meta: dict[str, Any], key: str, tp: type, path: Path, example: str) -> Any:
    if not isinstance(meta.get(key), tp) or not meta[key]:
        raise DataError(f"{path}: missing or malformed {key!r}; {example}.")
    return meta[key]


def _existing(root: Path, rel: str, meta_path: Path) -> Path:
    p = (root / rel).resolve() if not Path(rel).is_absolute() else Path(rel).resolve()
    base = root.resolve()
    if p != base and base not in p.parents:
        raise DataError(f"{meta_path}: lists {rel!r}, which is outside the dataset folder {base}. "
                        "Copy the file into the dataset folder and list it by a path relative to dataset.json.")
    if not p.exists():
        raise DataError(f"{meta_path}: lists {rel!r}, which does not exist under {root}. Fix the path or add the file.")
    return p


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".") and f.name.endswith(NIFTI_SUFFIXES))


def _strip_nifti(name: str) -> str:
    return re.sub(r"\.nii(\.gz)?$", "", name)
