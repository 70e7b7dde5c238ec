"""Apply a model to new scans: label maps as NIfTI with each input's affine and shape.

The reason the active-learning loop exists (docs/architecture.md, "One round"). Nothing is ever overwritten: every
output name is checked before any inference, labels are first written to a staging folder inside
`out_dir`, and only when every case succeeded are they linked into place; a failure removes the
staging folder and whatever this call had linked, so a batch is written whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from assft_core.config import InferenceConfig, PreprocessConfig
from assft_core.data.io import save_label
from assft_core.data.preprocess import preprocess_image
from assft_core.data.records import case_id_from_filename
from assft_core.errors import DataError
from assft_core.fsutil import as_created
from assft_core.train.evaluate import predict_native

def output_name(paths: Sequence[Path]) -> str:
    """Label file name of a case: its first file's name without `_0000` and extension, + .nii.gz."""
    return case_id_from_filename(Path(paths[0]).name) + ".nii.gz"


def _as_cases(image_paths: Sequence[Path | str] | Sequence[Sequence[Path | str]]) -> list[list[Path]]:
    """Each item is a case: one file (single or 4D multi-channel) or a list of channel files."""
    cases: list[list[Path]] = []
    for item in image_paths:
        files = [Path(item)] if isinstance(item, (str, os.PathLike)) else [Path(p) for p in item]
        if not files:
            raise DataError("predict: a case with no image file was given. Fix: give one file per channel.")
        cases.append(files)
    return cases


def predict(
    network: nn.Module,
    image_paths: Sequence[Path | str] | Sequence[Sequence[Path | str]],
    out_dir: Path,
    *,
    preprocess_cfg: PreprocessConfig,
    infer_cfg: InferenceConfig,
) -> list[Path]:
    """Segment each scan and write `out_dir/<case>.nii.gz` on the scan's own grid.

    Args:
        network: the (adapted) model, on its device.
        image_paths: per case, one NIfTI file or a list of channel files (nnU-Net `_0000`, `_0001`).
        out_dir: output folder (created if missing).
        preprocess_cfg: the preprocessing the model was trained with (its model card's).
        infer_cfg: sliding-window settings.

    Returns:
        The written label paths, in input order; each has its input's shape (X, Y, Z) and affine.

    Raises:
        DataError: an output file already exists (all such files are named), two inputs map to
            the same output name, or an input is unreadable. Nothing is written then.
    """
    cases = _as_cases(image_paths)
    out_dir = Path(out_dir)
    targets = [out_dir / output_name(files) for files in cases]
    dupes = sorted({t.name for t in targets if targets.count(t) > 1})
    if dupes:
        raise DataError(
            f"predict: several inputs would write the same output {dupes}. Fix: give the scans distinct file names."
        )
    existing = [str(t) for t in targets if t.exists()]
    if existing:
        raise DataError(
            f"predict: refusing to overwrite existing file(s): {', '.join(existing)}. "
            "Fix: choose another output folder or move those files away."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".assft-predict-", dir=out_dir))
    linked: list[Path] = []
    try:
        staged: list[Path] = []
        for files, target in zip(cases, targets):
            case = preprocess_image(files, preprocess_cfg, case_id=target.name[: -len(".nii.gz")])
            label = predict_native(network, case, infer_cfg)
            # data/io.py writes through mkstemp (0600) and is fingerprinted with the demo model:
            # the user's deliverable gets the usual mode here.
            staged.append(as_created(save_label(label, case.native_affine, staging / target.name)))
        for src, dst in zip(staged, targets):
            try:
                os.link(src, dst)  # fails if dst appeared meanwhile: never clobber
            except FileExistsError:
                raise DataError(f"predict: {dst} appeared while predicting; refusing to overwrite it.") from None
            except OSError:  # filesystem without hard links: check, then rename
                if dst.exists():
                    raise DataError(f"predict: {dst} appeared while predicting; refusing to overwrite it.") from None
                os.replace(src, dst)
            linked.append(dst)
    except BaseException:
        for path in linked:
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return targets
