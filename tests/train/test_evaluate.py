"""Evaluation: Dice and HD95 in mm with known answers, missed classes, native-grid inversion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assft_core.config import InferenceConfig, PreprocessConfig
from assft_core.data.records import CaseRecord
from assft_core.train.evaluate import EvalCase, evaluate, load_eval_case, predict_native, score_classes
from tests.train.factories import ThresholdNet, identity_case, write_box_scan
from assft_core.train.data import TrainSample


def _plate(z: int, shape: tuple[int, int, int] = (20, 20, 20)) -> np.ndarray:
    """A one-voxel-thick plate of class 1 at index z of the last axis."""
    a = np.zeros(shape, np.uint8)
    a[5:15, 5:15, z] = 1
    return a


def test_hd95_in_mm_on_anisotropic_spacing() -> None:
    # Two parallel plates 3 voxels apart along the last axis: every surface point of one lies
    # exactly 3 voxels from the other, so HD95 = 3 × spacing of that axis.
    ref, pred = _plate(5), _plate(8)
    s = score_classes(pred, ref, 2, (1.0, 1.0, 2.5))[1]
    assert s.hd95_mm == pytest.approx(7.5)
    assert s.dice == 0.0 and not s.missed
    # Same plates moved along the first axis (1 mm voxels): 3 mm.
    ref_x, pred_x = np.moveaxis(ref, 2, 0), np.moveaxis(pred, 2, 0)
    assert score_classes(pred_x, ref_x, 2, (1.0, 1.0, 2.5))[1].hd95_mm == pytest.approx(3.0)


def test_dice_by_hand_and_missed_class() -> None:
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 1  # 64 voxels
    ref[7:9, 7:9, 7:9] = 2  # 8 voxels
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 2:4] = 1  # 32 voxels, all inside
    scores = score_classes(pred, ref, 3, (1.0, 1.0, 1.0))
    assert scores[1].dice == pytest.approx(2 * 32 / (32 + 64))
    assert scores[2].missed and scores[2].hd95_mm == math.inf and scores[2].dice == 0.0
    assert scores[2].ref_voxels == 8 and scores[2].pred_voxels == 0
    # A class absent from both has no Dice or HD95 (undefined, not 1 or 0).
    both_empty = score_classes(pred, np.where(ref == 2, 0, ref).astype(np.uint8), 3, (1.0, 1.0, 1.0))[2]
    assert both_empty.dice is None and both_empty.hd95_mm is None and not both_empty.missed


def test_report_counts_missed_and_keeps_means_finite() -> None:
    # A case whose class 1 the threshold net misses (dark image) and one it finds; two sites.
    found_img = np.zeros((1, 16, 16, 16), np.float32)
    lab = np.zeros((1, 16, 16, 16), np.uint8)
    lab[0, 4:10, 4:10, 4:10] = 1
    found_img[lab > 0] = 1.0
    found = TrainSample("found", found_img, lab)
    missed = TrainSample("missed", np.zeros_like(found_img), lab)
    cases = [EvalCase(identity_case(found, "A"), lab[0]), EvalCase(identity_case(missed, "B"), lab[0])]
    report = evaluate(ThresholdNet(), cases, num_classes=2, cfg=InferenceConfig(roi_size=(16, 16, 16), device="cpu"))
    assert report.overall is not None
    assert report.cases[0].classes[1].dice == pytest.approx(1.0) and report.cases[0].classes[1].hd95_mm == 0.0
    assert report.cases[1].classes[1].missed
    assert report.overall.missed_per_class == {1: 1}
    assert report.overall.mean_dice == pytest.approx(0.5)
    assert report.overall.mean_hd95_mm == 0.0  # the missed case's inf is left out
    assert report.per_site["A"].missed_per_class == {1: 0} and report.per_site["B"].mean_hd95_mm is None
    doc = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert doc["overall"]["missed_total"] == 1 and doc["cases"][1]["classes"]["1"]["hd95_mm"] is None


def test_evaluation_on_the_native_grid_of_a_resampled_case(tmp_path: Path) -> None:
    # Native grid: 1.5 × 1.5 × 3 mm, first axis flipped (LAS); the network sees a 2 mm RAS grid.
    affine = np.diag([-1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = (40.0, -20.0, 5.0)
    img_path, lab_path = write_box_scan(tmp_path, "box", affine)
    pcfg = PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), divisor=8)
    ec = load_eval_case(CaseRecord("box", (img_path,), lab_path, site="S"), pcfg)
    assert ec.case.image.shape[1:] != ec.native_label.shape  # really resampled
    assert ec.native_spacing_mm == pytest.approx((1.5, 1.5, 3.0))
    icfg = InferenceConfig(roi_size=(16, 16, 16), device="cpu")
    pred = predict_native(ThresholdNet(), ec.case, icfg, 2)
    assert pred.shape == ec.native_label.shape == (30, 26, 14)
    report = evaluate(ThresholdNet(), [ec], num_classes=2, cfg=icfg)
    score = report.cases[0].classes[1]
    assert score.ref_voxels == int((nib.load(str(lab_path)).get_fdata() == 1).sum())
    assert score.dice is not None and score.dice > 0.85
    # Boundary errors of a 2 mm round trip stay within about one native voxel diagonal (mm).
    assert score.hd95_mm is not None and score.hd95_mm <= math.sqrt(1.5**2 + 1.5**2 + 3.0**2) + 1e-6


def _one_hot_scores(pred: np.ndarray, ref: np.ndarray, num_classes: int, spacing: tuple[float, ...]) -> dict:
    """The whole-volume one-hot computation `score_classes` replaced (kept here as the reference)."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    p = one_hot(torch.as_tensor(pred.astype(np.int64))[None, None], num_classes, dim=1).bool()
    r = one_hot(torch.as_tensor(ref.astype(np.int64))[None, None], num_classes, dim=1).bool()
    dice = compute_dice(p, r, include_background=False, ignore_empty=False)[0]
    out = {}
    for k in range(1, num_classes):
        n_ref, n_pred = int(r[0, k].sum()), int(p[0, k].sum())
        hd95 = None
        if n_ref and not n_pred:
            hd95 = math.inf
        elif n_ref and n_pred:
            hd95 = float(compute_hausdorff_distance(p[:, k : k + 1], r[:, k : k + 1], percentile=95, spacing=list(spacing))[0, 0])
        out[k] = (None if not n_ref and not n_pred else float(dice[k - 1]), hd95, bool(n_ref and not n_pred), n_ref, n_pred)
    return out


