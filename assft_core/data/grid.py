"""Nearest-neighbour resampling of label maps between voxel grids, through world coordinates.

Labels are only ever resampled nearest-neighbour (torchio's `LabelMap` rule): an interpolated
class index is meaningless. Two grids are related by their affines (voxel -> world, RAS, mm), so
the same function maps a prediction from the preprocessed grid back to a native scan, or a label
onto an image whose affine differs.
"""

from __future__ import annotations

import numpy as np

from assft_core.errors import DataError

# Rounding tolerance in voxels: a destination voxel centre that falls a hair (float error) short
# of a source voxel boundary still picks that voxel, so an exact grid inverse is exact in practice.
_ROUND_EPS = 1e-4


def resample_label_to_grid(
    label: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: tuple[int, int, int],
    dst_affine: np.ndarray,
    *,
    fill_value: int = 0,
) -> np.ndarray:
    """Resample a label map onto another voxel grid by nearest neighbour in world coordinates.

    Each destination voxel centre is mapped to world (RAS, mm) with `dst_affine`, then into the
    source grid with the inverse of `src_affine`, and takes the value of the nearest source voxel.
    Destination voxels falling outside the source grid get `fill_value` (background).

    Args:
        label: (X, Y, Z) integer class indices on the source grid.
        src_affine: (4, 4) voxel -> world (mm) affine of `label`.
        dst_shape: (X', Y', Z') spatial shape of the destination grid.
        dst_affine: (4, 4) voxel -> world (mm) affine of the destination grid.
        fill_value: value of destination voxels outside the source grid.

    Returns:
        (X', Y', Z') array of `label`'s dtype.

    Raises:
        DataError: if `label` is not 3D or integer, or an affine is not an invertible (4, 4).

    Example:
        >>> lab = np.zeros((4, 4, 4), np.uint8); lab[1, 2, 3] = 1
        >>> up = resample_label_to_grid(lab, np.eye(4), (8, 8, 8), np.diag([0.5, 0.5, 0.5, 1]))
        >>> int(up[2, 4, 6])
        1
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise DataError(f"resample_label_to_grid: label must be (X, Y, Z), got shape {label.shape}.")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise DataError(
            f"resample_label_to_grid: label must hold integer class indices, got {label.dtype}; "
            "cast a label map to an integer type (labels are never interpolated)."
        )
    src = _check_affine(src_affine, "src_affine")
    dst = _check_affine(dst_affine, "dst_affine")
    # dst voxel index -> src voxel index, one affine map.
    mapping = np.linalg.inv(src) @ dst
    rot, shift = mapping[:3, :3], mapping[:3, 3]
    nx, ny, nz = (int(s) for s in dst_shape)
    out = np.full((nx, ny, nz), fill_value, dtype=label.dtype)
    src_shape = np.asarray(label.shape)
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    plane = np.stack([gx.ravel(), gy.ravel()], axis=0).astype(np.float64)  # (2, nx*ny)
    base = rot[:, :2] @ plane + shift[:, None]  # (3, nx*ny)
    # One destination z-slice at a time keeps memory at O(nx * ny) for large volumes.
    for z in range(nz):
        coords = base + rot[:, 2:3] * z
        idx = np.floor(coords + 0.5 + _ROUND_EPS).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < src_shape[:, None]), axis=0)
        values = np.full(coords.shape[1], fill_value, dtype=label.dtype)
        values[inside] = label[idx[0, inside], idx[1, inside], idx[2, inside]]
        out[:, :, z] = values.reshape(nx, ny)
    return out


def _check_affine(affine: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise DataError(f"resample_label_to_grid: {name} must be a finite, invertible (4, 4) affine.")
    return a
