"""Fingerprints: what data and code made a checkpoint, so a stale one is caught (docs/architecture.md).

A card's `fingerprint` is a flat JSON dict. `assft pretrain` fills it with `make_fingerprint`:
"data" (hash of the corpus files' bytes), "code" (hash of the source files of the modules that
shape the inputs: preprocessing, the demo corpus builder), plus free entries (steps, seed,
assft version). `arrays_hash` hashes what that code made of the data (the preprocessed arrays),
so a code change that leaves every input bit-identical can be told from one that does not. A test compares the committed card with `make_fingerprint` of the present
corpus and code and, on a difference, fails with "rerun `assft pretrain`".
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from assft_core.errors import ModelError


def files_hash(paths: Iterable[Path], root: Path | None = None) -> str:
    """SHA-256 over the files' relative names and bytes, in sorted name order.

    Args:
        paths: files to hash (order does not matter).
        root: names are taken relative to it (default: file names only), so moving the folder
            does not change the hash.

    Raises:
        ModelError: when a file is missing.
    """
    digest = hashlib.sha256()
    named = sorted((str(Path(p).relative_to(root)) if root else Path(p).name, Path(p)) for p in paths)
    for name, path in named:
        if not path.is_file():
            raise ModelError(f"{path}: file to fingerprint not found.")
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def arrays_hash(groups: Iterable[tuple[str, Sequence[np.ndarray | None]]]) -> str:
    """SHA-256 over named groups of arrays, in the order given (consumed one group at a time).

    Each group contributes its name, then per array its dtype, shape and C-order bytes (None: a
    marker), so arrays of equal bytes but another dtype or shape hash differently.
    """
    digest = hashlib.sha256()
    for name, arrays in groups:
        digest.update(b"\0group\0" + name.encode())
        for a in arrays:
            if a is None:
                digest.update(b"\0none")
                continue
            a = np.ascontiguousarray(a)
            digest.update(f"\0{a.dtype.str}{a.shape}".encode())
            digest.update(a.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def module_files(module_names: Sequence[str]) -> list[Path]:
    """Source files of importable modules (a package contributes every .py file under it).

    Raises:
        ModelError: for a module that cannot be found.
    """
    out: list[Path] = []
    for name in module_names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModelError(f"module {name!r} not found; cannot fingerprint its code.")
        origin = Path(spec.origin)
        out += sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    return out


def make_fingerprint(data_files: Iterable[Path], data_root: Path, code_modules: Sequence[str], **extra: Any) -> dict[str, Any]:
    """The fingerprint of a checkpoint trained on `data_files` with the code of `code_modules`.

    Returns:
        {"data": hash, "code": hash, "code_modules": [...], **extra}.
    """
    code_paths = module_files(code_modules)
    code_root = Path(importlib.util.find_spec(code_modules[0].split(".")[0]).origin).parent.parent  # type: ignore[union-attr,arg-type]
    return {
        "data": files_hash(data_files, data_root),
        "code": files_hash(code_paths, code_root),
        "code_modules": list(code_modules),
        **extra,
    }


def stale_fields(recorded: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str] = ("data", "code")) -> list[str]:
    """The `keys` whose recorded value differs from the current one (empty: the checkpoint is current)."""
    return [k for k in keys if recorded.get(k) != current.get(k)]
