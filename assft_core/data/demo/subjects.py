"""Virtual subjects: the template warped by a random affine plus a smooth elastic field.

Image and label go through the same spatial transform (one sampling grid): the image is resampled
bilinearly, the label nearest-neighbour, so labels stay in {0..3} and match the anatomy.
Parameters are physical (degrees, mm), so the 2 mm and 4 mm corpora vary alike.
Source: ASSFT Studio DATA.md ("subjects by random affine + elastic deformation").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import AffineGrid, Resample
from scipy.ndimage import zoom

from assft_core.data.demo.anatomy import TemplateAnatomy


@dataclass(frozen=True)
class SubjectVariation:
    """Ranges of the random warp of one virtual subject.

    Attributes:
        max_rotation_deg: rotation about each axis drawn uniformly in ±this, degrees.
        max_scale: scale per axis drawn uniformly in 1 ± this (0.08 = ±8 %).
        max_shift_mm: translation per axis drawn uniformly in ±this, mm.
        elastic_control_points: (3,) control-point grid of the elastic field over the volume.
        elastic_std_mm: standard deviation of each control point's displacement, mm.
    """

    max_rotation_deg: float = 4.0
    max_scale: float = 0.08
    max_shift_mm: float = 4.0
    elastic_control_points: tuple[int, int, int] = (5, 6, 5)
    elastic_std_mm: float = 2.0


def make_subject(
    template: TemplateAnatomy, rng: np.random.Generator, variation: SubjectVariation | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the template into one virtual subject.

    Args:
        template: the labelled template (RAS grid).
        rng: the subject's random generator (the only source of randomness: same state, same subject).
        variation: warp ranges (defaults: `SubjectVariation()`).

    Returns:
        `t1`: (X, Y, Z) float32 warped T1 in [0, 1]; `label`: (X, Y, Z) uint8 warped classes.
    """
    v = variation or SubjectVariation()
    spacing = np.asarray(template.spacing_mm)
    rotate = np.deg2rad(rng.uniform(-v.max_rotation_deg, v.max_rotation_deg, 3))
    scale = rng.uniform(1.0 - v.max_scale, 1.0 + v.max_scale, 3)
    shift_vox = rng.uniform(-v.max_shift_mm, v.max_shift_mm, 3) / spacing
    grid, _ = AffineGrid(
        rotate_params=rotate.tolist(), scale_params=scale.tolist(), translate_params=shift_vox.tolist()
    )(spatial_size=template.t1.shape)
    grid = torch.as_tensor(grid, dtype=torch.float32).clone()
    grid[:3] += torch.from_numpy(_elastic_field_vox(template.t1.shape, spacing, rng, v))
    resample = Resample(padding_mode="zeros", dtype=torch.float32)
    t1 = resample(torch.tensor(template.t1[None]), grid, mode="bilinear")
    label = resample(torch.tensor(template.label[None], dtype=torch.float32), grid, mode="nearest")
    return (
        np.asarray(t1[0], dtype=np.float32).clip(0.0, 1.0),
        np.rint(np.asarray(label[0])).astype(np.uint8),
    )


def _elastic_field_vox(
    shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator, v: SubjectVariation
) -> np.ndarray:
    """(3, X, Y, Z) float32 displacement in voxels: random control points, upsampled smoothly.

    Control displacements are clipped at 3 standard deviations so no subject folds. The cubic
    spline runs on a grid 4x coarser than the volume and trilinear interpolation does the rest:
    the field is already smooth at that scale, and a full-size cubic zoom costs ~1 s a subject.
    """
    coarse = rng.normal(0.0, v.elastic_std_mm, (3, *v.elastic_control_points))
    coarse = np.clip(coarse, -3 * v.elastic_std_mm, 3 * v.elastic_std_mm) / spacing[:, None, None, None]
    mid_shape = [max(c, -(-s // 4)) for s, c in zip(shape, v.elastic_control_points)]
    factors = [m / c for m, c in zip(mid_shape, v.elastic_control_points)]
    mid = np.stack([zoom(c, factors, order=3, mode="nearest", grid_mode=False) for c in coarse])
    field = torch.nn.functional.interpolate(
        torch.from_numpy(mid.astype(np.float32))[None], size=tuple(shape), mode="trilinear", align_corners=True
    )[0]
    return field.numpy()
