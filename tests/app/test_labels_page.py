"""Labels page: uploads validated before anything is stored, the oracle in demo mode, versions."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from app_factories import AFFINE, blob_label, store_scores

from assft_core.errors import DataError
from assft_core.session import labels, rounds
from assft_core.session.query import propose_round
from assft_core.session.rounds import RoundState


def _approve_one(project) -> str:
    """Propose 2 picks, approve the first, reject the second: round `approved`, one case to label."""
    store_scores(project)
    first, second = (q.case_id for q in propose_round(project, "assft", 2))
    rounds.approve(project, [first])
    rounds.reject(project, second)
    assert rounds.current_round(project).state is RoundState.APPROVED
    return first


def _nifti_bytes(data: np.ndarray, affine: np.ndarray = AFFINE) -> bytes:
    """A .nii.gz file's bytes, made in memory."""
    img = nib.Nifti1Image(data, affine)
    return gzip.compress(img.to_bytes())


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"definitely not a NIfTI file", "label.nii.gz"),
        (_nifti_bytes(np.zeros((6, 6, 6), np.uint8)), "shape"),  # wrong grid: 6³ for an 8³ image
    ],
    ids=["garbage", "wrong-shape"],
)
def test_invalid_upload_stores_nothing_and_says_why(run_page, expert_project, content: bytes, expected: str) -> None:
    case_id = _approve_one(expert_project)
    before = labels.current_labels(expert_project)
    at = run_page("labels", expert_project.folder)
    at.file_uploader(key=f"file-0-{case_id}").set_value(("label.nii.gz", content, "application/gzip"))
    at.run()
    assert not at.exception
    # The preview says why before anything is stored, naming the user's file, never a temporary path.
    message = at.error[0].value
    assert message.startswith(f"label.nii.gz would not be stored for {case_id}") and expected in message
    assert "tmp" not in message and str(expert_project.folder) not in message
    assert at.button(key=f"store-0-{case_id}").disabled
    # The engine refuses it the same way, in the user's words.
    with pytest.raises(DataError) as refused:
        labels.label_upload(expert_project, case_id, content, "label.nii.gz")
    assert "label.nii.gz" in str(refused.value) and "upload-" not in str(refused.value)
    assert labels.current_labels(expert_project).keys() == before.keys()
    assert _files_under(expert_project.artifact_path("labels", case_id)) == []
    assert _files_under(expert_project.artifact_path("tmp")) == []  # the upload's temporary copy is gone
    assert rounds.current_round(expert_project).state is RoundState.APPROVED


def test_valid_upload_is_stored_as_version_one_and_listed(run_page, expert_project) -> None:
    case_id = _approve_one(expert_project)
    data = _nifti_bytes(blob_label(1))
    at = run_page("labels", expert_project.folder)
    at.file_uploader(key=f"file-0-{case_id}").set_value(("mine.nii.gz", data, "application/gzip"))
    at.run()
    # Previewed over the image before it is stored: the label's voxels on the chosen slice, nothing stored yet.
    (preview,) = [c for c in at.get("plotly_chart") if c.key == f"preview-figure-0-{case_id}"]
    assert "mine.nii.gz over" in json.loads(preview.proto.spec)["layout"]["title"]["text"]
    assert labels.current_labels(expert_project) == {} or case_id not in labels.current_labels(expert_project)
    assert any(f"mine.nii.gz fits the image of {case_id}" in c.value for c in at.caption)
    at.button(key=f"store-0-{case_id}").click().run()
    assert not at.exception and not at.error
    (version,) = labels.label_versions(expert_project, case_id)
    assert (version.version, version.source, version.original_name) == (1, "expert", "mine.nii.gz")
    assert version.file.read_bytes() == data  # stored byte for byte
    assert rounds.current_round(expert_project).state is RoundState.LABELLED
    assert f"{case_id}: label version 1 stored" in at.success[0].value
    at.selectbox(key="versions-case").set_value(case_id).run()
    table = at.dataframe[-1].value
    assert list(table["version"]) == [1] and list(table["source"]) == ["expert"]


