"""Slice viewer: overlays line up with the image, orientation and aspect follow the affine."""

from __future__ import annotations

import numpy as np
import pytest

from assft_core.viz import slices
from assft_core.viz.slices import n_slices, slice_figure, to_ras

SHAPE = (20, 24, 28)  # RAS: x (L→R), y (P→A), z (I→S)
SPACING = (1.0, 2.0, 3.0)
CUBE = (slice(3, 7), slice(10, 15), slice(5, 9))  # i, j, k ranges of the known cube


def _case() -> dict[str, np.ndarray]:
    cube = np.zeros(SHAPE, dtype=bool)
    cube[CUBE] = True
    image = np.where(cube, 100.0, 0.0) + np.linspace(0, 1, SHAPE[2])[None, None, :]  # bright cube, dim ramp
    entropy = np.where(cube, 0.75, 0.0).astype(np.float16)
    return {"image": image, "label": cube.astype(np.uint8) * 2, "cube": cube, "entropy": entropy}


def _trace(fig, name: str):
    return next(t for t in fig.data if t.name == name)


# For each plane: (slice index inside the cube, expected (x mm, y mm) of the cube's pixel centres).
EXPECTED = {
    "axial": (6, np.arange(3, 7) * 1.0, np.arange(10, 15) * 2.0),
    "coronal": (12, np.arange(3, 7) * 1.0, np.arange(5, 9) * 3.0),
    "sagittal": (4, np.arange(10, 15) * 2.0, np.arange(5, 9) * 3.0),
}


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_overlays_line_up_with_the_cube(axis: str) -> None:
    case = _case()
    index, cube_x, cube_y = EXPECTED[axis]
    fig = slice_figure(
        case["image"],
        axis=axis,
        index=index,
        affine=np.diag([*SPACING, 1.0]),
        label=case["label"],
        prediction=case["label"],
        entropy=case["entropy"],
        roi=case["cube"],
    )
    image = _trace(fig, "image")
    x, y = np.asarray(image.x), np.asarray(image.y)
    bright = np.asarray(image.z) > 200  # the cube is the only bright part of the image
    rows, cols = np.nonzero(bright)
    np.testing.assert_array_equal(np.unique(x[cols]), cube_x)  # independent: index × spacing
    np.testing.assert_array_equal(np.unique(y[rows]), cube_y)
    for name in ("label", "prediction", "entropy"):
        overlay = _trace(fig, name)
        np.testing.assert_array_equal(overlay.x, x)
        np.testing.assert_array_equal(overlay.y, y)
        np.testing.assert_array_equal(np.asarray(overlay.z) > 0, bright, err_msg=name)
    assert np.asarray(_trace(fig, "entropy").z)[bright] == pytest.approx(0.75)
    roi = _trace(fig, "ROI")
    np.testing.assert_array_equal(np.asarray(roi.z) > 0, bright)
    assert roi.contours.start == 0.5 == roi.contours.end  # the outline is the mask's edge
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1  # mm aspect


def test_outside_slice_has_empty_overlays() -> None:
    case = _case()
    fig = slice_figure(case["image"], axis="axial", index=0, label=case["label"], roi=case["cube"])
    assert not np.asarray(_trace(fig, "label").z).any()
    assert not np.asarray(_trace(fig, "ROI").z).any()


def test_non_ras_affine_is_reoriented() -> None:
    """An LPS-stored copy (axes 0 and 1 flipped) must display exactly like the RAS original."""
    case = _case()
    lps_image = case["image"][::-1, ::-1, :]
    lps_label = case["label"][::-1, ::-1, :]
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    ras, spacing = to_ras(lps_image, affine)
    np.testing.assert_array_equal(ras, case["image"])
    assert spacing == SPACING
    reference = slice_figure(case["image"], axis="axial", index=6, spacing_mm=SPACING, label=case["label"])
    flipped = slice_figure(lps_image, axis="axial", index=6, affine=affine, label=lps_label)
    assert [t.name for t in reference.data] == [t.name for t in flipped.data]
    for a, b in zip(reference.data[:2], flipped.data[:2]):  # image and label heatmaps
        np.testing.assert_array_equal(a.z, b.z)
        np.testing.assert_array_equal(a.x, b.x)


