"""Records that flow out of the data layer: cases, datasets, integrity reports, preprocessed cases.

IO contract (after nnU-Net v2): arrays are channel-first, spacing in mm and the affine (RAS, mm)
travel beside them, never inside a bare array.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# nnU-Net's channel suffix ("_0000") and the NIfTI extension: what a file name adds to its case id.
_CASE_FILE_SUFFIX = re.compile(r"(_\d{4})?\.nii(\.gz)?$")


def case_id_from_filename(name: str) -> str:
    """The case id a NIfTI file name stands for: `"liver_7_0000.nii.gz"` -> `"liver_7"`.

    Drops a trailing nnU-Net channel suffix (`_` and four digits) and `.nii` / `.nii.gz`; any
    other name is returned unchanged.
    """
    return _CASE_FILE_SUFFIX.sub("", name)


class Split(str, enum.Enum):
    """Role of a case. Only `pool` cases are ever queried; `test` is scored for display only."""

    POOL = "pool"
    TEST = "test"
    SOURCE_TRAIN = "source_train"  # pre-training only (demo corpus)
    SOURCE_TEST = "source_test"  # pre-training evaluation only


@dataclass(frozen=True)
class CaseRecord:
    """One case of a dataset, as imported (paths to the user's original files, never modified).

    Attributes:
        case_id: sanitised id, unique in the dataset ([A-Za-z0-9._-]+).
        image_paths: one file per channel, or one multi-channel (4D) file.
        label_path: the reference label map, or None for an unlabelled case.
        site: site / scanner / protocol from cases.csv ("unknown" without it).
        split: pool (default), test, source_train or source_test.
        series_uid: the SeriesInstanceUID of an image converted from a DICOM series (its
            `image_paths` then name the NIfTI written by the import), else None.
    """

    case_id: str
    image_paths: tuple[Path, ...]
    label_path: Path | None = None
    site: str = "unknown"
    split: Split = Split.POOL
    series_uid: str | None = None


@dataclass
class DatasetManifest:
    """A parsed dataset folder (folder of pairs, MSD or nnU-Net v2 raw).

    Attributes:
        name: dataset name.
        root: the dataset folder.
        schema: "folder", "msd" or "nnunetv2".
        classes: label index -> name, 0 = background, consecutive.
        channel_names: one name per input channel.
        modality: "CT" or "MRI" (from the schema's channel/modality names).
        cases: every case found.
        conversion_problems: case id -> why its DICOM series could not be converted (such a
            case is kept, its `image_paths` naming the series folder; `check_dataset` reports it).
    """

    name: str
    root: Path
    schema: str
    classes: dict[int, str]
    channel_names: list[str]
    modality: str
    cases: list[CaseRecord] = field(default_factory=list)
    conversion_problems: dict[str, list[Problem]] = field(default_factory=dict)


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One integrity finding: which file, what is wrong, how to fix it."""

    severity: Severity
    file: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.severity.value.upper()}: {self.file}: {self.message} Fix: {self.fix}"


@dataclass
class IntegrityReport:
    """Every problem of a case, collected before anything trains (nnU-Net style)."""

    case_id: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors


@dataclass
class PreprocessedCase:
    """A case on the network's grid (RAS, target spacing, normalised intensities, cropped, padded).

    Attributes:
        case_id: the case's id.
        image: (C, D, H, W) float32, normalised.
        label: (1, D, H, W) uint8 class indices (255 = ignore), or None.
        affine: (4, 4) voxel -> world (RAS, mm) of the preprocessed grid.
        spacing_mm: (3,) voxel size of the preprocessed grid in mm.
        native_shape: (X, Y, Z) spatial shape of the original image file.
        native_affine: (4, 4) affine of the original image file.
        content_hash: hash of the input files' bytes and the preprocessing settings (cache key).
        site: the case's site, carried for per-site reporting.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]
    native_shape: tuple[int, int, int]
    native_affine: np.ndarray
    content_hash: str
    site: str = "unknown"
