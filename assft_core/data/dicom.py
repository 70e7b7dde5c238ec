"""DICOM series in: one folder of CT or MR slices per case, read with pydicom, stored as NIfTI.

A series folder holds the slice files of one series (any file names; files that are not DICOM,
such as a DICOMDIR or notes, are skipped). Every header is read first, without pixel data, and
checked: one SeriesInstanceUID, modality CT or MR, the same rows, columns, pixel spacing and
orientation on every slice, at least two slices, distinct positions, evenly spaced along one line.
A missing slice shows as a gap twice the others and is refused with the positions around it;
uneven spacing is refused with the spacings found (resample it with the scanner software, or
convert it with dcm2niix, which interpolates). Only then is pixel data read, with each slice's
RescaleSlope and RescaleIntercept applied (float32; HU for CT).

Geometry: DICOM's patient frame is LPS; the voxel (i, j, k) of the written NIfTI is column i, row
j of slice k (slices sorted along the normal of ImageOrientationPatient), and its affine (RAS, mm,
as nibabel gives it) is

    diag(-1, -1, 1, 1) @ [[row_cos * col_spacing, col_cos * row_spacing, slice_step, IPP_0], [0, 0, 0, 1]]

with `slice_step` the (constant) difference of consecutive ImagePositionPatient vectors, so an
oblique or tilted stack keeps its exact geometry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from assft_core.errors import DataError
from assft_core.fsutil import atomic_write, atomic_write_json

DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
SUPPORTED_MODALITIES = {"CT": "CT", "MR": "MRI"}
# Relative spread of slice gaps still taken for even spacing (scanners round positions to ~1e-3 mm).
SPACING_TOLERANCE = 0.01
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class DicomSeriesError(DataError):
    """A DICOM series folder cannot be used as one 3D image: the folder, why, and the fix.

    Attributes:
        folder: the series folder.
        reason: what is wrong (one sentence).
        fix: what the user should do.
    """

    def __init__(self, folder: Path | str, reason: str, fix: str) -> None:
        self.folder = str(folder)
        self.reason = reason
        self.fix = fix
        super().__init__(f"{self.folder}: {reason} Fix: {fix}")


@dataclass(frozen=True)
class DicomVolume:
    """One DICOM series as a 3D volume.

    Attributes:
        array: (X, Y, Z) float32, rescale slope and intercept applied (X = columns, Y = rows,
            Z = slices in order along the slice normal).
        affine: (4, 4) voxel -> world (RAS, mm).
        series_uid: the SeriesInstanceUID.
        modality: "CT" or "MRI".
        n_files: the slice files read.
    """

    array: np.ndarray
    affine: np.ndarray
    series_uid: str
    modality: str
    n_files: int


def is_dicom_file(path: Path) -> bool:
    """True when `path` is a file with the DICOM Part 10 preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(DICOM_MAGIC_OFFSET)
            return fh.read(4) == DICOM_MAGIC
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside `folder` (sorted by name; hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom_file(p))


def is_series_folder(folder: Path) -> bool:
    """True when `folder` directly holds at least one DICOM file."""
    if not folder.is_dir():
        return False
    return any(p.is_file() and not p.name.startswith(".") and is_dicom_file(p) for p in folder.iterdir())


