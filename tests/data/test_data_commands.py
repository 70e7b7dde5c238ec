"""`assft validate` exit codes and output, through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_factories import label, scan, write_nifti
from assft_core.cli import main


def test_clean_pair_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = write_nifti(tmp_path / "a.nii.gz", scan())
    lab = write_nifti(tmp_path / "a_seg.nii.gz", label())
    assert main(["validate", str(img), str(lab), "--classes", "3"]) == 0
    assert "OK: 1 case(s) checked, 0 with errors; 0 error(s), 0 warning(s)." in capsys.readouterr().out


def test_warnings_only_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = write_nifti(tmp_path / "a.nii.gz", scan())
    lab = write_nifti(tmp_path / "a_seg.nii.gz", np.zeros_like(label()))
    assert main(["validate", str(img), str(lab)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "empty" in out and "1 warning(s)" in out


def test_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = write_nifti(tmp_path / "a.nii.gz", scan())
    lab = write_nifti(tmp_path / "a_seg.nii.gz", label())
    assert main(["validate", str(img), str(lab), "--classes", "2"]) == 1  # class 2 undeclared
    out = capsys.readouterr().out
    assert "ERROR" in out and str(lab) in out and "FAILED" in out


def test_missing_file_exit_1_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.nii.gz")]) == 1
    captured = capsys.readouterr()
    assert "not found" in captured.out and "Traceback" not in captured.out + captured.err
    assert main(["validate"]) == 1
    assert "give an IMAGE" in capsys.readouterr().err


def test_dataset_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_nifti(tmp_path / "imagesTr" / "c1_0000.nii.gz", scan())
    write_nifti(tmp_path / "labelsTr" / "c1.nii.gz", label())
    write_nifti(tmp_path / "imagesTs" / "c2_0000.nii.gz", scan())
    meta = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    assert main(["validate", "--dataset", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 cases, 1 labelled" in out and "OK: 2 case(s)" in out
    bad = label()
    bad[0, 0, 0] = 7
    write_nifti(tmp_path / "labelsTr" / "c1.nii.gz", bad)
    assert main(["validate", "--dataset", str(tmp_path)]) == 1
    assert "[7]" in capsys.readouterr().out
    (tmp_path / "dataset.json").write_text("{broken")
    assert main(["validate", "--dataset", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "dataset.json" in err and "Traceback" not in err
