"""NIfTI reading and writing with one IO contract (after nnU-Net v2).

Arrays are channel-first; the affine (voxel -> world, RAS, mm, as nibabel gives it) and the
voxel spacing in mm travel beside them in a `Volume`. Every header is checked for size before any
voxel is read, so a file claiming a huge volume is refused without allocating it.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from assft_core.config import PreprocessConfig
from assft_core.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Errors nibabel / gzip / numpy raise on unreadable, truncated or non-NIfTI bytes.
_READ_ERRORS = (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile)


class NiftiFileError(DataError):
    """A NIfTI file is unusable; carries the file, what is wrong and the fix separately.

    Attributes:
        file: the offending path.
        reason: what is wrong (one sentence).
        fix: what the user should do.
    """

    def __init__(self, file: Path | str, reason: str, fix: str) -> None:
        self.file = str(file)
        self.reason = reason
        self.fix = fix
        super().__init__(f"{self.file}: {reason} Fix: {fix}")


@dataclass
class Volume:
    """An image or label map with its geometry.

    Attributes:
        array: (C, X, Y, Z) channel-first; float32 for images, integer for labels (C = 1).
        affine: (4, 4) voxel -> world (RAS, mm), as stored in the file.
        spacing_mm: (3,) voxel size in mm along X, Y, Z (column norms of the affine).
    """

    array: np.ndarray
    affine: np.ndarray
    spacing_mm: tuple[float, float, float]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) spatial shape."""
        return tuple(int(s) for s in self.array.shape[1:4])  # type: ignore[return-value]


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis: the norms of the affine's first three columns."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return (float(norms[0]), float(norms[1]), float(norms[2]))


def open_nifti(path: Path | str, *, max_voxels: int | None = None) -> nib.Nifti1Image:
    """Open a NIfTI file reading only its header (voxels stay on disk).

    Args:
        path: a `.nii` or `.nii.gz` file.
        max_voxels: refuse a header claiming more voxels than this (default
            `PreprocessConfig.max_voxels`); checked before any voxel is read.

    Raises:
        NiftiFileError: missing, empty, non-NIfTI or unreadable header, or a too-large volume.
    """
    path = Path(path)
    limit = PreprocessConfig().max_voxels if max_voxels is None else max_voxels
    if not path.exists():
        raise NiftiFileError(path, "file not found.", "check the path (and the dataset folder layout).")
    if path.is_dir():
        raise NiftiFileError(path, "is a folder, not a NIfTI file.", "give a .nii or .nii.gz file.")
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise NiftiFileError(
            path,
            "is not a NIfTI file (name must end in .nii or .nii.gz).",
            "convert it to NIfTI (DICOM series: dcm2niix -z y -o OUT_DIR DICOM_DIR).",
        )
    if path.stat().st_size == 0:
        raise NiftiFileError(path, "is empty (0 bytes).", "re-export or re-copy the file.")
    try:
        img = nib.load(str(path))
    except _READ_ERRORS as exc:
        raise NiftiFileError(
            path, f"cannot be read as NIfTI ({type(exc).__name__}: {exc}).", "re-export the file as NIfTI-1 (.nii.gz)."
        ) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiFileError(path, f"is a {type(img).__name__}, not NIfTI.", "convert it to NIfTI (.nii.gz).")
    n_voxels = int(np.prod(img.shape, dtype=np.float64))
    if n_voxels > limit:
        raise NiftiFileError(
            path,
            f"header claims {img.shape} = {n_voxels:,} voxels, above the limit of {limit:,}.",
            "crop or downsample the scan, or raise PreprocessConfig.max_voxels if this machine has the memory.",
        )
    if n_voxels == 0:
        raise NiftiFileError(path, f"header claims an empty volume {img.shape}.", "re-export the file.")
    return img


def read_voxels(img: nib.Nifti1Image, path: Path | str) -> np.ndarray:
    """Read the voxels of an opened NIfTI (scaled, in the file's dtype or float).

    Raises:
        NiftiFileError: when the data part is truncated or corrupt, or does not fit in memory.
    """
    try:
        return np.asanyarray(img.dataobj)
    except MemoryError:
        raise NiftiFileError(
            path, f"volume {img.shape} does not fit in this machine's memory.", "crop or downsample the scan."
        ) from None
    except _READ_ERRORS as exc:
        raise NiftiFileError(
            path,
            f"voxel data is truncated or corrupt ({type(exc).__name__}: {exc}).",
            "re-copy or re-export the file; it was probably cut off during transfer.",
        ) from None


def squeeze_trailing(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton dimensions beyond the third: (X, Y, Z, 1) -> (X, Y, Z)."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _to_channels(data: np.ndarray, path: Path, *, allow_channels: bool) -> np.ndarray:
    """(X, Y, Z[, 1...][, C]) file array -> (C, X, Y, Z), squeezing trailing singletons with a warning."""
    squeezed = squeeze_trailing(data.shape)
    if squeezed != data.shape:
        warnings.warn(f"{path}: trailing singleton dimension(s) of shape {data.shape} squeezed.", stacklevel=3)
        data = data.reshape(squeezed)
    if data.ndim < 3:
        raise NiftiFileError(path, f"is {data.ndim}D {data.shape}, not a 3D volume.", "give a 3D (or 4D multi-channel) volume.")
    if data.ndim == 3:
        return data[None]
    if data.ndim == 4 and allow_channels:
        return np.moveaxis(data, -1, 0)
    raise NiftiFileError(
        path,
        f"is {data.ndim}D {data.shape}; expected "
        + ("a 3D volume or a 4D (X, Y, Z, C) multi-channel file." if allow_channels else "a 3D label map."),
        "split time series / extra dimensions into separate 3D files, one per channel.",
    )


# Integer voxel types whose every value float32 holds exactly.
_EXACT_IN_FLOAT32 = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16))


