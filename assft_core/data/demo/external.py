"""Optional external check case: the ITK examples' real single-subject head T1 (Apache-2.0).

Never part of the demo corpus: its labels are automatic (k-means) and noisy, so it is an
external sanity check of a model trained on the demo, not ground truth. Tissue rule (DATA.md):
inside the `KmeansTest_T1RawSkullStrip` brain mask (non-zero), the classes of
`KmeansTest_T1KmeansPrelimSegmentation` are ordered by their mean T1 intensity: the darkest is
CSF (1), the brightest white matter (3), any in between grey matter (2); outside the mask, 0.
(`RawSkullStrip` is only a mask: its value 6 covers the whole parenchyma, not a tissue class.)
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from assft_core.data.demo.atomic import atomic_directory
from assft_core.errors import DataError

ITK_DATA_DIR = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")
ITK_T1 = "KmeansTest_T1UCharRaw.nii.gz"
ITK_KMEANS = "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"
ITK_MASK = "KmeansTest_T1RawSkullStrip.nii.gz"
CASE_ID = "itk_t1"

ITK_NOTICE = """\
itk_t1 is derived from KmeansTest_T1UCharRaw.nii.gz, KmeansTest_T1KmeansPrelimSegmentation.nii.gz and
KmeansTest_T1RawSkullStrip.nii.gz of the Insight Toolkit examples (Debian insighttoolkit5-examples).
Copyright Insight Software Consortium, licensed under the Apache License, Version 2.0
(http://www.apache.org/licenses/LICENSE-2.0). Labels: automatic k-means tissue classes ordered by
mean T1 (1 CSF, 2 grey matter, 3 white matter) inside the skull-strip mask; noisy, not ground truth.
"""


def itk_tissue_labels(t1: np.ndarray, kmeans: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The DATA.md tissue rule (module docstring).

    Args:
        t1: (X, Y, Z) T1 intensities.
        kmeans: (X, Y, Z) integer k-means classes (arbitrary values).
        mask: (X, Y, Z) brain mask, non-zero inside.

    Returns:
        (X, Y, Z) uint8: 0 outside the mask, 1 CSF, 2 GM, 3 WM.

    Raises:
        DataError: fewer than 3 k-means classes inside the mask.
    """
    inside = mask != 0
    classes = np.unique(kmeans[inside])
    if classes.size < 3:
        raise DataError(
            f"{ITK_KMEANS}: only {classes.size} k-means class(es) inside the brain mask; need at least 3 "
            "(CSF, grey and white matter). Check that the file is the ITK KmeansPrelimSegmentation."
        )
    by_brightness = classes[np.argsort([t1[inside & (kmeans == c)].mean() for c in classes], kind="stable")]
    label = np.zeros(t1.shape, dtype=np.uint8)
    for rank, c in enumerate(by_brightness):
        tissue = 1 if rank == 0 else 3 if rank == len(by_brightness) - 1 else 2
        label[inside & (kmeans == c)] = tissue
    return label


def build_itk_external_case(out_dir: Path, *, data_dir: Path = ITK_DATA_DIR) -> Path:
    """Write the ITK T1 and its derived tissue labels as `out_dir/imagesTs/itk_t1_0000.nii.gz` and
    `out_dir/labelsTs/itk_t1.nii.gz` (the T1's own grid and affine, 2 x 2 x 3 mm), with NOTICE.txt.

    Args:
        out_dir: a new or empty folder (never overwritten; written atomically).
        data_dir: folder holding the three ITK example files.

    Returns:
        `out_dir`.

    Raises:
        DataError: a file is missing (with the package to install), the three grids differ, or
            `out_dir` is not empty.
    """
    out_dir = Path(out_dir)
    paths = [data_dir / name for name in (ITK_T1, ITK_KMEANS, ITK_MASK)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(
            f"ITK example data not found: {', '.join(map(str, missing))}. It is optional; install it with "
            "`apt-get install insighttoolkit5-examples` (Debian/Ubuntu) or pass the folder holding the files."
        )
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir}: exists and is not an empty folder; give a new folder for the ITK case.")
    images = [nib.load(p) for p in paths]
    for p, img in zip(paths[1:], images[1:]):
        if img.shape != images[0].shape or not np.allclose(img.affine, images[0].affine, atol=1e-3):
            raise DataError(
                f"{p}: grid {img.shape} differs from {paths[0].name} {images[0].shape}; use the matching ITK files."
            )
    t1, kmeans, mask = (np.asanyarray(img.dataobj) for img in images)
    label = itk_tissue_labels(t1.astype(np.float32), kmeans, mask)
    with atomic_directory(out_dir) as tmp:
        (tmp / "imagesTs").mkdir()
        (tmp / "labelsTs").mkdir()
        nib.save(nib.Nifti1Image(t1, images[0].affine, images[0].header), tmp / "imagesTs" / f"{CASE_ID}_0000.nii.gz")
        lab_img = nib.Nifti1Image(label, images[0].affine, images[0].header)
        lab_img.set_data_dtype(np.uint8)
        nib.save(lab_img, tmp / "labelsTs" / f"{CASE_ID}.nii.gz")
        (tmp / "NOTICE.txt").write_text(ITK_NOTICE)
    return out_dir