def test_axes_permuted_affine_spacing_and_slice_count() -> None:
    """Stored as (z, y, x): spacing and slice counts follow the RAS axes, not the array axes."""
    case = _case()
    stored = np.transpose(case["image"], (2, 1, 0))
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = SPACING[0], SPACING[1], SPACING[2], 1.0
    ras, spacing = to_ras(stored, affine)
    np.testing.assert_array_equal(ras, case["image"])
    assert spacing == SPACING
    assert n_slices(stored.shape, "axial", affine) == SHAPE[2]
    assert n_slices(stored.shape, "sagittal", affine) == SHAPE[0]
    assert n_slices(SHAPE, "coronal") == SHAPE[1]


def test_label_colours_fixed_per_class_with_legend() -> None:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[CUBE] = 2
    label[0, 0, 6] = 255  # ignore voxel of a pseudo-label
    fig = slice_figure(_case()["image"], axis="axial", index=6, label=label, class_names={2: "GM"})
    heatmap = _trace(fig, "label")
    assert set(np.unique(np.asarray(heatmap.z))) == {0, 2, 255}
    stops = {round(v * (heatmap.zmax + 0.5)): c for v, c in heatmap.colorscale}  # left edge of each value
    assert stops[2] == slices.CLASS_COLOURS[1] and stops[255] == slices.IGNORE_COLOUR
    assert stops[0].endswith(",0)")  # background transparent
    assert {t.name for t in fig.data if t.name.startswith("label:")} == {"label: GM", "label: ignore"}


def test_left_right_convention() -> None:
    image = _case()["image"]
    radio = slice_figure(image, axis="axial", index=6)
    neuro = slice_figure(image, axis="axial", index=6, convention="neurological")
    sag = slice_figure(image, axis="sagittal", index=4)
    assert radio.layout.xaxis.autorange == "reversed" and radio.layout.xaxis.title.text.startswith("R")
    assert neuro.layout.xaxis.autorange is True and neuro.layout.xaxis.title.text.startswith("L")
    assert sag.layout.xaxis.autorange == "reversed" and sag.layout.xaxis.title.text.startswith("A")
    assert radio.layout.yaxis.title.text.endswith("A")  # anterior up


def test_big_slices_are_decimated_and_still_aligned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slices, "MAX_DISPLAY_PIXELS", 8)  # forces stride 3 on 20 × 24
    case = _case()
    fig = slice_figure(case["image"], axis="axial", index=6, spacing_mm=SPACING, label=case["label"])
    image, label = _trace(fig, "image"), _trace(fig, "label")
    assert np.asarray(image.z).shape == (8, 7) and np.asarray(image.z).dtype == np.uint8
    np.testing.assert_array_equal(image.x, np.arange(0, 20, 3) * SPACING[0])
    np.testing.assert_array_equal(image.y, np.arange(0, 24, 3) * SPACING[1])
    np.testing.assert_array_equal(np.asarray(label.z) > 0, np.asarray(image.z) > 200)
    # Kept voxels: i in {0, 3, ..., 18}, j in {0, 3, ..., 21}; the cube (i 3..6, j 10..14) keeps
    # i in {3, 6} and j = 12, i.e. x = 3, 6 mm and y = 24 mm.
    rows, cols = np.nonzero(np.asarray(label.z))
    np.testing.assert_array_equal(np.asarray(label.x)[cols], [3.0, 6.0])
    np.testing.assert_array_equal(np.asarray(label.y)[rows], [24.0, 24.0])


def test_bad_input_errors() -> None:
    case = _case()
    with pytest.raises(ValueError, match=r"axial index 28 outside \[0, 27\]"):
        slice_figure(case["image"], axis="axial", index=28)
    with pytest.raises(ValueError, match="label has shape"):
        slice_figure(case["image"], axis="axial", index=1, label=case["label"][:-1])
    with pytest.raises(ValueError, match="either affine or spacing_mm"):
        slice_figure(case["image"], axis="axial", index=1, affine=np.eye(4), spacing_mm=(1, 1, 1))
    with pytest.raises(ValueError, match="image\\[c\\]"):
        slice_figure(case["image"][None], axis="axial", index=1)
    with pytest.raises(ValueError):
        slice_figure(case["image"], axis="oblique", index=1)
    with pytest.raises(ValueError, match=r"label values must be class indices in \[0, 255\], got 0..300"):
        slice_figure(case["image"], axis="axial", index=6, label=case["label"].astype(np.int64) * 150)
    with pytest.raises(ValueError, match="opacity"):
        slice_figure(case["image"], axis="axial", index=6, opacity=1.5)
