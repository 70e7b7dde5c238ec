"""NIfTI IO: channel-first arrays, spacing from the affine, header-first size check, safe writes."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_factories import label, scan, write_nifti
from assft_core.data.io import load_image, load_label, open_nifti, save_label
from assft_core.errors import DataError


def _anisotropic_affine() -> np.ndarray:
    aff = np.array([[0.0, 0, -3.0, 5], [0.8, 0, 0, -2], [0, 1.5, 0, 7], [0, 0, 0, 1]])
    return aff


def test_load_image_3d_is_channel_first_with_spacing(tmp_path: Path) -> None:
    img = scan()
    p = write_nifti(tmp_path / "a.nii.gz", img, _anisotropic_affine())
    vol = load_image([p])
    assert vol.array.shape == (1, *img.shape) and vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array[0], img, rtol=1e-6)
    assert vol.spacing_mm == pytest.approx((0.8, 1.5, 3.0))  # column norms, by hand
    np.testing.assert_allclose(vol.affine, _anisotropic_affine())


def test_load_image_channels_from_files_and_from_4d(tmp_path: Path) -> None:
    a, b = scan(seed=1), scan(seed=2)
    files = [write_nifti(tmp_path / "c_0000.nii.gz", a), write_nifti(tmp_path / "c_0001.nii.gz", b)]
    four_d = write_nifti(tmp_path / "c4.nii.gz", np.stack([a, b], axis=-1))
    from_files, from_4d = load_image(files), load_image([four_d])
    assert from_files.array.shape == (2, *a.shape)
    np.testing.assert_allclose(from_files.array, from_4d.array)
    np.testing.assert_allclose(from_4d.array[1], b, rtol=1e-6)


def test_trailing_singleton_is_squeezed_with_a_warning(tmp_path: Path) -> None:
    p = write_nifti(tmp_path / "s.nii.gz", label()[..., None])
    with pytest.warns(UserWarning, match="singleton"):
        vol = load_label(p)
    assert vol.array.shape == (1, *label().shape)


def test_huge_header_is_refused_before_reading(tmp_path: Path) -> None:
    # Header claims 4096^3 voxels; the file holds none of them.
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4096, 4096, 4096))
    hdr.set_data_dtype(np.float32)
    p = tmp_path / "huge.nii"
    with open(p, "wb") as fh:
        fh.write(hdr.binaryblock + b"\0" * 4)
    with pytest.raises(DataError, match="above the limit"):
        load_image([p])
    assert open_nifti(p, max_voxels=2**37).shape == (4096, 4096, 4096)  # header alone is fine


def test_size_limit_is_configurable_and_truncation_detected(tmp_path: Path) -> None:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((16, 16, 16))
    hdr.set_data_dtype(np.float32)
    p = tmp_path / "cut.nii"
    with open(p, "wb") as fh:
        fh.write(hdr.binaryblock + b"\0" * 4 + b"\1" * 100)  # 100 of 16384 data bytes
    with pytest.raises(DataError, match="above the limit of 1,000"):
        load_image([p], max_voxels=1000)
    with pytest.raises(DataError, match="truncated"):
        load_image([p])


def test_load_label_rejects_intensity_image_and_accepts_integral_floats(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="intensity image"):
        load_label(write_nifti(tmp_path / "img.nii.gz", scan()))
    vol = load_label(write_nifti(tmp_path / "f.nii.gz", label().astype(np.float32)))
    assert np.issubdtype(vol.array.dtype, np.integer)
    np.testing.assert_array_equal(vol.array[0], label())


def test_save_label_round_trip_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "pred" / "case.nii.gz"
    save_label(label(), _anisotropic_affine(), out)
    back = load_label(out)
    np.testing.assert_array_equal(back.array[0], label())
    np.testing.assert_allclose(back.affine, _anisotropic_affine(), atol=1e-5)
    before = out.read_bytes()
    with pytest.raises(DataError, match="already exists"):
        save_label(np.zeros_like(label()), np.eye(4), out)
    assert out.read_bytes() == before
    save_label(np.zeros_like(label()), np.eye(4), out, overwrite=True)
    assert load_label(out).array.max() == 0
    assert os.listdir(out.parent) == ["case.nii.gz"]  # no temp file left behind


def test_missing_and_non_nifti_files_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_image([tmp_path / "nope.nii.gz"])
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(DataError, match="not a NIfTI"):
        load_image([txt])
