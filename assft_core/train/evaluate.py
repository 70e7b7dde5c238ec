"""Evaluation on each case's native grid: Dice and HD95 in mm, per case, per class and per site.

ASSFT, METHOD.md §5: predictions are inverted to the native grid of the reference label, HD95 uses
the native spacing from the affine (MONAI assumes 1 mm unless told), and a class the model misses
entirely (empty prediction, non-empty reference) has HD95 = inf: it is counted and reported, and
left out of the HD95 means so one case cannot make them inf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from assft_core.config import InferenceConfig, PreprocessConfig
from assft_core.data.case_cache import load_case
from assft_core.data.io import load_label, spacing_from_affine
from assft_core.data.preprocess import invert_label
from assft_core.data.records import CaseRecord, PreprocessedCase
from assft_core.errors import DataError, ModelError
from assft_core.models.inference import predict_labels


@dataclass
class EvalCase:
    """A test case: preprocessed input plus its reference label on the native grid.

    Attributes:
        case: the preprocessed case (carries the native shape and affine for the inversion).
        native_label: (X, Y, Z) or (1, X, Y, Z) integer class indices on the native grid.
    """

    case: PreprocessedCase
    native_label: np.ndarray

    @property
    def native_spacing_mm(self) -> tuple[float, float, float]:
        """Native voxel size in mm along X, Y, Z, from the native affine."""
        return spacing_from_affine(self.case.native_affine)


def load_eval_case(record: CaseRecord, cfg: PreprocessConfig, *, cache_dir: Path | None = None) -> EvalCase:
    """Preprocess a labelled case and load its reference label on the native grid.

    Raises:
        DataError: the case has no label, or its files are unusable.
    """
    if record.label_path is None:
        raise DataError(f"case {record.case_id} has no label file; evaluation needs one. Fix: add its label.")
    case = load_case(record, cfg, cache_dir=cache_dir)
    return EvalCase(case=case, native_label=load_label(record.label_path, max_voxels=cfg.max_voxels).array[0])


class EvalCaseStream:
    """Labelled cases made one at a time as they are iterated (re-iterable; memory stays flat).

    Each iteration preprocesses (or reads from the cache) one case and loads its native label, so
    an evaluation over many real-size test cases holds one of them at a time.

    Args:
        records: the cases, each with a label file.
        cfg: preprocessing settings.
        cache_dir: preprocessing cache folder (None: no cache).

    Raises:
        DataError (while iterating): a case has no label, or its files are unusable.
    """

    def __init__(self, records: Sequence[CaseRecord], cfg: PreprocessConfig, cache_dir: Path | None = None) -> None:
        self.records = list(records)
        self.cfg = cfg
        self.cache_dir = cache_dir

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[EvalCase]:
        for record in self.records:
            yield load_eval_case(record, self.cfg, cache_dir=self.cache_dir)


@dataclass
class ClassScore:
    """Scores of one foreground class in one case.

    Attributes:
        dice: Dice in [0, 1]; None when reference and prediction are both empty (undefined).
        hd95_mm: 95th-percentile symmetric Hausdorff distance in mm; inf when missed; None when
            the reference is empty (undefined).
        missed: the reference holds the class but the prediction has none of it.
        ref_voxels / pred_voxels: voxel counts on the native grid.
    """

    dice: float | None
    hd95_mm: float | None
    missed: bool
    ref_voxels: int
    pred_voxels: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; an infinite HD95 becomes None (with `missed` true)."""
        d = asdict(self)
        if d["hd95_mm"] is not None and not math.isfinite(d["hd95_mm"]):
            d["hd95_mm"] = None
        return d


