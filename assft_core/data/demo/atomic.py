"""Write a whole folder atomically: build it under a temporary sibling name, then rename it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from assft_core.errors import DataError


@contextmanager
def atomic_directory(out_dir: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `out_dir`; on success rename it to `out_dir`.

    `out_dir` must be absent or an empty folder (rename replaces only an empty folder, so a
    folder that filled up meanwhile is never overwritten). On any error the temporary folder is
    removed and `out_dir` is left as it was.

    Raises:
        DataError: `out_dir` could not be replaced (it is no longer empty).
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, out_dir)
        except OSError as exc:
            raise DataError(
                f"{out_dir}: could not move the finished folder into place ({exc.strerror}); "
                "another process may have written there. Choose an empty or new folder."
            ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
