"""Hand-checked rules of the demo corpus: the CSF/GM/WM labelling and the thick-slice resampling."""

from __future__ import annotations

import numpy as np

from assft_core.data.demo.anatomy import _majority2, tissue_labels
from assft_core.data.demo.sites import _thick_slices


def test_tissue_rule_by_hand() -> None:
    # voxel:      GM    WM   CSF  rim(dark 0) bright-unknown  outside-mask  tie->GM
    t1 = np.array([0.6, 0.8, 0.3, 0.05, 0.7, 0.3, 0.6], dtype=np.float32)[:, None, None]
    gm = np.array([0.6, 0.4, 0.1, 0.0, 0.1, 0.1, 0.4], dtype=np.float32)[:, None, None]
    wm = np.array([0.2, 0.7, 0.1, 0.0, 0.1, 0.1, 0.4], dtype=np.float32)[:, None, None]
    brain = np.array([1, 1, 1, 1, 1, 0, 1], dtype=bool)[:, None, None]
    assert tissue_labels(t1, gm, wm, brain).ravel().tolist() == [2, 3, 1, 0, 0, 0, 2]


def test_thick_slices_by_hand() -> None:
    x = np.arange(5, dtype=np.float32).reshape(1, 1, 5)  # slices 0..4 along Z
    label = np.array([0, 1, 2, 3, 0], dtype=np.uint8).reshape(1, 1, 5)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, -20.0, -30.0]
    thick, thick_label, out = _thick_slices(x, label, affine, 3)
    # Z padded to 6 with zeros: slabs (0,1,2) -> 1, (3,4,0) -> 7/3; labels at slab centres 1 and 4.
    assert np.allclose(thick.ravel(), [1.0, 7.0 / 3.0])
    assert thick_label.ravel().tolist() == [1, 0]
    assert np.allclose(np.diag(out)[:3], [2.0, 2.0, 6.0])
    assert np.allclose(out[:3, 3], [-10.0, -20.0, -28.0])


def test_majority_pooling_by_hand() -> None:
    label = np.zeros((4, 2, 2), dtype=np.uint8)
    label[:2] = np.array([[[1, 1], [1, 2]], [[2, 3], [0, 0]]])  # block 0: three 1s, two 0s -> 1
    label[2:] = np.array([[[2, 2], [3, 3]], [[0, 0], [1, 1]]])  # block 1: 2-2-2-2 tie of 0..3 -> 0
    assert _majority2(label).ravel().tolist() == [1, 0]
