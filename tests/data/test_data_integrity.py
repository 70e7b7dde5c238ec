"""Every integrity rule, each with a bad file made here; no check ever raises."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_factories import SHAPE, label, scan, write_nifti
from assft_core.data.integrity import check_dataset, check_image, check_pair
from assft_core.data.records import CaseRecord, DatasetManifest, Severity

CLASSES = {0: "background", 1: "a", 2: "b"}


def _only(report, severity: Severity, needle: str, file: Path) -> None:
    """The report holds exactly one problem of that severity, about `file`, saying `needle`."""
    found = [p for p in report.problems if p.severity is severity]
    assert len(found) == 1, [str(p) for p in report.problems]
    assert needle in found[0].message and found[0].file == str(file), str(found[0])
    assert found[0].fix


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_nifti(tmp_path / "case.nii.gz", scan())


def test_clean_pair_has_no_problem(tmp_path: Path, image: Path) -> None:
    lab = write_nifti(tmp_path / "case_seg.nii.gz", label())
    report = check_pair([image], lab, CLASSES)
    assert report.problems == [] and report.ok and report.case_id == "case"


def test_shape_mismatch(tmp_path: Path, image: Path) -> None:
    lab = write_nifti(tmp_path / "l.nii.gz", label((12, 10, 9)))
    _only(check_pair([image], lab, CLASSES), Severity.ERROR, "shape", lab)


@pytest.mark.parametrize(
    ("affine_change", "needle"),
    [
        (lambda a: a @ np.diag([1.0, 1.0, 1.2, 1.0]), "spacing"),
        (lambda a: a + np.pad(np.array([[0.0], [0.5], [0.0]]), ((0, 1), (3, 0))), "origin"),
        (lambda a: np.diag([-1.0, 1.0, 1.0, 1.0]) @ a, "direction"),
    ],
)
def test_geometry_mismatch(tmp_path: Path, image: Path, affine_change, needle: str) -> None:
    lab = write_nifti(tmp_path / "l.nii.gz", label(), affine_change(np.eye(4)))
    report = check_pair([image], lab, CLASSES)
    assert any(needle in p.message for p in report.errors), [str(p) for p in report.problems]
    assert all(p.file == str(lab) for p in report.problems)


def test_geometry_within_tolerance_passes(tmp_path: Path, image: Path) -> None:
    aff = np.eye(4)
    aff[0, 3] = 1e-5  # float noise of an export tool
    lab = write_nifti(tmp_path / "l.nii.gz", label(), aff)
    assert check_pair([image], lab, CLASSES).problems == []


def test_values_outside_declared_classes(tmp_path: Path, image: Path) -> None:
    bad = label()
    bad[0, 0, 0] = 3
    lab = write_nifti(tmp_path / "l.nii.gz", bad)
    _only(check_pair([image], lab, CLASSES), Severity.ERROR, "[3]", lab)


def test_non_consecutive_values_without_declaration(tmp_path: Path, image: Path) -> None:
    bad = label()
    bad[bad == 1] = 5  # values {0, 2, 5}
    lab = write_nifti(tmp_path / "l.nii.gz", bad)
    _only(check_pair([image], lab, None), Severity.ERROR, "not consecutive", lab)
    assert "[1, 3, 4]" in check_pair([image], lab, None).errors[0].message


def test_binary_mask_stored_as_0_255(tmp_path: Path, image: Path) -> None:
    lab = write_nifti(tmp_path / "l.nii.gz", (label() > 0).astype(np.uint8) * 255)
    _only(check_pair([image], lab, {0: "bg", 1: "fg"}), Severity.ERROR, "{0, 255}", lab)


def test_label_that_is_an_intensity_image(tmp_path: Path, image: Path) -> None:
    floats = write_nifti(tmp_path / "f.nii.gz", scan())
    _only(check_pair([image], floats, CLASSES), Severity.ERROR, "intensity image", floats)
    ints = write_nifti(tmp_path / "i.nii.gz", np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(np.int16) % 200)
    _only(check_pair([image], ints, CLASSES), Severity.ERROR, "intensity image", ints)


def test_4d_image_needs_declared_channels(tmp_path: Path) -> None:
    four = write_nifti(tmp_path / "mc.nii.gz", np.stack([scan(), scan(seed=3)], -1))
    _only(check_image([four]), Severity.ERROR, "4D", four)
    assert check_image([four], expected_channels=2).problems == []
    _only(check_image([four], expected_channels=3), Severity.ERROR, "2 channel(s), 3 declared", four)


def test_5d_file_is_an_error(tmp_path: Path) -> None:
    five = write_nifti(tmp_path / "v.nii.gz", np.zeros((*SHAPE, 2, 3), np.float32))
    _only(check_image([five], expected_channels=2), Severity.ERROR, "5D", five)


def test_trailing_singleton_is_a_warning(tmp_path: Path, image: Path) -> None:
    lab = write_nifti(tmp_path / "l.nii.gz", label()[..., None])
    report = check_pair([image], lab, CLASSES)
    assert report.ok
    _only(report, Severity.WARNING, "singleton", lab)


def test_nan_and_inf_voxels(tmp_path: Path) -> None:
    img = scan()
    img[1, 1, 1], img[2, 2, 2] = np.nan, np.inf
    p = write_nifti(tmp_path / "n.nii.gz", img)
    _only(check_image([p]), Severity.ERROR, "2 NaN/Inf", p)


def test_empty_label_is_a_warning(tmp_path: Path, image: Path) -> None:
    lab = write_nifti(tmp_path / "l.nii.gz", np.zeros(SHAPE, np.uint8))
    report = check_pair([image], lab, CLASSES)
    assert report.ok
    _only(report, Severity.WARNING, "empty", lab)


def test_truncated_empty_and_non_nifti_files(tmp_path: Path) -> None:
    good = write_nifti(tmp_path / "g.nii.gz", scan((32, 32, 32)))
    truncated = tmp_path / "t.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    empty = tmp_path / "e.nii.gz"
    empty.write_bytes(b"")
    text = tmp_path / "x.nii.gz"
    text.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    png = tmp_path / "slice.png"
    png.write_bytes(b"\x89PNG\r\n")
    for path, needle in [(truncated, "truncated"), (empty, "empty"), (text, "cannot be read"), (png, "not a NIfTI")]:
        _only(check_image([path]), Severity.ERROR, needle, path)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "gone.nii.gz"
    _only(check_image([missing]), Severity.ERROR, "not found", missing)


def test_huge_header_refused_before_allocation(tmp_path: Path) -> None:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8192, 8192, 8192))  # 2 TiB as float32: would crash if allocated
    hdr.set_data_dtype(np.float32)
    p = tmp_path / "huge.nii"
    p.write_bytes(hdr.binaryblock + b"\0" * 4)
    _only(check_image([p]), Severity.ERROR, "above the limit", p)


def test_every_problem_is_collected(tmp_path: Path) -> None:
    img = scan()
    img[0, 0, 0] = np.nan
    image = write_nifti(tmp_path / "i.nii.gz", img)
    bad = label()
    bad[0, 0, 0] = 9
    lab = write_nifti(tmp_path / "l.nii.gz", bad, np.diag([1.0, 1.0, 2.0, 1.0]))
    messages = " | ".join(p.message for p in check_pair([image], lab, CLASSES).errors)
    for needle in ("NaN", "[9]", "spacing"):
        assert needle in messages, messages


def test_check_dataset_uses_manifest_classes_and_channels(tmp_path: Path) -> None:
    a = write_nifti(tmp_path / "a_0000.nii.gz", scan())
    b = write_nifti(tmp_path / "a_0001.nii.gz", scan(seed=4))
    lab = write_nifti(tmp_path / "a.nii.gz", label())
    c = write_nifti(tmp_path / "c_0000.nii.gz", scan())
    manifest = DatasetManifest(
        name="t", root=tmp_path, schema="nnunetv2", classes={0: "bg", 1: "x"}, channel_names=["T1", "T2"],
        modality="MRI", cases=[CaseRecord("a", (a, b), lab), CaseRecord("c", (c,), None)],
    )
    reports = check_dataset(manifest)
    assert [r.case_id for r in reports] == ["a", "c"]
    assert "[2]" in reports[0].errors[0].message  # class 2 not declared
    assert "1 channel(s), 2 declared" in reports[1].errors[0].message


def _claiming(path: Path, shape: tuple[int, ...], dtype: type, affine: np.ndarray | None = None) -> Path:
    """A .nii.gz whose header claims `shape` of `dtype`, holding only a few bytes of voxel data
    (a decompression-amplification stand-in: reading the voxels would mean a large allocation)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(np.eye(4) if affine is None else affine, code=1)
    hdr.set_sform(np.eye(4) if affine is None else affine, code=1)
    hdr["vox_offset"] = 352
    with gzip.open(path, "wb") as fh:
        fh.write(hdr.binaryblock + b"\0" * 4 + b"\0" * 1024)
    return path


