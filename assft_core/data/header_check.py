"""What a NIfTI header promises, checked before any voxel is read (decompression amplification).

A 4 MB `.nii.gz` can claim 800³ float64 voxels (4 GB) or hold gigabytes of zeros after a small
header. The label path therefore reads the header alone (nibabel loads lazily: `img.dataobj` is a
proxy), compares shape, affine and dtype with the image, and measures how far the file
decompresses through a size-limited gzip stream, all before `io.read_voxels` touches the data.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assft_core.data.io import open_nifti, squeeze_trailing

# Voxel dtype kinds a label map may have: bool, signed / unsigned integer, float.
LABEL_DTYPE_KINDS = "biuf"
# Bytes a decompressed file may hold beyond header + voxels (NIfTI extensions, padding).
SLACK_BYTES = 1 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HeaderInfo:
    """A NIfTI file's header facts (no voxel read).

    Attributes:
        path: the file.
        shape: the voxel grid with trailing singleton dimensions squeezed, e.g. (X, Y, Z).
        affine: (4, 4) voxel -> world (mm) matrix.
        dtype: the on-disk voxel dtype.
        data_end: offset of the first voxel byte plus the voxels' size, in bytes: how much of the
            decompressed stream a reader needs.
    """

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    dtype: np.dtype
    data_end: int


def read_header(path: Path | str, *, max_voxels: int | None = None) -> HeaderInfo:
    """Open `path`'s header only (`io.open_nifti`: size limit checked) and return its facts.

    Raises:
        NiftiFileError: missing, empty, non-NIfTI, unreadable, or claiming more than `max_voxels`.
    """
    img = open_nifti(path, max_voxels=max_voxels)
    header = img.header
    dtype = np.dtype(header.get_data_dtype())
    n_voxels = int(np.prod(img.shape, dtype=np.int64))
    offset = int(header.get_data_offset())
    return HeaderInfo(
        path=Path(path),
        shape=squeeze_trailing(tuple(int(s) for s in img.shape)),
        affine=np.asarray(img.affine, dtype=np.float64),
        dtype=dtype,
        data_end=offset + n_voxels * dtype.itemsize,
    )


def label_dtype_problem(info: HeaderInfo) -> str | None:
    """Why the header's voxel dtype cannot be a label map (complex, RGB, ...), or None."""
    if info.dtype.kind in LABEL_DTYPE_KINDS and info.dtype.fields is None:
        return None
    return f"label voxels are stored as {info.dtype} ({info.dtype.name}); a label map holds integer class indices."


def label_byte_cap(image_voxels: int, info: HeaderInfo) -> int:
    """Decompressed bytes a label on an image grid of `image_voxels` voxels may hold: its header's
    data offset, 8 bytes per image voxel (the widest integer / float dtype), plus `SLACK_BYTES`."""
    return (info.data_end - int(np.prod(info.shape, dtype=np.int64)) * info.dtype.itemsize) + 8 * image_voxels + SLACK_BYTES


def decompresses_beyond(path: Path | str, limit: int) -> bool:
    """Whether `path` decompresses to more than `limit` bytes, reading at most `limit` + 1 MiB of
    its decompressed stream (every gzip member; a `.nii` counts its file size).

    A corrupt stream stops the count where it breaks (the voxel reader reports that damage).
    """
    path = Path(path)
    if not path.name.endswith(".gz"):
        return path.stat().st_size > limit
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(_CHUNK):
                total += len(block)
                if total > limit:
                    return True
    except (OSError, EOFError, zlib.error):
        return False
    return False