def load_image(paths: Sequence[Path | str], *, max_voxels: int | None = None, keep_integer_dtype: bool = False) -> Volume:
    """Load an image as (C, X, Y, Z) C-contiguous float32: one 3D file per channel, or one 4D multi-channel file.

    Args:
        paths: one path per channel, or a single 3D or 4D (X, Y, Z, C) file.
        max_voxels: header size limit (default `PreprocessConfig.max_voxels`), per file.
        keep_integer_dtype: keep voxels of 8- or 16-bit integer files (most CT: int16 HU) in that
            dtype, which float32 holds exactly, at half or a quarter of its memory.

    Returns:
        Volume with `array` (C, X, Y, Z) float32 (or the files' small integer dtype) and the first
        file's affine.

    Raises:
        NiftiFileError: any unreadable, too large, wrongly shaped file; NaN/Inf voxels; channel
            files whose shape or affine differ.
    """
    if not paths:
        raise DataError("load_image: no image file given.")
    channels: list[np.ndarray] = []
    affine: np.ndarray | None = None
    for p in (Path(x) for x in paths):
        img = open_nifti(p, max_voxels=max_voxels)
        raw = _to_channels(read_voxels(img, p), p, allow_channels=len(paths) == 1)
        if np.issubdtype(raw.dtype, np.floating) and not np.all(np.isfinite(raw)):
            raise NiftiFileError(p, "contains NaN or Inf voxels.", "replace them (e.g. with the background value) and re-save.")
        kept = keep_integer_dtype and raw.dtype in _EXACT_IN_FLOAT32
        arr = np.ascontiguousarray(raw, dtype=raw.dtype if kept else np.float32)
        del raw
        if affine is None:
            affine = np.asarray(img.affine, dtype=np.float64)
        elif arr.shape[1:] != channels[0].shape[1:] or not np.allclose(img.affine, affine, atol=1e-3):
            raise NiftiFileError(
                p,
                f"channel shape {arr.shape[1:]} / affine differs from the first channel's {channels[0].shape[1:]}.",
                "register and resample every channel onto the same grid.",
            )
        channels.append(arr)
    assert affine is not None
    array = channels[0] if len(channels) == 1 else np.concatenate(channels, axis=0)
    return Volume(array=array, affine=affine, spacing_mm=spacing_from_affine(affine))


def load_label(path: Path | str, *, max_voxels: int | None = None) -> Volume:
    """Load a label map as (1, X, Y, Z) integer class indices.

    Float files whose values are all integers (a common export) are accepted and cast.

    Args:
        path: a 3D NIfTI label map (a trailing singleton dimension is squeezed with a warning).
        max_voxels: header size limit (default `PreprocessConfig.max_voxels`).

    Returns:
        Volume with `array` (1, X, Y, Z) uint8 (int32 when values exceed 0..255).

    Raises:
        NiftiFileError: unreadable or too large file, not 3D, NaN/Inf, or non-integer values.
    """
    p = Path(path)
    img = open_nifti(p, max_voxels=max_voxels)
    data = _to_channels(read_voxels(img, p), p, allow_channels=False)
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            raise NiftiFileError(p, "label contains NaN or Inf voxels.", "set them to 0 (background) and re-save.")
        if not np.array_equal(data, np.round(data)):
            raise NiftiFileError(
                p,
                "label holds non-integer values: this looks like an intensity image, not a label map.",
                "give the segmentation file (integer class indices), not the scan.",
            )
    lo, hi = (int(data.min()), int(data.max()))
    dtype = np.uint8 if lo >= 0 and hi <= 255 else np.int32
    affine = np.asarray(img.affine, dtype=np.float64)
    return Volume(array=data.astype(dtype), affine=affine, spacing_mm=spacing_from_affine(affine))


def save_label(label: np.ndarray, affine: np.ndarray, path: Path | str, *, overwrite: bool = False) -> Path:
    """Write a label map as NIfTI atomically (temp file, then rename); never clobbers by default.

    Args:
        label: (X, Y, Z) integer class indices.
        affine: (4, 4) voxel -> world (RAS, mm), normally the input scan's affine.
        path: destination `.nii` or `.nii.gz`.
        overwrite: replace an existing file (default False: refuse).

    Returns:
        The written path.

    Raises:
        DataError: if the destination exists (and not `overwrite`), the name is not NIfTI, or
            `label` is not a 3D integer array.
    """
    path = Path(path)
    label = np.asarray(label)
    if label.ndim != 3 or not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise DataError(f"save_label: label must be a 3D integer array, got {label.dtype} {label.shape}.")
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise DataError(f"{path}: a label file name must end in .nii.gz or .nii.")
    if path.exists() and not overwrite:
        raise DataError(f"{path} already exists; refusing to overwrite it. Choose another output path or folder.")
    dtype = np.uint8 if label.size == 0 or (label.min() >= 0 and label.max() <= 255) else np.int32
    img = nib.Nifti1Image(label.astype(dtype), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp_name)
        if overwrite:
            os.replace(tmp_name, path)
        else:
            # link() fails if the destination appeared meanwhile: no silent clobbering.
            try:
                os.link(tmp_name, path)
            except FileExistsError:
                raise DataError(f"{path} already exists; refusing to overwrite it.") from None
            except OSError:  # filesystem without hard links: check-then-rename instead
                if path.exists():
                    raise DataError(f"{path} already exists; refusing to overwrite it.") from None
                os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path