def test_oracle_button_labels_the_approved_cases_in_demo_mode(run_page, oracle_project) -> None:
    case_id = _approve_one(oracle_project)
    at = run_page("labels", oracle_project.folder)
    oracle = [b for b in at.button if b.label.startswith("Label 1 case(s) with the oracle")]
    assert len(oracle) == 1
    oracle[0].click().run()
    assert not at.exception
    current = labels.current_labels(oracle_project)
    assert list(current) == [case_id] and current[case_id].source == "oracle"
    assert rounds.current_round(oracle_project).state is RoundState.LABELLED


def test_expert_project_has_no_oracle_button(run_page, expert_project) -> None:
    _approve_one(expert_project)
    at = run_page("labels", expert_project.folder)
    assert not [b for b in at.button if "oracle" in b.label]


def test_picks_zip_and_bulk_upload_store_the_good_files_and_report_the_effort(
    run_page, expert_project, monkeypatch
) -> None:
    import io
    import zipfile

    from assft_core.session import annotation

    case_id = _approve_one(expert_project)
    pre = np.zeros((8, 8, 8), np.uint8)
    pre[2:6, 2:6, 2:6] = 1
    monkeypatch.setattr(annotation, "model_predictor", lambda device="auto": lambda p, f: (pre, "f0"))
    at = run_page("labels", expert_project.folder)
    at.button(key="export-picks").click().run()
    assert not at.exception and not at.error
    [download] = [d for d in at.get("download_button") if d.key == "download-picks"]
    assert download.proto.label == "Download the picks (zip)"
    names = zipfile.ZipFile(io.BytesIO(annotation.export_picks_zip(expert_project))).namelist()
    assert f"preannotations/{case_id}.nii.gz" in names

    final = pre.copy()
    final[2, 2, 2] = 0
    final[7, 7, 0] = 1
    at.file_uploader(key="bulk-labels").set_value([
        (f"{case_id}.nii.gz", _nifti_bytes(final), "application/gzip"),
        ("other.nii.gz", _nifti_bytes(final), "application/gzip"),
    ])
    at.run()
    at.button(key="import-labels").click().run()
    assert not at.exception
    (other,) = [e.value for e in at.error if "other.nii.gz was not stored" in e.value]
    assert "uploads-" not in other and "tmp" not in other  # the user's file name, not the temporary copy
    assert any(f"{case_id} v1: 2 voxel(s), 2/8 slice(s) changed" in s.value for s in at.success)
    assert labels.current_labels(expert_project)[case_id].source == "expert"
    assert _files_under(expert_project.artifact_path("tmp")) == []
    assert rounds.current_round(expert_project).state is RoundState.LABELLED


def test_each_approved_pick_offers_its_image_and_then_its_starting_label(run_page, expert_project, monkeypatch) -> None:
    from assft_core.session import annotation

    case_id = _approve_one(expert_project)
    pre = np.zeros((8, 8, 8), np.uint8)
    pre[2:6, 2:6, 2:6] = 1
    monkeypatch.setattr(annotation, "model_predictor", lambda device="auto": lambda p, f: (pre, "f0"))
    at = run_page("labels", expert_project.folder)
    keys = {d.key for d in at.get("download_button")}
    assert f"image-{case_id}-0" in keys and f"pre-{case_id}" not in keys
    assert any("press **Prepare the picks**" in c.value for c in at.caption)
    at.button(key="export-picks").click().run()
    assert not at.exception
    keys = {d.key for d in at.get("download_button")}
    assert {f"image-{case_id}-0", f"pre-{case_id}", "download-picks"} <= keys
    (files,) = annotation.pick_files(expert_project)
    assert files.preannotation is not None and files.model == "f0"
    assert nib.load(str(files.preannotation)).shape == (8, 8, 8)  # the image's own grid
