"""The annotation round trip: export picks with pre-annotations, import corrected labels, effort."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from assft_core.config import InferenceConfig, PreprocessConfig, ProjectConfig
from assft_core.errors import DataError, StateError
from assft_core.models.card import ModelCard
from assft_core.session import annotation, labels, rounds
from assft_core.session.project import Project, create_project, list_cases
from assft_core.session.rounds import RoundState

from project_copies import project_copy
from session_factories import make_dataset, write_nifti


@pytest.fixture(scope="session")
def _annotation_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An expert project on the tiny 8³ dataset with a real (random) 2-level UNet as f_0."""
    from assft_core.models.loaded import save_model
    from assft_core.models.registry import get_backbone

    root = tmp_path_factory.mktemp("annotation")
    data = make_dataset(root / "data", pool_labels=False)
    card = ModelCard(backbone="unet", in_channels=1, classes={0: "background", 1: "blob"}, roi_size=(16, 16, 16),
                     backbone_kwargs={"channels": [4, 8], "strides": [2], "num_res_units": 0},
                     preprocess=PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0)))
    torch.manual_seed(0)
    network = get_backbone("unet").make(1, 2, card.backbone_kwargs)
    model = save_model(network, card, root / "model")
    cfg = ProjectConfig(budget=2, inference=InferenceConfig(roi_size=(16, 16, 16), sw_batch_size=1, device="cpu"))
    create_project(root / "proj", data, model, config=cfg)
    return root / "proj"


@pytest.fixture()
def picked_project(tmp_path: Path, _annotation_template: Path) -> Project:
    """A fresh copy with p1 and p2 approved in round 0."""
    project = project_copy(_annotation_template, tmp_path)
    rounds.mark_scored(project, None)
    rounds.propose(project, [{"case_id": "p1", "score": 0.9}, {"case_id": "p2"}], "manual")
    rounds.approve(project)
    return project


def _run(*argv: str | Path) -> tuple[int, str]:
    import contextlib

    from assft_core.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def test_effort_counts() -> None:
    pre = np.zeros((4, 4, 5), np.uint8)
    pre[1:3, 1:3, 1:4] = 1  # 12 voxels
    fin = pre.copy()
    fin[0, 0, 0] = 1
    fin[1, 1, 1] = 0
    fin[2, 2, 1] = 0
    voxels, slices, dice = annotation.effort(pre, fin)
    assert (voxels, slices) == (3, 2)
    assert dice == pytest.approx(2 * 10 / (12 + 11))
    assert annotation.effort(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))) == (0, 0, 1.0)
    with pytest.raises(DataError, match="shape"):
        annotation.effort(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


def test_export_edit_import_round_trip(picked_project: Project, tmp_path: Path) -> None:
    p = picked_project
    out = tmp_path / "picks"
    code, text = _run("export-picks", "-p", p.folder, out, "--device", "cpu")
    assert code == 0, text
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["case_id"] for c in manifest["cases"]] == ["p1", "p2"]
    assert manifest["cases"][0]["expected_label"] == "labels/p1.nii.gz"
    assert "score 0.900" in manifest["cases"][0]["why_picked"] and manifest["cases"][0]["site"] == "A"
    originals = {c.case_id: c.image_paths[0] for c in list_cases(p)}
    for case in ("p1", "p2"):
        assert (out / "images" / f"{case}_0000.nii.gz").read_bytes() == originals[case].read_bytes()
        pre_img = nib.load(out / "preannotations" / f"{case}.nii.gz")
        assert pre_img.get_data_dtype() == np.uint8
        assert np.allclose(pre_img.affine, nib.load(originals[case]).affine)
        assert pre_img.shape == (8, 8, 8)
        assert pre_img.dataobj.slope == 1.0 and pre_img.dataobj.inter == 0.0
    assert '"blob"' in (out / "labels.txt").read_text()
    assert "1 blob 255 0 0 255" in (out / "assft.ctbl").read_text()
    assert (out / "labels").is_dir() and not any((out / "labels").iterdir())

    # The expert changes 3 voxels in 2 slices of p1's pre-annotation; p2 comes back on a wrong grid;
    # a stray file has a name no pick has.
    pre = np.asarray(nib.load(out / "preannotations" / "p1.nii.gz").dataobj)
    final = pre.copy()
    for idx in [(1, 1, 2), (5, 6, 2), (3, 3, 6)]:
        final[idx] = 1 - final[idx]
    write_nifti(out / "labels" / "p1.nii.gz", final, nib.load(originals["p1"]).affine)
    write_nifti(out / "labels" / "p2.nii.gz", np.zeros((8, 8, 7), np.uint8))
    write_nifti(out / "labels" / "scan_seg.nii.gz", final)
    code, text = _run("import-labels", "-p", p.folder, out)  # the export folder itself: its labels/
    assert code == 1, text
    assert "stored p1 v1: 3 voxel(s), 2/8 slice(s) changed" in text
    assert "refused p2.nii.gz" in text and "was not stored" in text
    assert "refused scan_seg.nii.gz" in text and "p1.nii.gz, p2.nii.gz" in text
    assert set(labels.current_labels(p)) == {"p0", "p1"}
    assert not p.artifact_path("labels", "p2").exists()
    assert rounds.current_round(p).state is RoundState.APPROVED
    [e] = annotation.case_efforts(p)
    a, b = pre == 1, final == 1
    expected_dice = 1.0 if not (a.any() or b.any()) else 2 * np.count_nonzero(a & b) / (a.sum() + b.sum())
    assert (e.case_id, e.changed_voxels, e.changed_slices, e.round) == ("p1", 3, 2, 0)
    assert e.dice == pytest.approx(expected_dice)

    # p2 fixed: stored, with no change from its pre-annotation; the round is labelled.
    shutil.copyfile(out / "preannotations" / "p2.nii.gz", tmp_path / "p2.nii.gz")
    (out / "labels" / "p2.nii.gz").unlink()
    report = annotation.import_labels(p, tmp_path)  # only p2.nii.gz (and nothing else) is in tmp_path's top level
    assert [(x.case_id, x.changed_voxels, x.changed_slices, x.dice) for x in report.stored] == [("p2", 0, 0, 1.0)]
    assert rounds.current_round(p).state is RoundState.LABELLED
    [r0] = annotation.round_efforts(p).values()
    assert (r0.round, r0.cases, r0.changed_voxels, r0.changed_slices) == (0, 2, 3, 2)
    code, text = _run("status", "-p", p.folder)
    assert code == 0 and "annotation effort: 2 case(s), 3 voxel(s), 2 slice(s) changed" in text


def test_export_refuses_a_used_folder_and_needs_approved_picks(picked_project: Project, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an empty folder"):
        annotation.export_picks(picked_project, used, predictor=lambda p, f: (np.zeros((8, 8, 8), np.uint8), "f0"))
    assert (used / "mine.txt").read_text() == "keep me" and len(list(used.iterdir())) == 1
    with pytest.raises(StateError, match="export-picks"):
        annotation.import_labels(picked_project, tmp_path)


def test_zip_has_the_same_layout(picked_project: Project) -> None:
    data = annotation.export_picks_zip(picked_project, predictor=lambda p, f: (np.ones((8, 8, 8), np.uint8), "f0"))
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"manifest.json", "labels.txt", "assft.ctbl", "images/p1_0000.nii.gz", "preannotations/p2.nii.gz",
            "labels/"} <= names
    assert not any(picked_project.artifact_path("tmp").iterdir())
