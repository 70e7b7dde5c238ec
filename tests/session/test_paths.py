"""Names are sanitised and nothing is written outside the project folder."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assft_core.errors import DataError
from assft_core.session import labels, rounds
from assft_core.session.paths import safe_join, sanitize_filename, sanitize_id
from session_factories import label_map, write_nifti


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("case_01", "case_01"), ("../../etc/passwd", "_.._etc_passwd"), ("/abs/name", "_abs_name"),
     ("a b\\c", "a_b_c"), (".hidden", "hidden")],
)
def test_sanitize_id(raw: str, expected: str) -> None:
    assert sanitize_id(raw) == expected


@pytest.mark.parametrize("raw", ["", "...", "..", "///"])
def test_sanitize_id_refuses_empty(raw: str) -> None:
    with pytest.raises(DataError, match="no usable characters"):
        sanitize_id(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("../../evil.nii.gz", "evil.nii.gz"), ("/abs/dir/l a.nii", "l_a.nii"), ("C:\\x\\lab.NII.GZ", "lab.nii.gz")],
)
def test_sanitize_filename_keeps_base_name_only(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_safe_join_refuses_escapes(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a", "b.nii") == tmp_path.resolve() / "a" / "b.nii"
    for parts in (("..", "x"), ("/etc/passwd",), ("a", "..", "..", "x")):
        with pytest.raises(DataError, match="outside the project folder"):
            safe_join(tmp_path, *parts)


def test_upload_with_hostile_name_stays_inside_project(oracle_project, tmp_path: Path) -> None:
    project = oracle_project
    rounds.mark_scored(project, None)
    rounds.propose(project, [{"case_id": "p1"}], "manual")
    rounds.approve(project)
    before = sorted(p.name for p in tmp_path.iterdir())
    data = write_nifti(tmp_path / "scratch" / "l.nii.gz", label_map(1)).read_bytes()
    version = labels.label_upload(project, "p1", data, "../../../escape.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "scratch"])
    assert project.folder.resolve() in version.file.parents
    assert not list(tmp_path.rglob("escape.nii.gz"))
    assert not list((project.artifacts / "tmp").iterdir())  # the temporary upload is gone
    with pytest.raises(DataError):
        project.artifact_path("..", "..", "x")
    assert np.array_equal(np.asarray(nib.load(version.file).dataobj), label_map(1))
