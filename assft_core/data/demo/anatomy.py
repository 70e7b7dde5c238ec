"""Labelled template anatomy of the demo corpus, from nilearn's MNI152 2009a (McGill licence).

Classes: 0 background, 1 CSF, 2 grey matter (GM), 3 white matter (WM).

The template ships probability maps for GM and WM and a brain mask, but no CSF map, so CSF is
derived. "Neither GM nor WM" alone is not enough: it also catches the mask's rim, where the
skull-stripped T1 fades to 0 and would draw a CSF shell around the brain. The rule, per voxel of
the brain mask (T1 intensities in [0, 1]):

- CSF if p_GM < 0.3 and p_WM < 0.3 (little tissue) AND the T1 is dark, 0.1 <= T1 < 0.45: fluid is
  darker than any GM (GM's 5th percentile is ~0.52) yet not the zero of the stripped background.
  This keeps the ventricles and the sulcal/cisternal CSF and drops the faded rim.
- otherwise GM or WM by the larger probability, if that probability is at least 0.3;
- otherwise background (mask voxels that are neither tissue nor dark fluid, e.g. the rim).

`preview.write_preview` draws the result; look at it after changing any threshold here.
Source: ASSFT Studio DATA.md ("derive CSF with care"); template: Fonov et al., NeuroImage 2011.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# CSF rule thresholds (see the module docstring); T1 intensities are the template's [0, 1] scale.
TISSUE_PROB_MIN = 0.3
CSF_T1_LOW = 0.1
CSF_T1_HIGH = 0.45
# The box around the brain at 2 mm (DATA.md: 80 x 96 x 80 voxels, RAS axis order).
BOX_2MM = (80, 96, 80)

CLASS_NAMES: dict[int, str] = {0: "background", 1: "CSF", 2: "grey_matter", 3: "white_matter"}


@dataclass(frozen=True)
class TemplateAnatomy:
    """The labelled template on the corpus grid.

    Attributes:
        t1: (X, Y, Z) float32 skull-stripped T1 in [0, 1], RAS axis order.
        label: (X, Y, Z) uint8 classes 0..3 (`CLASS_NAMES`).
        affine: (4, 4) voxel -> world (RAS, mm).
    """

    t1: np.ndarray
    label: np.ndarray
    affine: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return voxel_spacing_mm(self.affine)


def voxel_spacing_mm(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis of a (4, 4) voxel -> world (mm) affine."""
    x, y, z = (float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    return x, y, z


def tissue_labels(t1: np.ndarray, p_gm: np.ndarray, p_wm: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Apply the CSF/GM/WM rule of the module docstring voxel-wise.

    Args:
        t1: (X, Y, Z) T1 intensities in [0, 1].
        p_gm: (X, Y, Z) grey-matter probability in [0, 1].
        p_wm: (X, Y, Z) white-matter probability in [0, 1].
        brain: (X, Y, Z) bool brain mask.

    Returns:
        (X, Y, Z) uint8 labels: 0 background, 1 CSF, 2 GM, 3 WM.
    """
    label = np.zeros(t1.shape, dtype=np.uint8)
    tissue = np.maximum(p_gm, p_wm) >= TISSUE_PROB_MIN
    label[brain & tissue & (p_gm >= p_wm)] = 2
    label[brain & tissue & (p_wm > p_gm)] = 3
    csf = brain & ~tissue & (t1 >= CSF_T1_LOW) & (t1 < CSF_T1_HIGH)
    label[csf] = 1
    return label


@lru_cache(maxsize=2)
def load_template_anatomy(voxel_mm: float = 2.0) -> TemplateAnatomy:
    """Load MNI152 2009a at 2 mm from nilearn, label it, crop a box around the brain.

    Cached per process (nilearn's loading and resampling take ~10 s); the arrays are read-only.

    At `voxel_mm=4` the 2 mm result is coarsened over 2x2x2 blocks (box 40 x 48 x 40): T1 by the
    mean, labels by majority vote (ties to the lower class), so the tiny corpus has the same
    anatomy and the same labelling rule, coarser.

    Args:
        voxel_mm: 2.0 (box 80 x 96 x 80) or 4.0 (box 40 x 48 x 40).

    Returns:
        The labelled template (RAS, `voxel_mm` isotropic).

    Raises:
        ValueError: for a voxel size other than 2 or 4 mm.
    """
    if voxel_mm not in (2.0, 4.0):
        raise ValueError(f"voxel_mm must be 2 or 4, not {voxel_mm}")
    from nilearn import datasets  # slow import (~3 s): only when a corpus is built

    t1_img = datasets.load_mni152_template(resolution=2)
    maps = [
        np.asarray(t1_img.get_fdata(), dtype=np.float32),
        np.asarray(datasets.load_mni152_gm_template(resolution=2).get_fdata(), dtype=np.float32),
        np.asarray(datasets.load_mni152_wm_template(resolution=2).get_fdata(), dtype=np.float32),
        np.asarray(datasets.load_mni152_brain_mask(resolution=2).get_fdata() > 0, dtype=np.float32),
    ]
    affine = _ras_check(np.asarray(t1_img.affine, dtype=np.float64))
    (t1, p_gm, p_wm, brain), affine = _crop_box(maps, affine, maps[3] > 0, BOX_2MM)
    label = tissue_labels(t1, p_gm, p_wm, brain > 0)
    if voxel_mm == 4.0:
        t1, label, affine = _pool2(t1), _majority2(label), _pool2_affine(affine)
    t1 = np.clip(t1, 0.0, 1.0)
    for array in (t1, label, affine):
        array.setflags(write=False)
    return TemplateAnatomy(t1=t1, label=label, affine=affine)


def _ras_check(affine: np.ndarray) -> np.ndarray:
    """The template is stored RAS with a diagonal affine; the box crop relies on it."""
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))) or np.any(np.diag(affine)[:3] <= 0):
        raise ValueError(f"nilearn's MNI152 template is no longer diagonal RAS (affine {affine.tolist()})")
    return affine


def _crop_box(
    maps: list[np.ndarray], affine: np.ndarray, brain: np.ndarray, box: tuple[int, int, int]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Crop (zero-padding where needed) every map to `box` voxels centred on the brain's bounding box."""
    idx = np.argwhere(brain)
    centre = (idx.min(0) + idx.max(0) + 1) // 2
    start = centre - np.asarray(box) // 2
    out = []
    for m in maps:
        crop = np.zeros(box, dtype=m.dtype)
        src_lo = np.maximum(start, 0)
        src_hi = np.minimum(start + np.asarray(box), m.shape)
        dst_lo = src_lo - start
        dst_hi = dst_lo + (src_hi - src_lo)
        crop[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))] = m[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
        out.append(crop)
    new_affine = affine.copy()
    new_affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return out, new_affine


def _pool2(m: np.ndarray) -> np.ndarray:
    """Mean over 2x2x2 blocks: (X, Y, Z) -> (X/2, Y/2, Z/2); sizes must be even."""
    x, y, z = m.shape
    return m.reshape(x // 2, 2, y // 2, 2, z // 2, 2).mean(axis=(1, 3, 5)).astype(np.float32)


def _majority2(label: np.ndarray) -> np.ndarray:
    """Most frequent class over 2x2x2 blocks: (X, Y, Z) uint8 -> (X/2, Y/2, Z/2); ties to the lower class."""
    x, y, z = label.shape
    blocks = label.reshape(x // 2, 2, y // 2, 2, z // 2, 2)
    counts = np.stack([(blocks == k).sum(axis=(1, 3, 5)) for k in CLASS_NAMES])
    return np.argmax(counts, axis=0).astype(np.uint8)


def _pool2_affine(affine: np.ndarray) -> np.ndarray:
    """Affine of `_pool2`'s grid: voxels twice as large, centred on each block's centre."""
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * 2.0
    out[:3, 3] = affine[:3, :3] @ np.full(3, 0.5) + affine[:3, 3]
    return out
