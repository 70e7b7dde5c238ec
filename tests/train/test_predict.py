"""Prediction: NIfTI labels on the input's grid; never overwrites, never writes half a batch."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assft_core.config import InferenceConfig, PreprocessConfig
from assft_core.errors import DataError
from assft_core.train.predict import output_name, predict
from tests.train.factories import ThresholdNet, write_box_scan

PCFG = PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), divisor=8)
ICFG = InferenceConfig(roi_size=(16, 16, 16), device="cpu")


def _affine() -> np.ndarray:
    a = np.diag([1.5, -1.5, 3.0, 1.0])
    a[:3, 3] = (-10.0, 30.0, 0.0)
    return a


def test_labels_keep_the_input_affine_and_shape(tmp_path: Path) -> None:
    img, lab = write_box_scan(tmp_path / "in", "case1", _affine())
    out = predict(ThresholdNet(), [img], tmp_path / "out", preprocess_cfg=PCFG, infer_cfg=ICFG)
    assert out == [tmp_path / "out" / "case1.nii.gz"]
    written, source = nib.load(str(out[0])), nib.load(str(img))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    ref = np.asarray(nib.load(str(lab)).dataobj)
    pred = np.asarray(written.dataobj)
    assert 2 * np.sum((pred == 1) & (ref == 1)) / (np.sum(pred == 1) + np.sum(ref == 1)) > 0.85
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["case1.nii.gz"]  # no staging left


def test_never_overwrites_and_writes_nothing_on_refusal(tmp_path: Path) -> None:
    a, _ = write_box_scan(tmp_path / "in", "a", _affine())
    b, _ = write_box_scan(tmp_path / "in", "b", _affine())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    existing = out_dir / "b.nii.gz"
    existing.write_bytes(b"user data")
    with pytest.raises(DataError, match="b.nii.gz"):
        predict(ThresholdNet(), [[a], [b]], out_dir, preprocess_cfg=PCFG, infer_cfg=ICFG)
    assert existing.read_bytes() == b"user data"
    assert sorted(p.name for p in out_dir.iterdir()) == ["b.nii.gz"]  # a.nii.gz not written either


def test_a_failing_case_leaves_nothing_behind(tmp_path: Path) -> None:
    a, _ = write_box_scan(tmp_path / "in", "a", _affine())
    broken = tmp_path / "in" / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    out_dir = tmp_path / "out"
    with pytest.raises(DataError, match="broken"):
        predict(ThresholdNet(), [a, broken], out_dir, preprocess_cfg=PCFG, infer_cfg=ICFG)
    assert list(out_dir.iterdir()) == []


def test_output_names_and_duplicates(tmp_path: Path) -> None:
    assert output_name([Path("x/brain_0000.nii.gz"), Path("x/brain_0001.nii.gz")]) == "brain.nii.gz"
    assert output_name([Path("scan.nii")]) == "scan.nii.gz"
    with pytest.raises(DataError, match="same output"):
        predict(ThresholdNet(), [tmp_path / "p/s.nii.gz", tmp_path / "q/s.nii"], tmp_path / "o", preprocess_cfg=PCFG, infer_cfg=ICFG)


def test_cli_predict_writes_then_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from assft_core.cli import main
    from assft_core.models.card import ModelCard
    from assft_core.models.loaded import save_model
    from assft_core.models.registry import get_backbone
    from assft_core.train.commands import group_channels

    card = ModelCard(
        backbone="unet",
        in_channels=1,
        classes={0: "background", 1: "box"},
        roi_size=(16, 16, 16),
        backbone_kwargs={"channels": (4, 8), "strides": (2,), "num_res_units": 1, "norm": "batch"},
        preprocess=PCFG,
    )
    net = get_backbone("unet").make(1, 2, card.backbone_kwargs)
    model_dir = save_model(net, card, tmp_path / "model")
    img, _ = write_box_scan(tmp_path / "in", "scan", _affine())
    argv = [str(model_dir), str(img), "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main(["predict", *argv]) == 0
    out = tmp_path / "out" / "scan.nii.gz"
    assert str(out) in capsys.readouterr().out
    # Readable like any file the user makes (not mkstemp's 0600), as is the exported model.
    from assft_core.fsutil import CREATION_MODE

    assert out.stat().st_mode & 0o777 == CREATION_MODE == 0o666 & ~_umask()
    assert (model_dir / "model_card.json").stat().st_mode & 0o777 == CREATION_MODE
    before = out.read_bytes()
    assert main(["predict", *argv]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert group_channels([Path("a_0001.nii.gz"), Path("b.nii.gz"), Path("a_0000.nii.gz")]) == [
        [Path("a_0000.nii.gz"), Path("a_0001.nii.gz")],
        [Path("b.nii.gz")],
    ]


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask
