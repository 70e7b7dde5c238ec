"""resample_label_to_grid: nearest neighbour through world coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from assft_core.data.grid import resample_label_to_grid
from assft_core.errors import DataError


def test_upsampling_by_two_matches_hand_computation() -> None:
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[1, 2, 3] = 7
    # dst voxel i sits at world 0.5 i, in src voxel floor(0.5 i + 0.5) (ties go up).
    dst = np.diag([0.5, 0.5, 0.5, 1.0])
    out = resample_label_to_grid(lab, np.eye(4), (8, 8, 8), dst)
    expected = np.zeros((8, 8, 8), np.uint8)
    # src index = 0.5 * dst index, rounded half up: dst 2 -> 1, dst 3 -> 1.5 -> 2; dst 1 -> 0.5 -> 1.
    xs = [i for i in range(8) if np.floor(0.5 * i + 0.5) == 1]
    ys = [i for i in range(8) if np.floor(0.5 * i + 0.5) == 2]
    zs = [i for i in range(8) if np.floor(0.5 * i + 0.5) == 3]
    expected[np.ix_(xs, ys, zs)] = 7
    assert xs == [1, 2] and zs == [5, 6]
    np.testing.assert_array_equal(out, expected)


def test_flipped_axis_and_outside_fill() -> None:
    lab = np.arange(5, dtype=np.uint8).reshape(5, 1, 1) + 1  # values 1..5 along x
    src = np.eye(4)
    dst = np.eye(4)
    dst[0, 0], dst[0, 3] = -1.0, 6.0  # dst x index i -> world 6 - i
    out = resample_label_to_grid(lab, src, (8, 1, 1), dst)
    # world 6 -> outside (fill 0), 5 -> outside, 4 -> value 5, ..., 0 -> value 1, -1 -> outside
    np.testing.assert_array_equal(out[:, 0, 0], [0, 0, 5, 4, 3, 2, 1, 0])


def test_matches_scipy_map_coordinates_on_a_generic_affine() -> None:
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 4, (9, 8, 7)).astype(np.uint8)
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    src = np.eye(4)
    src[:3, :3] = np.diag([1.2, 0.9, 2.0])
    src[:3, 3] = [3.0, -2.0, 1.0]
    dst = np.eye(4)
    dst[:3, :3] = rot @ np.diag([0.77, 0.83, 1.31])
    dst[:3, 3] = [3.3, -1.7, 1.1]
    out = resample_label_to_grid(lab, src, (10, 9, 8), dst)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in (10, 9, 8)], indexing="ij"), 0).reshape(3, -1)
    src_idx = (np.linalg.inv(src) @ dst @ np.vstack([idx, np.ones(idx.shape[1])]))[:3]
    ref = map_coordinates(lab, src_idx, order=0, mode="nearest").ravel()
    # A voxel covers +-0.5 around its centre; beyond the outer voxels' extent it is background.
    shape = np.array(lab.shape)[:, None]
    inside = np.all((src_idx >= -0.5) & (src_idx < shape - 0.5), axis=0)
    ref = np.where(inside, ref, 0).reshape(10, 9, 8)
    assert 0 < inside.sum() < inside.size  # both branches exercised
    np.testing.assert_array_equal(out, ref)


def test_rejects_float_labels_and_bad_affines() -> None:
    with pytest.raises(DataError, match="integer"):
        resample_label_to_grid(np.zeros((2, 2, 2), np.float32), np.eye(4), (2, 2, 2), np.eye(4))
    with pytest.raises(DataError, match="invertible"):
        resample_label_to_grid(np.zeros((2, 2, 2), np.uint8), np.zeros((4, 4)), (2, 2, 2), np.eye(4))
