"""Pseudo-labels: argmax with unconfident voxels ignored, kept fraction and accuracy, storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from assft_core.errors import DataError, StateError
from assft_core.train.pseudo import load_pseudo_label, make_pseudo_label, save_pseudo_label


def _probs() -> torch.Tensor:
    """(3, 1, 1, 4) softmax: voxels argmax 0, 1, 2, 1 with max p = .95, .92, .6, .89."""
    p = torch.tensor(
        [
            [0.95, 0.04, 0.2, 0.1],
            [0.03, 0.92, 0.2, 0.89],
            [0.02, 0.04, 0.6, 0.01],
        ]
    )
    return p.reshape(3, 1, 1, 4)


def test_unconfident_voxels_become_ignore_and_accuracy_counts_kept_only() -> None:
    reference = np.array([0, 2, 2, 255], np.uint8).reshape(1, 1, 1, 4)  # voxel 1 wrong; voxel 3 unknown
    pseudo = make_pseudo_label(_probs(), 0.90, 255, case_id="u", reference=reference)
    np.testing.assert_array_equal(pseudo.label.reshape(-1), [0, 1, 255, 255])
    assert pseudo.label.dtype == np.uint8 and pseudo.label.shape == (1, 1, 1, 4)
    st = pseudo.stats
    assert (st.n_voxels, st.n_kept, st.n_compared, st.n_correct) == (4, 2, 2, 1)
    assert st.kept_fraction == 0.5 and st.kept_accuracy == 0.5


def test_without_reference_no_accuracy_and_nothing_kept_is_allowed() -> None:
    pseudo = make_pseudo_label(_probs(), 0.99, case_id="u")
    assert pseudo.stats.n_kept == 0 and pseudo.stats.kept_accuracy is None
    assert (pseudo.label == 255).all()


def test_bad_inputs_name_the_case() -> None:
    with pytest.raises(DataError, match="case u.*softmax"):
        make_pseudo_label(torch.ones(1, 2, 2, 2), 0.9, case_id="u")
    with pytest.raises(DataError, match="case u.*reference"):
        make_pseudo_label(_probs(), 0.9, case_id="u", reference=np.zeros((1, 1, 3), np.uint8))


def test_save_load_round_trip(tmp_path) -> None:
    pseudo = make_pseudo_label(_probs(), 0.9, case_id="u", reference=np.zeros((1, 1, 1, 4), np.uint8))
    save_pseudo_label(tmp_path, pseudo)
    back = load_pseudo_label(tmp_path, "u")
    np.testing.assert_array_equal(back.label, pseudo.label)
    assert back.stats == pseudo.stats
    no_ref = make_pseudo_label(_probs(), 0.9, case_id="v")
    save_pseudo_label(tmp_path, no_ref)
    assert load_pseudo_label(tmp_path, "v").stats == no_ref.stats
    with pytest.raises(StateError, match="missing"):
        load_pseudo_label(tmp_path, "missing")


def test_class_quantile_keeps_the_surest_voxels_of_a_class_never_above_tau() -> None:
    # Class 1 is never 90% sure (0.6-0.8), class 0 always is (0.95): with τ 0.9 alone class 1 is
    # all ignored; with q = 0.5 its surer half is kept, and class 0 keeps everything.
    p1 = torch.tensor([0.6, 0.7, 0.75, 0.8, 0.05, 0.05]).reshape(6, 1, 1)
    probs = torch.stack([1 - p1, p1])  # (2, 6, 1, 1)
    plain = make_pseudo_label(probs, 0.9, 255)
    assert plain.label[0, :4].ravel().tolist() == [255] * 4
    balanced = make_pseudo_label(probs, 0.9, 255, class_quantile=0.5)
    assert balanced.label[0].ravel().tolist() == [255, 255, 1, 1, 0, 0]