def read_series(folder: Path | str, *, max_voxels: int | None = None) -> DicomVolume:
    """Read one DICOM series folder as a 3D volume (headers checked before any pixel data).

    Args:
        folder: a folder holding the slice files of one series.
        max_voxels: refuse a series whose headers claim more voxels than this (default
            `PreprocessConfig.max_voxels`), before its pixel data is read.

    Returns:
        `DicomVolume` with the array (X, Y, Z) float32 and the RAS affine (mm).

    Raises:
        DicomSeriesError: no DICOM file, several series, unsupported modality, inconsistent
            slices, fewer than two slices, duplicate, missing or unevenly spaced slices, too
            many voxels, or unreadable pixel data; each with the folder and the fix.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from assft_core.config import PreprocessConfig

    folder = Path(folder)
    limit = PreprocessConfig().max_voxels if max_voxels is None else max_voxels
    files = dicom_files(folder)
    if not files:
        raise DicomSeriesError(folder, "holds no DICOM file.", "give the folder holding one series' slice files.")
    headers = []
    for f in files:
        try:
            headers.append((f, pydicom.dcmread(f, stop_before_pixels=True)))
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            raise DicomSeriesError(f, f"cannot be read as DICOM ({type(exc).__name__}: {exc}).",
                                   "re-export the series, or remove the damaged file from the folder.") from None
    uids = sorted({str(getattr(h, "SeriesInstanceUID", "")) for _, h in headers})
    if len(uids) > 1:
        raise DicomSeriesError(folder, f"holds {len(uids)} series ({', '.join(u or '<none>' for u in uids[:3])}).",
                               "put each series (one case) in its own folder.")
    uid = uids[0]
    if not uid:
        raise DicomSeriesError(folder, "its files carry no SeriesInstanceUID.", "re-export the series from the PACS.")
    modality = str(getattr(headers[0][1], "Modality", ""))
    if modality not in SUPPORTED_MODALITIES:
        raise DicomSeriesError(folder, f"modality {modality or '<none>'!r} is not supported (CT or MR only).",
                               "give a CT or MR series.")
    required = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
    for f, h in headers:
        missing = [k for k in required if k not in h]
        if missing:
            raise DicomSeriesError(f, f"lacks {', '.join(missing)}: its geometry is unknown.",
                                   "give the original image slices (not a secondary capture or a report).")
        if int(getattr(h, "SamplesPerPixel", 1)) != 1 or int(getattr(h, "NumberOfFrames", 1) or 1) != 1:
            raise DicomSeriesError(f, "is not a single-frame greyscale slice.",
                                   "convert multi-frame or colour files with dcm2niix first.")
    first = headers[0][1]
    iop = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    spacing = np.asarray(first.PixelSpacing, dtype=np.float64)  # (between rows, between columns) in mm
    rows, cols = int(first.Rows), int(first.Columns)
    for f, h in headers[1:]:
        if not np.allclose(np.asarray(h.ImageOrientationPatient, dtype=np.float64), iop, atol=1e-4):
            raise DicomSeriesError(f, "its ImageOrientationPatient differs from the other slices'.",
                                   "keep only the slices of one stack (a localiser or a second stack may be mixed in).")
        if (int(h.Rows), int(h.Columns)) != (rows, cols) or not np.allclose(
                np.asarray(h.PixelSpacing, dtype=np.float64), spacing, atol=1e-4):
            raise DicomSeriesError(f, "its size or pixel spacing differs from the other slices'.",
                                   "keep only the slices of one stack.")
    row_cos, col_cos = iop[:3], iop[3:]
    normal = np.cross(row_cos, col_cos)
    if len(headers) < 2:
        raise DicomSeriesError(folder, "holds a single slice, not a volume.",
                               "export every slice of the series into the folder.")
    positions = np.array([np.asarray(h.ImagePositionPatient, dtype=np.float64) for _, h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    headers = [headers[i] for i in order]
    along = positions @ normal
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        k = int(np.argmax(gaps < 1e-3))
        raise DicomSeriesError(folder, f"two slices share position {along[k]:.3f} mm ({headers[k][0].name}, "
                               f"{headers[k + 1][0].name}).", "remove the duplicate slice (or the second stack).")
    median = float(np.median(gaps))
    even = np.abs(gaps - median) <= SPACING_TOLERANCE * median
    if not even.all():
        multiples = np.round(gaps / median)
        whole = (multiples >= 2) & (np.abs(gaps - multiples * median) <= SPACING_TOLERANCE * median)
        if np.all(even | whole):  # every odd gap is a whole number of slices: slices are missing
            k = int(np.flatnonzero(whole)[0])
            reason = (f"{int(multiples[whole].sum() - whole.sum())} slice(s) missing, the first gap between positions "
                      f"{along[k]:.3f} and {along[k + 1]:.3f} mm ({gaps[k]:.3f} mm, others {median:.3f} mm).")
            fix = "export the complete series again (every slice)."
        else:
            reason = f"slices are unevenly spaced (gaps from {gaps.min():.3f} to {gaps.max():.3f} mm)."
            fix = "resample the series to even spacing (scanner software), or convert it with dcm2niix."
        raise DicomSeriesError(folder, reason, fix)
    steps = np.diff(positions, axis=0)
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    if not np.allclose(steps, step, atol=max(1e-3, SPACING_TOLERANCE * median)):
        raise DicomSeriesError(folder, "slice positions do not lie on one straight line.",
                               "keep only the slices of one stack.")
    n_voxels = rows * cols * len(headers)
    if n_voxels > limit:
        raise DicomSeriesError(folder, f"headers claim {cols}x{rows}x{len(headers)} = {n_voxels:,} voxels, above "
                               f"the limit of {limit:,}.", "crop or downsample the series, or raise "
                               "PreprocessConfig.max_voxels if this machine has the memory.")
    volume = np.empty((cols, rows, len(headers)), dtype=np.float32)
    for k, (f, _) in enumerate(headers):
        try:
            ds = pydicom.dcmread(f)
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for unsupported or damaged pixel data
            raise DicomSeriesError(f, f"its pixel data cannot be decoded ({type(exc).__name__}: {exc}).",
                                   "convert compressed series with dcm2niix (or install the pydicom codec).") from None
        if pixels.shape != (rows, cols):
            raise DicomSeriesError(f, f"pixel data shape {pixels.shape} differs from Rows x Columns {(rows, cols)}.",
                                   "re-export the series.")
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        volume[:, :, k] = (pixels.astype(np.float64) * slope + intercept).T
    lps = np.eye(4)
    lps[:3, 0] = row_cos * spacing[1]
    lps[:3, 1] = col_cos * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return DicomVolume(volume, _LPS_TO_RAS @ lps, uid, SUPPORTED_MODALITIES[modality], len(headers))


def convert_series(folder: Path | str, out: Path, *, max_voxels: int | None = None) -> DicomVolume:
    """Read a series (`read_series`) and write it as NIfTI at `out` (temp file, then rename), with
    a JSON sidecar beside it (`out` with `.json`: SeriesInstanceUID, modality, source folder).

    Args:
        folder: the series folder (only read).
        out: the `.nii.gz` file to write (inside the project: replaced when it exists).
        max_voxels: as `read_series`.

    Returns:
        The volume written.

    Raises:
        DicomSeriesError: as `read_series` (nothing is written then).
    """
    volume = read_series(folder, max_voxels=max_voxels)
    img = nib.Nifti1Image(volume.array, volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units("mm")

    def write(tmp: Path) -> None:
        staged = str(tmp) + ".nii.gz"  # nibabel compresses by the name
        try:
            nib.save(img, staged)
            os.replace(staged, tmp)
        finally:
            Path(staged).unlink(missing_ok=True)

    atomic_write(Path(out), write)
    atomic_write_json(Path(str(out).removesuffix(".nii.gz") + ".json"),
                      {"series_instance_uid": volume.series_uid, "modality": volume.modality,
                       "source_folder": str(Path(folder).absolute()), "slices": volume.n_files})
    return volume


def series_folders(folder: Path, names: Sequence[str] | None = None) -> list[Path]:
    """The sub-folders of `folder` that hold a DICOM series (optionally only those named)."""
    if not folder.is_dir():
        return []
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in subs if (names is None or p.name in names) and is_series_folder(p)]
