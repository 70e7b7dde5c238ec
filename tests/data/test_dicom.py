"""DICOM series in: geometry, rescale, refusals, and the dataset import into a project."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from assft_core.data.dicom import DicomSeriesError, read_series  # noqa: E402

SHAPE = (5, 4, 6)  # columns, rows, slices
SLOPE, INTERCEPT = 2.0, -1024.0


def _oblique_affine() -> np.ndarray:
    """A RAS affine with a rotation about two axes (proper), spacing (0.8, 0.9, 2.5) mm."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [-40.0, 12.5, 77.0]
    return affine


def _raw() -> np.ndarray:
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 7 % 1500).astype(np.int16)


def write_series(folder: Path, raw: np.ndarray, affine: np.ndarray, *, modality: str = "CT",
                 uid: str = "1.2.826.0.1.3680043.8.498.1", skip: tuple[int, ...] = (),
                 shift: dict[int, float] | None = None) -> Path:
    """Write `raw` (X = columns, Y = rows, Z = slices) as one DICOM file per slice, in shuffled
    order, with the geometry of the RAS `affine` (slices `skip`ped; slice k moved by `shift[k]` mm
    along its normal)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_cos, col_cos = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    normal = np.cross(row_cos, col_cos)
    for n, k in enumerate(np.random.default_rng(0).permutation(raw.shape[2])):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.SeriesInstanceUID = uid
        ds.StudyInstanceUID = uid + ".9"
        ds.Rows, ds.Columns = raw.shape[1], raw.shape[0]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.ImageOrientationPatient = [float(x) for x in (*row_cos, *col_cos)]
        position = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3] + normal * (shift or {}).get(int(k), 0.0)
        ds.ImagePositionPatient = [float(x) for x in position]
        ds.SliceThickness = float(spacing[2])
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(raw[:, :, k].T).astype("<i2").tobytes()
        ds.save_as(folder / f"IM{n:04d}", enforce_file_format=True)
    (folder / "notes.txt").write_text("not a DICOM file: skipped")
    return folder


def test_series_reads_as_its_nifti_twin(tmp_path: Path) -> None:
    raw, affine = _raw(), _oblique_affine()
    twin = tmp_path / "twin.nii.gz"
    nib.save(nib.Nifti1Image((raw.astype(np.float32) * SLOPE + INTERCEPT), affine), str(twin))
    volume = read_series(write_series(tmp_path / "series", raw, affine))
    expected = nib.load(twin)
    assert volume.array.shape == SHAPE and volume.array.dtype == np.float32
    assert np.array_equal(volume.array, np.asarray(expected.dataobj, dtype=np.float32))
    assert np.allclose(volume.affine, expected.affine, atol=1e-4)
    assert (volume.modality, volume.series_uid, volume.n_files) == ("CT", "1.2.826.0.1.3680043.8.498.1", SHAPE[2])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"skip": (3,)}, r"1 slice\(s\) missing, the first gap between positions"),
        ({"shift": {1: 0.6, 2: -0.4}}, "unevenly spaced"),
        ({"shift": {2: -2.5}}, "share position"),
        ({"modality": "US"}, "modality 'US' is not supported"),
    ],
    ids=["missing", "uneven", "duplicate", "modality"],
)
def test_bad_series_are_refused_with_the_reason(tmp_path: Path, kwargs: dict, match: str) -> None:
    folder = write_series(tmp_path / "bad", _raw(), _oblique_affine(), **kwargs)
    with pytest.raises(DicomSeriesError, match=match) as err:
        read_series(folder)
    assert "Fix:" in str(err.value)


def test_init_and_validate_take_a_folder_of_series(tmp_path: Path) -> None:
    from assft_core.cli import main
    from assft_core.session.project import create_project, list_cases

    raw, affine = _raw(), _oblique_affine()
    data = tmp_path / "dataset"
    write_series(data / "caseA", raw, affine, uid="1.2.3.4")
    write_series(data / "caseB", raw, affine, uid="1.2.3.5", skip=(2,))
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 1:3, 1:4] = 1
    nib.save(nib.Nifti1Image(label, affine), str(data / "caseA_seg.nii.gz"))
    before = sorted(p.relative_to(data) for p in data.rglob("*"))

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["validate", "--dataset", str(data)])
    assert code == 1, out.getvalue()
    assert "[caseB]" in out.getvalue() and "missing, the first gap between positions" in out.getvalue()
    assert "[caseA]" not in out.getvalue()  # clean: converted, label on its grid

    model = tmp_path / "model.json"
    model.write_text(json.dumps({"backbone": "unet"}))
    project = create_project(tmp_path / "proj", data, model)
    cases = {c.case_id: c for c in list_cases(project, usable_only=False)}
    assert cases["caseA"].usable and cases["caseA"].series_uid == "1.2.3.4"
    stored = cases["caseA"].image_paths[0]
    assert stored.is_relative_to(project.artifacts / "dicom")
    img = nib.load(stored)
    assert np.array_equal(np.asarray(img.dataobj, dtype=np.float32), raw * SLOPE + INTERCEPT)
    assert np.allclose(img.affine, affine, atol=1e-4)
    assert json.loads(stored.with_name("caseA.json").read_text())["series_instance_uid"] == "1.2.3.4"
    assert not cases["caseB"].usable and "missing" in cases["caseB"].problems[0].message
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # the dataset is only read

    from assft_core.session import labels

    assert labels.current_labels(project)["caseA"].source == "expert"  # the NIfTI label came in as v1