def _class_indices(a: np.ndarray, num_classes: int) -> np.ndarray:
    """`a` as an unsigned integer array (no copy when it already is one), for `find_objects`."""
    if a.dtype in (np.uint8, np.uint16):
        return a
    return a.astype(np.uint8 if num_classes <= 256 else np.uint16)


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    """The smallest box holding boxes `a` and `b` (either may be None)."""
    boxes = [x for x in (a, b) if x is not None]
    return tuple(slice(min(x[d].start for x in boxes), max(x[d].stop for x in boxes)) for d in range(len(boxes[0])))


def score_classes(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing_mm: Sequence[float]
) -> dict[int, ClassScore]:
    """Dice and HD95 (MONAI's definitions) of each foreground class 1..K-1, one class at a time.

    Memory stays per class and per structure: one pass of `scipy.ndimage.find_objects` over each
    volume gives every class's bounding box; then each class's boolean masks are made only inside
    the union of its reference and predicted boxes: Dice from their counts, HD95 from their edges
    (`_hd95_mm`). No one-hot or float volume is made; the numbers are those of MONAI's
    `compute_dice` and `compute_hausdorff_distance` on the whole volume (tested).

    Args:
        pred: (X, Y, Z) predicted class indices (any integer dtype; uint8 avoids a copy).
        ref: (X, Y, Z) reference class indices, same grid.
        num_classes: K, including background.
        spacing_mm: voxel size in mm along the three axes (from the affine).

    Returns:
        Class index k in 1..K-1 -> its `ClassScore` (HD95 in mm; inf when missed).

    Raises:
        DataError: shapes differ, or `ref` holds a class ≥ K or < 0.
    """
    from scipy.ndimage import find_objects

    if pred.shape != ref.shape:
        raise DataError(f"prediction grid {pred.shape} differs from the reference label grid {ref.shape}.")
    if ref.size and (int(ref.max()) >= num_classes or int(ref.min()) < 0):
        raise DataError(
            f"the reference label holds class {int(ref.max())}, but the model predicts {num_classes} classes. "
            "Fix: check the label's values against the project's classes."
        )
    pred_i, ref_i = _class_indices(np.asarray(pred), num_classes), _class_indices(np.asarray(ref), num_classes)
    boxes_p = find_objects(pred_i, max_label=num_classes - 1) if pred_i.size else [None] * (num_classes - 1)
    boxes_r = find_objects(ref_i, max_label=num_classes - 1) if ref_i.size else [None] * (num_classes - 1)
    spacing = [float(s) for s in spacing_mm]
    scores: dict[int, ClassScore] = {}
    for k in range(1, num_classes):
        box_p, box_r = boxes_p[k - 1], boxes_r[k - 1]
        if box_p is None and box_r is None:
            scores[k] = ClassScore(dice=None, hd95_mm=None, missed=False, ref_voxels=0, pred_voxels=0)
            continue
        box = _union_box(box_p, box_r)
        p, r = pred_i[box] == k, ref_i[box] == k
        n_ref, n_pred = int(np.count_nonzero(r)), int(np.count_nonzero(p))
        # MONAI's compute_dice with ignore_empty=False: an empty reference with a non-empty
        # prediction scores 0 (a false positive); counted on booleans, not on float copies.
        dice = 2.0 * np.count_nonzero(p & r) / (n_ref + n_pred)
        hd95: float | None = None
        if n_ref and not n_pred:
            hd95 = math.inf
        elif n_ref and n_pred:
            hd95 = _hd95_mm(p, r, spacing)
        scores[k] = ClassScore(
            dice=dice, hd95_mm=hd95, missed=bool(n_ref and not n_pred), ref_voxels=n_ref, pred_voxels=n_pred
        )
        del p, r
    return scores


