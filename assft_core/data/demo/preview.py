"""Check picture of the demo corpus: label overlays and one slice per site (PIL, no matplotlib).

Source: ASSFT Studio DATA.md (the derived CSF must be checked on a picture).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# RGB per class (0 background is left uncoloured).
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {1: (0, 160, 255), 2: (255, 140, 0), 3: (80, 220, 80)}
_ALPHA = 0.45
_TILE_MM = 1.0  # every tile is drawn at this pixel size (mm), so thick slices look thick


@dataclass(frozen=True)
class PreviewVolume:
    """One volume to draw.

    Attributes:
        title: caption of its tiles.
        image: (X, Y, Z) intensities, RAS axis order.
        label: (X, Y, Z) classes, or None for an image-only tile.
        spacing_mm: (3,) voxel size in mm.
    """

    title: str
    image: np.ndarray
    label: np.ndarray | None
    spacing_mm: tuple[float, float, float]


def write_preview(path: Path, template: PreviewVolume, sites: Sequence[PreviewVolume]) -> Path:
    """Write a PNG montage: the template's labels on 5 axial and 5 coronal slices, then an axial and a
    coronal mid slice of each site's volume (image left, labels right).

    Args:
        path: the PNG to write (written to a temporary name, then renamed).
        template: the labelled template.
        sites: one example volume per site.

    Returns:
        `path`.
    """
    rows = [
        [_tile(template, axis=2, frac=f, overlay=True) for f in (0.3, 0.42, 0.5, 0.58, 0.7)],
        [_tile(template, axis=1, frac=f, overlay=True) for f in (0.3, 0.42, 0.5, 0.58, 0.7)],
    ]
    for axis in (2, 1):
        rows.append([_tile(v, axis=axis, frac=0.5, overlay=False) for v in sites])
        rows.append([_tile(v, axis=axis, frac=0.5, overlay=True) for v in sites])
    caption_h = 14
    tile_w = max(t.width for r in rows for t in r)
    tile_h = max(t.height for r in rows for t in r)
    ncol = max(len(r) for r in rows)
    canvas = Image.new("RGB", (ncol * tile_w, len(rows) * (tile_h + caption_h)), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    captions = (
        ["template axial"] * 5,
        ["template coronal"] * 5,
        [f"{v.title} axial" for v in sites],
        [f"{v.title} labels" for v in sites],
        [f"{v.title} coronal" for v in sites],
        [f"{v.title} labels" for v in sites],
    )
    for r, (row, caps) in enumerate(zip(rows, captions)):
        y = r * (tile_h + caption_h)
        for c, (tile, cap) in enumerate(zip(row, caps)):
            draw.text((c * tile_w + 2, y), cap, fill=(255, 255, 255))
            canvas.paste(tile, (c * tile_w, y + caption_h))
    tmp = path.with_name(f".{path.name}.tmp")
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def _tile(vol: PreviewVolume, *, axis: int, frac: float, overlay: bool) -> Image.Image:
    """One slice as an RGB image, superior/anterior up, at `_TILE_MM` per pixel."""
    index = min(int(round(frac * (vol.image.shape[axis] - 1))), vol.image.shape[axis] - 1)
    img = np.take(vol.image, index, axis=axis).astype(np.float32)
    hi = float(np.percentile(img, 99.5)) or 1.0
    grey = np.clip(img / hi, 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if overlay and vol.label is not None:
        lab = np.take(vol.label, index, axis=axis)
        for k, colour in LABEL_COLOURS.items():
            m = lab == k
            rgb[m] = (1 - _ALPHA) * rgb[m] + _ALPHA * np.asarray(colour, dtype=np.float32)
    # Array axes (first, second) of the slice -> image (width, height); flip so up is superior/anterior.
    rgb = np.flip(np.transpose(rgb, (1, 0, 2)), axis=0)
    in_plane = [s for a, s in enumerate(vol.spacing_mm) if a != axis]
    size = (max(1, round(rgb.shape[1] * in_plane[0] / _TILE_MM)), max(1, round(rgb.shape[0] * in_plane[1] / _TILE_MM)))
    return Image.fromarray(np.ascontiguousarray(rgb.astype(np.uint8))).resize(size, Image.NEAREST)
