"""Pseudo-labels for SSFT: argmax of the softmax, unconfident voxels set to ignore (METHOD.md §4).

Made from the softmax of the scoring pass of `f_t^sup` (one pass per case, METHOD.md §0) and
stored on the preprocessed grid as uint8 (`ignore_index`, 255 by default, marks ignored voxels).
When the dataset carries a reference label (demo corpus, benchmarks), the voxel accuracy of the
kept voxels is measured for the report; the reference is never used for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from assft_core.errors import DataError, StateError
from assft_core.fsutil import atomic_savez

PSEUDO_SUFFIX = ".npz"


@dataclass(frozen=True)
class PseudoLabelStats:
    """How much of one pseudo-label is kept, and how right the kept part is.

    Attributes:
        case_id: the case.
        n_voxels: voxels of the grid.
        n_kept: voxels not ignored (`max_k p_k ≥ τ_v`).
        n_compared: kept voxels with a usable reference value (reference not ignore), or None
            without a reference.
        n_correct: those equal to the reference, or None without a reference.
    """

    case_id: str
    n_voxels: int
    n_kept: int
    n_compared: int | None = None
    n_correct: int | None = None

    @property
    def kept_fraction(self) -> float:
        """Fraction of voxels kept (0 for an empty grid)."""
        return self.n_kept / self.n_voxels if self.n_voxels else 0.0

    @property
    def kept_accuracy(self) -> float | None:
        """Voxel accuracy of the kept voxels against the reference; None without a reference or
        without a kept voxel to compare."""
        if self.n_correct is None or not self.n_compared:
            return None
        return self.n_correct / self.n_compared


@dataclass(frozen=True)
class PseudoLabel:
    """One unlabelled case's pseudo-label.

    Attributes:
        label: (1, D, H, W) uint8 class indices on the preprocessed grid; `ignore_index` where
            `max_k p_k < τ_v`.
        stats: kept-voxel counts (and accuracy counts against a reference, when given).
    """

    label: np.ndarray
    stats: PseudoLabelStats

    @property
    def case_id(self) -> str:
        """The case's id (from `stats`)."""
        return self.stats.case_id


def make_pseudo_label(
    probs: torch.Tensor,
    tau_v: float,
    ignore_index: int = 255,
    *,
    case_id: str = "",
    reference: np.ndarray | None = None,
    class_quantile: float | None = None,
) -> PseudoLabel:
    """`ỹ = argmax P`, voxels with `max_k p_k < τ_v` set to `ignore_index` (ASSFT, METHOD.md §4).

    With `class_quantile` q (retention targets, METHOD.md §6), each predicted class k keeps the
    voxels with `max_k p_k ≥ min(τ_v, q-quantile of that confidence over the voxels predicted k)`:
    a small structure the model is never 90% sure of keeps its surest voxels instead of none.

    Args:
        probs: (K, D, H, W) softmax on any device, K < `ignore_index`.
        tau_v: voxel confidence threshold τ_v in [0, 1].
        ignore_index: value of ignored voxels (TrainConfig.ignore_index).
        case_id: the case's id (kept in the result and named in errors).
        reference: optional (1, D, H, W) or (D, H, W) reference label on the same grid; only
            measures the accuracy of the kept voxels (its `ignore_index` voxels are not compared).
        class_quantile: optional q in [0, 1] of the per-class threshold (None: τ_v for all).

    Returns:
        The `PseudoLabel` (label on the CPU).

    Raises:
        DataError: `probs` is not (K, D, H, W) with K ≥ 2 and K < `ignore_index`, or the reference
            grid differs from the softmax grid.
    """
    if probs.ndim != 4 or probs.shape[0] < 2 or probs.shape[0] >= ignore_index:
        raise DataError(
            f"case {case_id}: softmax has shape {tuple(probs.shape)}; pseudo-labels need (K, D, H, W) "
            f"with 2 ≤ K < {ignore_index}. Fix: score the case with a model that has a segmentation head."
        )
    conf, arg = probs.max(dim=0)
    keep = conf >= tau_v
    if class_quantile is not None:
        for k in torch.unique(arg).tolist():
            of_k = arg == k
            values = conf[of_k].float()
            if values.numel() > 2**24:  # torch.quantile's input limit: a strided sample is exact enough
                values = values[:: values.numel() // 2**24 + 1]
            threshold = min(float(tau_v), float(torch.quantile(values, float(class_quantile))))
            keep |= of_k & (conf >= threshold)
    label = torch.where(keep, arg, torch.full_like(arg, ignore_index)).to(torch.uint8)
    n_correct = n_compared = None
    if reference is not None:
        ref_np = np.asarray(reference)
        ref = torch.as_tensor(ref_np[0] if ref_np.ndim == 4 and ref_np.shape[0] == 1 else ref_np, device=arg.device)
        if tuple(ref.shape) != tuple(arg.shape):
            raise DataError(
                f"case {case_id}: reference label grid {tuple(ref.shape)} differs from the softmax grid "
                f"{tuple(arg.shape)}. Fix: pass the reference preprocessed with its image."
            )
        compared = keep & (ref != ignore_index)
        n_compared = int(compared.sum())
        n_correct = int((compared & (arg == ref.to(arg.dtype))).sum())
    stats = PseudoLabelStats(case_id, int(arg.numel()), int(keep.sum()), n_compared, n_correct)
    return PseudoLabel(label=label.cpu().numpy()[None], stats=stats)


def pseudo_label_path(folder: Path, case_id: str) -> Path:
    """Where the pseudo-label of `case_id` is stored in `folder`."""
    return Path(folder) / f"{case_id}{PSEUDO_SUFFIX}"


def save_pseudo_label(folder: Path, pseudo: PseudoLabel) -> Path:
    """Write `pseudo` to `folder/<case_id>.npz` (compressed, temp-then-rename); returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = pseudo_label_path(folder, pseudo.case_id)
    st = pseudo.stats
    missing = -1  # npz holds no None: -1 marks "no reference"
    counts = [st.n_voxels, st.n_kept, missing if st.n_compared is None else st.n_compared,
              missing if st.n_correct is None else st.n_correct]
    atomic_savez(path, label=pseudo.label, counts=np.asarray(counts, dtype=np.int64))
    return path


def load_pseudo_label(folder: Path, case_id: str) -> PseudoLabel:
    """Read a pseudo-label written by `save_pseudo_label`.

    Raises:
        StateError: the file is missing or unreadable (names it, and how to recompute it).
    """
    path = pseudo_label_path(folder, case_id)
    try:
        with np.load(path) as data:
            label = data["label"]
            n_voxels, n_kept, n_compared, n_correct = (int(v) for v in data["counts"])
    except (OSError, ValueError, KeyError) as exc:
        raise StateError(
            f"{path}: pseudo-label unreadable ({exc}). Fix: delete the round's selection folder "
            f"({Path(folder).parent}) to recompute it from the supervised checkpoint."
        ) from None
    stats = PseudoLabelStats(
        case_id, n_voxels, n_kept, None if n_compared < 0 else n_compared, None if n_correct < 0 else n_correct
    )
    return PseudoLabel(label=label, stats=stats)
