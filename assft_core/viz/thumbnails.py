"""A small picture of a case for lists (the Query page's picks): the axial slice through the centre
of its ASD ROI, with the prediction tinted and the ROI outlined (ASSFT, METHOD.md §2).

Same orientation as `assft_core.viz.slices` (RAS first; axial: anterior up, radiological: the
patient's left on the viewer's right). An RGB array, not a figure, so a list of picks draws fast.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from assft_core.viz.slices import WINDOW_PERCENTILES, to_ras


class CaseView(Protocol):
    """The arrays a thumbnail draws (`assft_core.session.views.CaseView` has them): viz reads
    arrays, never the store."""

    image: np.ndarray  # (C, X, Y, Z) on the scoring grid
    affine: np.ndarray  # (4, 4) voxel -> mm
    roi: np.ndarray | None
    prediction: np.ndarray | None
    label: np.ndarray | None

THUMBNAIL_PIXELS = 160  # longest side of the picture, in pixels
PREDICTION_RGB = (228, 26, 28)  # the first class colour of the slice viewer
ROI_RGB = (0, 229, 255)  # the slice viewer's ROI outline colour
TINT = 0.45  # opacity of the prediction tint


def roi_centre(view: CaseView) -> tuple[int, int, int]:
    """The voxel (RAS index order) at the centre of the case's ROI's bounding box.

    The ROI when the case has one, else the predicted foreground, else the label's foreground,
    else the middle of the volume.

    Returns:
        (x, y, z) indices into the RAS-reoriented volume.
    """
    for mask in (view.roi, view.prediction, view.label):
        if mask is not None and (np.asarray(mask) > 0).any():
            ras, _ = to_ras(np.asarray(mask) > 0, view.affine)
            found = np.argwhere(ras)
            lo, hi = found.min(axis=0), found.max(axis=0)
            return tuple(int(v) for v in (lo + hi) // 2)  # type: ignore[return-value]
    shape = to_ras(view.image[0], view.affine)[0].shape
    return tuple(int(s) // 2 for s in shape)  # type: ignore[return-value]


def _display(plane: np.ndarray) -> np.ndarray:
    """An axial RAS plane (x, y) as display rows and columns: anterior up, patient's left right."""
    return plane.T[::-1, ::-1]


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels (in the mask, with a 4-neighbour outside it)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def thumbnail(view: CaseView, pixels: int = THUMBNAIL_PIXELS, channel: int = 0) -> tuple[np.ndarray, int]:
    """The axial slice through `roi_centre` as an RGB picture, with the prediction and ROI drawn.

    Args:
        view: the case on the scoring grid (`load_case_view`).
        pixels: longest side of the picture (each voxel becomes a block of equal pixels).
        channel: the image channel shown.

    Returns:
        ((H, W, 3) uint8 picture, the axial slice index in RAS order, as the Viewer's slider takes it).
    """
    volume, _ = to_ras(np.asarray(view.image[channel]), view.affine)
    z = roi_centre(view)[2]
    lo, hi = np.percentile(volume, WINDOW_PERCENTILES)
    gray = np.clip((volume[:, :, z].astype(np.float32) - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0)
    rgb = np.repeat(_display(gray)[..., None] * 255.0, 3, axis=2)
    if view.prediction is not None:
        fg = _display(to_ras(np.asarray(view.prediction) > 0, view.affine)[0][:, :, z])
        rgb[fg] = (1 - TINT) * rgb[fg] + TINT * np.array(PREDICTION_RGB, dtype=np.float32)
    if view.roi is not None:
        roi = _display(to_ras(np.asarray(view.roi, dtype=bool), view.affine)[0][:, :, z])
        rgb[_outline(roi)] = ROI_RGB
    scale = max(1, math.floor(pixels / max(rgb.shape[:2])))
    picture = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    return np.round(picture).astype(np.uint8), z
