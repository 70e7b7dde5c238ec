"""Labels: validation against the image, versioning, originals untouched, oracle marking and hiding."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assft_core.errors import DataError, StateError
from assft_core.session import labels, rounds
from assft_core.session.rounds import RoundState
from session_factories import label_map, write_nifti


def _approve(project, *case_ids: str) -> None:
    rounds.mark_scored(project, None)
    rounds.propose(project, [{"case_id": c} for c in case_ids], "manual")
    rounds.approve(project)


def test_label_needs_an_approved_pick(expert_project, tmp_path: Path) -> None:
    f = write_nifti(tmp_path / "up" / "p1.nii.gz", label_map(1))
    with pytest.raises(StateError, match="cannot label 'p1'.*approve it first"):
        labels.label_case(expert_project, "p1", f)
    with pytest.raises(StateError, match="cannot label 't0'"):  # test cases are never labelled here
        labels.label_case(expert_project, "t0", f)
    with pytest.raises(DataError, match="unknown case 'zz'"):
        labels.label_case(expert_project, "zz", f)


def test_invalid_label_stores_nothing(expert_project, tmp_path: Path) -> None:
    p = expert_project
    _approve(p, "p1")
    cases = [
        ("shape", write_nifti(tmp_path / "bad" / "shape.nii.gz", np.zeros((8, 8, 7), np.uint8))),
        ("affine", write_nifti(tmp_path / "bad" / "affine.nii.gz", label_map(1), np.diag([3.0, 2.0, 2.0, 1.0]))),
        ("class", write_nifti(tmp_path / "bad" / "cls.nii.gz", label_map(1) * 3)),
    ]
    for what, f in cases:
        with pytest.raises(DataError, match="was not stored") as err:
            labels.label_case(p, "p1", f)
        assert str(f) in str(err.value), what
    assert labels.label_versions(p, "p1") == []
    assert not (p.artifacts / "labels" / "p1").exists()
    assert rounds.current_round(p).state is RoundState.APPROVED


def test_versions_keep_old_files_and_never_touch_the_original(expert_project, tmp_path: Path) -> None:
    p = expert_project
    _approve(p, "p1", "p2")
    first = write_nifti(tmp_path / "up" / "first.nii.gz", label_map(1))
    original = first.read_bytes()
    v1 = labels.label_case(p, "p1", first)
    assert (v1.version, v1.source, v1.original_name) == (1, "expert", "first.nii.gz")
    assert v1.sha256 == hashlib.sha256(original).hexdigest() and v1.file.name == v1.sha256 + ".nii.gz"
    assert first.read_bytes() == original
    assert rounds.current_round(p).state is RoundState.APPROVED  # p2 not labelled yet

    corrected = label_map(1)
    corrected[0, 0, 0] = 1
    v2 = labels.label_case(p, "p1", write_nifti(tmp_path / "up" / "fix.nii.gz", corrected))
    again = labels.label_case(p, "p1", write_nifti(tmp_path / "up" / "fix2.nii.gz", corrected))
    assert v2.version == 2 and again.version == 2  # the same bytes add no version
    versions = labels.label_versions(p, "p1")
    assert [v.version for v in versions] == [1, 2] and all(v.file.is_file() for v in versions)
    assert np.array_equal(np.asarray(nib.load(versions[0].file).dataobj), label_map(1))
    assert labels.current_labels(p)["p1"].sha256 == v2.sha256

    labels.label_case(p, "p2", write_nifti(tmp_path / "up" / "p2.nii.gz", label_map(2)))
    assert rounds.current_round(p).state is RoundState.LABELLED


def test_import_makes_given_pool_labels_expert_v1(expert_project) -> None:
    current = labels.current_labels(expert_project)
    assert list(current) == ["p0"]  # only the pool case that came labelled; test labels stay out of L
    assert current["p0"].source == "expert"
    assert rounds.round_pool(expert_project).labelled == ["p0"]


def test_oracle_labels_hidden_until_labelled_and_marked(oracle_project) -> None:
    p = oracle_project
    assert labels.current_labels(p) == {}  # reference labels of the pool are not training labels yet
    _approve(p, "p1")
    (v,) = labels.label_with_oracle(p)
    assert (v.case_id, v.source, v.version) == ("p1", "oracle", 1)
    assert list(labels.current_labels(p)) == ["p1"]
    assert labels.label_with_oracle(p) == []  # nothing left
    with pytest.raises(StateError, match="cannot label 'p2'"):
        labels.label_with_oracle(p, ["p2"])


def test_oracle_refused_in_expert_mode(expert_project) -> None:
    with pytest.raises(StateError, match="not an oracle"):
        labels.label_with_oracle(expert_project)


def test_oracle_never_proposes_a_pool_case_it_cannot_label(oracle_project) -> None:
    # A pool scan without a reference label in an oracle project: proposing it would leave an
    # approved pick that `label --oracle` refuses and that can no longer be swapped.
    from assft_core.session import store

    p = oracle_project
    with store.transaction(p.db) as conn:
        conn.execute("UPDATE cases SET has_reference_label = 0, reference_label = NULL WHERE case_id = 'p2'")
    pool = rounds.round_pool(p)
    assert "p2" in pool.pool_ids and "p2" not in pool.candidates and "p1" in pool.candidates
    with pytest.raises(StateError, match="cannot propose 'p2'"):  # not even by hand
        _approve(p, "p2")
