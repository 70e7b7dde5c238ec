"""Dataset import: folder pairs, MSD, nnU-Net v2 raw, cases.csv, malformed metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_factories import label, scan, write_nifti
from assft_core.data.importers import import_dataset, infer_modality, sanitise_case_id
from assft_core.data.records import Split
from assft_core.errors import DataError


def test_folder_of_seg_pairs_with_unlabelled_images(tmp_path: Path) -> None:
    write_nifti(tmp_path / "p1.nii.gz", scan())
    write_nifti(tmp_path / "p1_seg.nii.gz", label())
    write_nifti(tmp_path / "p 2.nii.gz", scan())  # unlabelled, id needs sanitising
    m = import_dataset(tmp_path)
    assert m.schema == "folder" and m.modality == "MRI"
    by_id = {c.case_id: c for c in m.cases}
    assert set(by_id) == {"p1", "p_2"}
    assert by_id["p1"].label_path == tmp_path / "p1_seg.nii.gz"
    assert by_id["p_2"].label_path is None
    assert all(c.site == "unknown" and c.split is Split.POOL for c in m.cases)


def test_folder_images_labels_and_ct_detection(tmp_path: Path) -> None:
    ct = scan() - 1000.0  # air at -1000 HU
    write_nifti(tmp_path / "images" / "a.nii.gz", ct)
    write_nifti(tmp_path / "images" / "b.nii.gz", ct)
    write_nifti(tmp_path / "labels" / "a.nii.gz", label())
    m = import_dataset(tmp_path)
    assert m.modality == "CT"
    assert [(c.case_id, c.label_path is not None) for c in m.cases] == [("a", True), ("b", False)]


def test_folder_orphan_label_is_an_error(tmp_path: Path) -> None:
    write_nifti(tmp_path / "images" / "a.nii.gz", scan())
    write_nifti(tmp_path / "labels" / "z.nii.gz", label())
    with pytest.raises(DataError, match="no image of the same name"):
        import_dataset(tmp_path)


def _msd(root: Path) -> dict:
    mc = np.stack([scan(), scan(seed=1)], -1)
    write_nifti(root / "imagesTr" / "pros_00.nii.gz", mc)
    write_nifti(root / "labelsTr" / "pros_00.nii.gz", label())
    write_nifti(root / "imagesTs" / "pros_01.nii.gz", mc)
    meta = {
        "name": "Prostate",
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "training": [{"image": "./imagesTr/pros_00.nii.gz", "label": "./labelsTr/pros_00.nii.gz"}],
        "test": ["./imagesTs/pros_01.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return meta


def test_msd_dataset_json(tmp_path: Path) -> None:
    _msd(tmp_path)
    m = import_dataset(tmp_path)
    assert (m.schema, m.name, m.modality) == ("msd", "Prostate", "MRI")
    assert m.classes == {0: "background", 1: "PZ", 2: "TZ"}
    assert m.channel_names == ["T2", "ADC"]
    assert [(c.case_id, c.label_path is not None) for c in m.cases] == [("pros_00", True), ("pros_01", False)]


def test_msd_missing_file_and_bad_labels(tmp_path: Path) -> None:
    meta = _msd(tmp_path)
    meta["training"].append({"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="gone.nii.gz"):
        import_dataset(tmp_path)
    meta = _msd(tmp_path)
    meta["labels"] = {"0": "background", "2": "TZ"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="consecutive"):
        import_dataset(tmp_path)


def _nnunet(root: Path) -> None:
    for cid in ("liver_001", "liver_002"):
        write_nifti(root / "imagesTr" / f"{cid}_0000.nii.gz", scan() - 1000)
        write_nifti(root / "imagesTr" / f"{cid}_0001.nii.gz", scan(seed=2) - 1000)
    write_nifti(root / "labelsTr" / "liver_001.nii.gz", label())
    write_nifti(root / "imagesTs" / "liver_100_0000.nii.gz", scan())
    write_nifti(root / "imagesTs" / "liver_100_0001.nii.gz", scan())
    meta = {
        "channel_names": {"0": "CT", "1": "CT_late"},
        "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
        "name": "Dataset001_Liver",
    }
    (root / "dataset.json").write_text(json.dumps(meta))


def test_nnunet_v2_raw(tmp_path: Path) -> None:
    _nnunet(tmp_path)
    m = import_dataset(tmp_path)
    assert (m.schema, m.modality, m.channel_names) == ("nnunetv2", "CT", ["CT", "CT_late"])
    assert m.classes == {0: "background", 1: "liver", 2: "tumour"}
    got = {c.case_id: c for c in m.cases}
    assert set(got) == {"liver_001", "liver_002", "liver_100"}
    assert [p.name for p in got["liver_001"].image_paths] == ["liver_001_0000.nii.gz", "liver_001_0001.nii.gz"]
    assert got["liver_001"].label_path is not None and got["liver_002"].label_path is None
    assert got["liver_100"].label_path is None


def test_nnunet_v2_missing_channel(tmp_path: Path) -> None:
    _nnunet(tmp_path)
    (tmp_path / "imagesTr" / "liver_002_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"liver_002 has channels \[0\]"):
        import_dataset(tmp_path)


def test_cases_csv_sets_site_and_split(tmp_path: Path) -> None:
    _nnunet(tmp_path)
    (tmp_path / "cases.csv").write_text("case_id,site,split\nliver_001,A,pool\nliver_100,B,test\n")
    got = {c.case_id: c for c in import_dataset(tmp_path).cases}
    assert (got["liver_001"].site, got["liver_001"].split) == ("A", Split.POOL)
    assert (got["liver_100"].site, got["liver_100"].split) == ("B", Split.TEST)
    assert (got["liver_002"].site, got["liver_002"].split) == ("unknown", Split.POOL)


@pytest.mark.parametrize(
    ("csv_text", "needle"),
    [
        ("case_id,site,split\nliver_001,A,training\n", "split 'training'"),
        ("case_id,site,split\nnobody,A,pool\n", "'nobody' is not a case"),
        ("id,site\nliver_001,A\n", "no 'case_id' column"),
        ("case_id,site\nliver_001,A\nliver_001,B\n", "appears twice"),
    ],
)
def test_malformed_cases_csv(tmp_path: Path, csv_text: str, needle: str) -> None:
    _nnunet(tmp_path)
    (tmp_path / "cases.csv").write_text(csv_text)
    with pytest.raises(DataError, match="cases.csv") as info:
        import_dataset(tmp_path)
    assert needle in str(info.value)


def test_malformed_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: not valid JSON"):
        import_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(DataError, match="neither an nnU-Net v2"):
        import_dataset(tmp_path)


def test_sanitise_and_modality_inference() -> None:
    assert sanitise_case_id("pt 01/ä") == "pt_01__"
    assert infer_modality(["T2", "ADC"]) == "MRI"
    assert infer_modality(["CT"]) == "CT"
    assert infer_modality(["t1_gd"]) == "MRI"
    with pytest.raises(DataError, match="cannot tell CT from MRI"):
        infer_modality(["PET"])


def test_msd_entries_outside_the_dataset_folder_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    meta = _msd(root)
    write_nifti(tmp_path / "elsewhere.nii.gz", np.stack([scan(), scan(seed=1)], -1))
    for outside in ("../elsewhere.nii.gz", str(tmp_path / "elsewhere.nii.gz")):
        meta["test"] = [outside]
        (root / "dataset.json").write_text(json.dumps(meta))
        with pytest.raises(DataError, match=r"dataset\.json.*outside the dataset folder"):
            import_dataset(root)