def _hd95_mm(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """MONAI's `compute_hausdorff_distance(percentile=95)` of two non-empty boolean masks, in mm.

    The same edges as MONAI's `get_mask_edges` (mask voxels with a 6-neighbour outside the mask,
    outside the volume counting as outside) and the same distances, each edge voxel's Euclidean
    distance to the other mask's nearest edge voxel, then the larger of the two directed 95th
    percentiles. The distances come from a k-d tree over the edge voxels (scipy `cKDTree`) instead
    of a distance transform over the masks' bounding box: a weak model's stray voxels make that box
    the whole scan, where the transform needs a float64 and an int32 × 3 volume (2 GB, a minute per
    class at 512 × 512 × 240); the edges are a few thousand points.
    """
    from scipy.spatial import cKDTree

    scale = np.asarray(spacing, dtype=np.float64)
    points_p, points_r = _edge_voxels(pred) * scale, _edge_voxels(ref) * scale
    to_ref = cKDTree(points_r).query(points_p)[0]
    to_pred = cKDTree(points_p).query(points_r)[0]
    return float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))


def _edge_voxels(mask: np.ndarray) -> np.ndarray:
    """(N, 3) indices of the voxels of boolean `mask` that a 6-connected erosion removes."""
    from scipy.ndimage import binary_erosion

    padded = np.pad(mask, 1)  # outside the volume is outside the mask, as in MONAI's zero-padded crop
    edges = padded & ~binary_erosion(padded)
    return np.argwhere(edges) - 1


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


@dataclass
class CaseReport:
    """Scores of one case.

    Attributes:
        case_id / site: the case.
        classes: foreground class index -> its scores.
        mean_dice: mean Dice over foreground classes with a defined Dice.
        mean_hd95_mm: mean HD95 over foreground classes with a finite HD95 (missed ones left out).
    """

    case_id: str
    site: str
    classes: dict[int, ClassScore]

    @property
    def mean_dice(self) -> float | None:
        return _mean([c.dice for c in self.classes.values()])

    @property
    def mean_hd95_mm(self) -> float | None:
        return _mean([c.hd95_mm for c in self.classes.values()])

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "site": self.site,
            "mean_dice": self.mean_dice,
            "mean_hd95_mm": self.mean_hd95_mm,
            "classes": {str(k): c.to_dict() for k, c in self.classes.items()},
        }


@dataclass
class Summary:
    """Aggregate over a set of cases (all, or one site).

    Attributes:
        n_cases: cases summarised.
        mean_dice: mean over cases of each case's mean foreground Dice.
        dice_per_class: class -> mean Dice over cases where it is defined.
        mean_hd95_mm: mean over cases of each case's mean finite HD95.
        hd95_per_class_mm: class -> mean finite HD95 over cases.
        missed_per_class: class -> number of cases where the class was missed (HD95 inf).
    """

    n_cases: int
    mean_dice: float | None
    dice_per_class: dict[int, float | None]
    mean_hd95_mm: float | None
    hd95_per_class_mm: dict[int, float | None]
    missed_per_class: dict[int, int]

    @classmethod
    def of(cls, cases: Sequence[CaseReport], num_classes: int) -> Summary:
        """Summarise `cases` (classes 1..K-1)."""
        ks = range(1, num_classes)
        return cls(
            n_cases=len(cases),
            mean_dice=_mean([c.mean_dice for c in cases]),
            dice_per_class={k: _mean([c.classes[k].dice for c in cases]) for k in ks},
            mean_hd95_mm=_mean([c.mean_hd95_mm for c in cases]),
            hd95_per_class_mm={k: _mean([c.classes[k].hd95_mm for c in cases]) for k in ks},
            missed_per_class={k: sum(c.classes[k].missed for c in cases) for k in ks},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_cases": self.n_cases,
            "mean_dice": self.mean_dice,
            "dice_per_class": {str(k): v for k, v in self.dice_per_class.items()},
            "mean_hd95_mm": self.mean_hd95_mm,
            "hd95_per_class_mm": {str(k): v for k, v in self.hd95_per_class_mm.items()},
            "missed_per_class": {str(k): v for k, v in self.missed_per_class.items()},
            "missed_total": sum(self.missed_per_class.values()),
        }


