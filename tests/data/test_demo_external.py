"""The optional ITK external case: the tissue rule by hand, on files the test makes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assft_core.data.demo.external import ITK_KMEANS, ITK_MASK, ITK_T1, build_itk_external_case, itk_tissue_labels
from assft_core.errors import DataError


def test_classes_ordered_by_mean_t1_inside_the_mask() -> None:
    t1 = np.array([10, 200, 90, 150, 20, 250], dtype=np.float32)[:, None, None]
    km = np.array([7, 2, 5, 5, 7, 2], dtype=np.int16)[:, None, None]  # 7 darkest, 5 middle, 2 brightest
    mask = np.array([6, 6, 6, 6, 0, 6], dtype=np.uint8)[:, None, None]
    assert itk_tissue_labels(t1, km, mask).ravel().tolist() == [1, 3, 2, 2, 0, 3]
    with pytest.raises(DataError, match="need at least 3"):
        itk_tissue_labels(t1, np.where(km == 5, 7, km), mask)


def test_build_from_files_and_missing_files(tmp_path: Path) -> None:
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    rng = np.random.default_rng(0)
    km = rng.integers(0, 3, (6, 5, 4)).astype(np.uint8)
    t1 = (km * 80 + 20).astype(np.uint8)  # class 0 darkest, 2 brightest
    mask = np.full(km.shape, 6, dtype=np.uint8)
    mask[0] = 0
    src = tmp_path / "itk"
    src.mkdir()
    for name, arr in ((ITK_T1, t1), (ITK_KMEANS, km), (ITK_MASK, mask)):
        nib.save(nib.Nifti1Image(arr, affine), src / name)
    out = build_itk_external_case(tmp_path / "ext", data_dir=src)
    label = np.asanyarray(nib.load(out / "labelsTs" / "itk_t1.nii.gz").dataobj)
    expected = np.where(mask > 0, km + 1, 0)
    assert np.array_equal(label, expected)
    assert np.allclose(nib.load(out / "imagesTs" / "itk_t1_0000.nii.gz").affine, affine)
    with pytest.raises(DataError, match="not an empty folder"):
        build_itk_external_case(out, data_dir=src)
    with pytest.raises(DataError, match="insighttoolkit5-examples"):
        build_itk_external_case(tmp_path / "none", data_dir=tmp_path / "absent")
