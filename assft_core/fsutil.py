"""Temp-then-rename file writes: a reader never sees a half-written file, a crash leaves the old one.

Every artifact of ASSFT Studio (checkpoints, score tables, labels, reports) is written through
`atomic_write`; the other helpers are its common cases. `read_json_object` is the one reader of
a user's JSON file (dataset.json, a bundle's metadata, nnU-Net plans).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _creation_mode() -> int:
    """The mode `open(path, "w")` would give a new file: 0o666 minus this process's umask."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


# Read once at import: os.umask is process-wide, so reading it while other threads create files
# (the dashboard's) could briefly give them the wrong mode.
CREATION_MODE = _creation_mode()


def as_created(path: Path) -> Path:
    """Give `path` the mode a plainly created file gets (mkstemp makes 0600: a lab's colleagues
    could not read the exported model or the results)."""
    os.chmod(path, CREATION_MODE)
    return path


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, flush it to disk, rename it to `path`.

    Parent folders are created. The temporary file is removed when `write` fails.

    Raises:
        OSError: the folder is not writable; whatever `write` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        as_created(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any) -> Path:
    """Write `data` as indented, key-sorted JSON to `path` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def read_json_object(path: Path, *, error: type[Exception], fix: str) -> dict[str, Any]:
    """The JSON object in `path`.

    Raises:
        error: (the caller's AssftError kind) naming `path` when it cannot be read, is not JSON
            (with line and column) or holds no object; the message ends with `fix`.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc}). {fix}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: must hold a JSON object, got {type(data).__name__}. {fix}")
    return data


def atomic_copy(src: Path, dst: Path) -> Path:
    """Copy `src` to `dst` atomically; `src` is only read."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_savez(path: Path, **arrays: np.ndarray) -> Path:
    """`np.savez_compressed(arrays)` to `path` atomically (the name is kept as given)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


@contextlib.contextmanager
def building_folder(out: Path) -> Iterator[Path]:
    """A temporary sibling of `out` to build a whole folder in; renamed to `out` when the block
    ends, removed (and `out` left as it was) when the block raises.

    Args:
        out: the folder to create; absent or empty (the caller checks: never a user's folder).

    Yields:
        The temporary folder.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty (checked by the caller): replaced by the finished folder
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