@dataclass
class EvalReport:
    """Evaluation of one model on a test set (ASSFT, METHOD.md §5).

    Attributes:
        num_classes: K, including background.
        cases: per-case reports, in input order.
        overall: summary over every case.
        per_site: site -> summary over that site's cases.
    """

    num_classes: int
    cases: list[CaseReport] = field(default_factory=list)
    overall: Summary | None = None
    per_site: dict[str, Summary] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (strict JSON: no inf/NaN; missed classes are counted instead)."""
        return {
            "num_classes": self.num_classes,
            "overall": self.overall.to_dict() if self.overall else None,
            "per_site": {s: v.to_dict() for s, v in self.per_site.items()},
            "cases": [c.to_dict() for c in self.cases],
        }


def predict_native(network: nn.Module, case: PreprocessedCase, cfg: InferenceConfig, num_classes: int | None = None) -> np.ndarray:
    """Sliding-window argmax of `network` on `case`, inverted to the native grid.

    Returns:
        (X, Y, Z) uint8 class indices on `case.native_shape` / `case.native_affine`.

    Raises:
        ModelError: the network predicts a number of classes other than `num_classes`.
    """
    # The argmax of the sliding-window softmax, one slab at a time (no (K, D, H, W) volume kept);
    # the very labels of `predict_probs(...).max(0).indices`.
    labels, k = predict_labels(network, torch.from_numpy(np.ascontiguousarray(case.image)), cfg)
    if num_classes is not None and k != num_classes:
        raise ModelError(
            f"the network predicts {k} classes, the task has {num_classes}. "
            "Fix: use a checkpoint with a head for the task's classes."
        )
    pred = labels.numpy().astype(np.uint8)
    del labels
    return invert_label(pred, case)


def evaluate(network: nn.Module, cases: Iterable[EvalCase], *, num_classes: int, cfg: InferenceConfig,
             on_case: Callable[[int, str], None] | None = None) -> EvalReport:
    """Evaluate `network` on `cases` on their native grids (ASSFT, METHOD.md §5).

    Sliding-window inference (with `cfg.n_tta` flip TTA), argmax, inversion of the preprocessing,
    then Dice and HD95 in mm (spacing from each native affine) for classes 1..K-1.

    Args:
        network: the model, on its device.
        cases: test cases with native reference labels, consumed one at a time (an
            `EvalCaseStream` or a generator holds one case in memory; only scores are kept).
        num_classes: K, including background.
        cfg: sliding-window settings.
        on_case: called as `on_case(done, case_id)` after each case (progress).

    Returns:
        Per-case, per-class and per-site scores; `to_dict()` is strict JSON.

    Raises:
        ModelError: the network's class count is not `num_classes`.
        DataError: a reference label does not fit its case's native grid or classes.
    """
    reports: list[CaseReport] = []
    for ec in cases:
        ref = np.asarray(ec.native_label)
        if ref.ndim == 4 and ref.shape[0] == 1:
            ref = ref[0]
        if tuple(ref.shape) != tuple(ec.case.native_shape):
            raise DataError(
                f"case {ec.case.case_id}: reference label grid {ref.shape} differs from the image's native grid "
                f"{tuple(ec.case.native_shape)}. Fix: pair the case with its own label file."
            )
        pred = predict_native(network, ec.case, cfg, num_classes)
        classes = score_classes(pred, ref, num_classes, ec.native_spacing_mm)
        reports.append(CaseReport(case_id=ec.case.case_id, site=ec.case.site, classes=classes))
        if on_case is not None:
            on_case(len(reports), ec.case.case_id)
        del ec, ref, pred  # the next case is made only after this one is released
    sites = sorted({r.site for r in reports})
    return EvalReport(
        num_classes=num_classes,
        cases=reports,
        overall=Summary.of(reports, num_classes),
        per_site={s: Summary.of([r for r in reports if r.site == s], num_classes) for s in sites},
    )
