"""Safe names and paths for a project folder.

Every file the session writes goes through `safe_join` (nothing outside the project folder, even
for a case id or upload name such as `../../etc/passwd` or `/abs/name`) and is written to a
temporary name in the destination folder first, then renamed with `os.replace` (the writers of
`assft_core.fsutil`), so a crash never leaves a half-written artifact under its final name
(docs/architecture.md, "The store").
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from assft_core.errors import DataError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def sanitize_id(name: str) -> str:
    """A case id or file stem made safe as one path component.

    Characters outside `[A-Za-z0-9._-]` become `_`, leading dots are dropped (no hidden files,
    no `..`), and path separators cannot survive.

    Args:
        name: the raw name (a case id from a CSV, an uploaded file name).

    Returns:
        The sanitised name, e.g. `"../../x y"` -> `"_.._x_y"` (never `.` or `..`).

    Raises:
        DataError: when nothing usable is left (e.g. `"..."` or `""`).
    """
    cleaned = _UNSAFE.sub("_", name.strip()).lstrip(".")
    if not cleaned or cleaned.strip("_") == "":
        raise DataError(f"name {name!r} has no usable characters; use letters, digits, '.', '_' or '-'.")
    return cleaned


def sanitize_filename(name: str) -> str:
    """The base name of an uploaded file made safe, keeping a NIfTI suffix (`.nii`, `.nii.gz`).

    Any directory part (`../`, `/abs/`, `C:\\`) is discarded first: only the base name counts.

    Raises:
        DataError: when the base name is empty after sanitising.
    """
    base = re.split(r"[\\/]", name)[-1]
    lower = base.lower()
    for suffix in _NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(base) > len(suffix):
            return sanitize_id(base[: -len(suffix)]) + suffix
    return sanitize_id(base)


def nifti_suffix(path: str | os.PathLike[str]) -> str:
    """`.nii.gz` or `.nii` (the suffix nibabel needs to read a copy), else `""`."""
    lower = str(path).lower()
    return next((s for s in _NIFTI_SUFFIXES if lower.endswith(s)), "")


def safe_join(root: Path, *parts: str) -> Path:
    """`root / parts...`, refusing any result outside `root` (after resolving `..` and links).

    Raises:
        DataError: when the joined path escapes `root`.
    """
    root_resolved = root.resolve()
    target = root_resolved.joinpath(*parts).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise DataError(
            f"refusing to write {target}: it is outside the project folder {root_resolved}. "
            "Use a plain name without '..' or a leading '/'."
        )
    return target


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (the content-hash name of stored artifacts)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