def _blobs(shape: tuple[int, int, int], classes: list[int], seed: int) -> np.ndarray:
    """Random overlapping boxes of the given classes (later ones drawn over earlier ones)."""
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, np.uint8)
    for k in classes:
        for _ in range(2):
            lo = [int(rng.integers(0, n - 2)) for n in shape]
            hi = [min(n, lo_d + int(rng.integers(2, max(3, n // 2)))) for lo_d, n in zip(lo, shape)]
            a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = k
    return a


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_boxes_give_the_one_hot_numbers(seed: int) -> None:
    # 6 classes: 4 absent from the prediction, 5 absent from the reference, 3 absent from both;
    # boxes may touch the volume's border; anisotropic voxels.
    shape, spacing = (23, 17, 11), (0.8, 1.1, 2.5)
    ref = _blobs(shape, [1, 2, 4], seed)
    pred = _blobs(shape, [2, 1, 5], seed + 10)
    pred[np.roll(ref == 1, 1, axis=0)] = 1  # a shifted copy of class 1: a finite, non-trivial HD95
    expected = _one_hot_scores(pred, ref, 6, spacing)
    got = score_classes(pred, ref, 6, spacing)
    for k, (dice, hd95, missed, n_ref, n_pred) in expected.items():
        s = got[k]
        assert (s.ref_voxels, s.pred_voxels, s.missed) == (n_ref, n_pred, missed), k
        assert s.dice == (pytest.approx(dice, abs=1e-7) if dice is not None else None), k
        assert s.hd95_mm == (pytest.approx(hd95, abs=1e-6) if hd95 is not None else None), k
    assert got[4].missed and got[4].hd95_mm == math.inf
    assert got[5].dice == 0.0 and got[5].hd95_mm is None and got[3].dice is None
    # Another integer dtype of the reference (int32, as load_label gives above 255) scores the same.
    assert score_classes(pred, ref.astype(np.int32), 6, spacing) == got