def test_a_label_whose_header_does_not_fit_is_refused_before_its_voxels_are_read(tmp_path, image, monkeypatch) -> None:
    """Issue 20, item 3: header shape, affine and dtype are compared with the image first."""
    from assft_core.data import integrity

    read: list[str] = []
    real = integrity.read_voxels
    monkeypatch.setattr(integrity, "read_voxels", lambda img, path: read.append(Path(path).name) or real(img, path))
    for name, shape, dtype, affine, needle in (
        ("big.nii.gz", (200, 200, 200), np.float64, None, "label shape (200, 200, 200) differs"),
        ("tall.nii.gz", (SHAPE[0], SHAPE[1], 4000), np.uint8, np.diag([1.0, 1.0, 3.0, 1.0]), "label shape"),
        ("complex.nii.gz", SHAPE, np.complex64, None, "complex64"),
    ):
        bad = _claiming(tmp_path / name, shape, dtype, affine)
        read.clear()
        report = check_pair([image], bad, CLASSES)
        errors = [p for p in report.errors if p.file == str(bad)]
        assert errors and needle in errors[0].message, [str(p) for p in report.problems]
        assert read == ["case.nii.gz"], read  # the image only: the label's voxels were never read


def test_a_label_that_decompresses_beyond_its_header_is_refused(tmp_path, image) -> None:
    good = write_nifti(tmp_path / "lab.nii.gz", label())
    bomb = tmp_path / "bomb.nii.gz"
    # A valid label followed by a second gzip member of 32 MiB of zeros (gzip readers concatenate them).
    bomb.write_bytes(good.read_bytes() + gzip.compress(b"\0" * (32 << 20), compresslevel=1))
    assert bomb.stat().st_size < 200_000
    report = check_pair([image], bomb, CLASSES)
    _only(report, Severity.ERROR, "decompresses to more than", bomb)
    assert check_pair([image], good, CLASSES).ok
