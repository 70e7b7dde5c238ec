"""Query metrics as pure tensor/array functions: Gaussian KL, KG, ball dilation, entropy, ASD, ranks, DIV.

Everything here works on one case's tensors (on CPU or GPU) or on a table's arrays; nothing reads
files or models, so each formula is tested alone against a hand computation (ASSFT, METHOD.md §1–§3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from assft_core.config import QueryConfig
from assft_core.models.outputs import NormMoments
from assft_core.models.source_stats import variance_floor

# Version of the per-case metric code; part of every scoring-cache key, so a fixed metric is never
# served from a cache computed by the old code. Bump it with any change to what a case's scores are.
# 2: σ²_x floored at φ_s (METHOD.md §1), not at the smallest floored source variance.
METRICS_VERSION = 2


def gaussian_kl(
    mu_x: torch.Tensor, var_x: torch.Tensor, mu_src: torch.Tensor, var_src: torch.Tensor
) -> torch.Tensor:
    """Per-channel KL(N(μ_x, σ²_x) ‖ N(μ_src, σ²_src)) in closed form (ASSFT, METHOD.md §1).

    `KL_c = log(σ_src/σ_x) + (σ²_x + (μ_x − μ_src)²) / (2 σ²_src) − 1/2`.

    Args:
        mu_x, var_x: (C,) target case moments (`var_x` > 0; floor it first).
        mu_src, var_src: (C,) source moments (`var_src` > 0; floored with `variance_floor`).

    Returns:
        (C,) float64 KL per channel, ≥ 0.
    """
    mu_x, var_x, mu_src, var_src = (t.to(torch.float64) for t in (mu_x, var_x, mu_src, var_src))
    return 0.5 * torch.log(var_src / var_x) + (var_x + (mu_x - mu_src) ** 2) / (2.0 * var_src) - 0.5


def layer_kl(moments: NormMoments, mu_src: torch.Tensor, var_src: torch.Tensor, cfg: QueryConfig) -> float:
    """`KL_s(x)`: channel-mean Gaussian KL of one normalisation layer (ASSFT, METHOD.md §1).

    The source variance is floored at φ_s (`models.source_stats.variance_floor`); the case
    variance gets the same scalar floor φ_s (not the smallest floored source variance, a larger
    number that flattened every quiet channel), because a channel constant over a whole case
    (σ²_x = 0) would otherwise give an infinite KL.

    Args:
        moments: the layer input's exact moments over the case, (C,) each.
        mu_src, var_src: (C,) source statistics of that layer.
        cfg: query settings (variance floors).

    Returns:
        KL_s as a float (nats).

    Raises:
        ValueError: when the channel counts differ.
    """
    mu_x, var_x = moments.mean.cpu(), moments.var.cpu()
    if mu_x.shape != mu_src.shape:
        raise ValueError(f"case has {tuple(mu_x.shape)} channels, source statistics {tuple(mu_src.shape)}")
    var_src = var_src.cpu().to(torch.float64)
    floor = variance_floor(var_src, cfg)
    var_s = var_src.clamp_min(floor)
    return float(gaussian_kl(mu_x, var_x.to(torch.float64).clamp_min(floor), mu_src.cpu(), var_s).mean())


def knowledge_gap(kl: np.ndarray, pool_mask: np.ndarray) -> np.ndarray:
    """`KG`: mean over layers of `KL_s / median_{pool} KL_s` (ASSFT, METHOD.md §1).

    The median is taken over pool rows only (test cases never move it). A layer whose pool median
    is not positive carries no scale and is left out; with no usable layer, KG ≡ 1.

    Args:
        kl: (N, S) KL per case and layer.
        pool_mask: (N,) bool, True for pool cases.

    Returns:
        (N,) float64 KG per case (rows outside the pool get KG too, for display).
    """
    kl = np.asarray(kl, dtype=np.float64)
    n = kl.shape[0]
    if kl.ndim != 2 or kl.shape[1] == 0 or not np.any(pool_mask):
        return np.ones(n)
    medians = np.median(kl[np.asarray(pool_mask, dtype=bool)], axis=0)
    usable = medians > 0
    if not usable.any():
        return np.ones(n)
    return (kl[:, usable] / medians[usable]).mean(axis=1)


def dilate_ball(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of 3D masks with a ball (METHOD.md §2), exact, on the masks' device.

    The ball `{v : |v|² ≤ r²}` is a union of runs along W: for each (dz, dy) with dz² + dy² ≤ r²,
    the run |dx| ≤ w(dz, dy) = ⌊√(r² − dz² − dy²)⌋. So the dilation is the OR, over (dz, dy), of
    the masks dilated along W by w (w one-voxel shifts each way, grown from w − 1) and shifted by
    (dz, dy): O(r²) passes over the volume instead of a (2r+1)³ convolution.

    Only OR is used, so an integer tensor whose bits are separate masks (bit j of every voxel:
    mask j, as `class_rois` packs up to 8 classes in a uint8) is dilated bit by bit in one go.

    Args:
        masks: (N, D, H, W) bool, N independent masks (e.g. one per class); or integer bit planes.
        radius: ball radius r in voxels (0 returns the masks unchanged).

    Returns:
        (N, D, H, W) dilated masks of the input's dtype (bool for a float input); outside the
        volume counts as background.
    """
    if masks.is_floating_point():
        masks = masks.bool()
    if radius <= 0:
        return masks
    n, d, h, w = masks.shape
    along_w = [masks]  # along_w[j]: dilated along W by j voxels each way
    for _ in range(radius):
        grown = along_w[-1].clone()
        grown[..., 1:] |= along_w[-1][..., :-1]
        grown[..., :-1] |= along_w[-1][..., 1:]
        along_w.append(grown)
    out = torch.zeros_like(masks)
    for dz in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            if dz * dz + dy * dy > radius * radius:
                continue
            src = along_w[math.isqrt(radius * radius - dz * dz - dy * dy)]
            # out[z, y] |= src[z - dz, y - dy], inside the volume only.
            out[:, max(dz, 0) : d + min(dz, 0), max(dy, 0) : h + min(dy, 0)] |= src[
                :, max(-dz, 0) : d + min(-dz, 0), max(-dy, 0) : h + min(-dy, 0)
            ]
    return out


def grown_bounding_box(mask: torch.Tensor, radius: int) -> tuple[slice, ...] | None:
    """The bounding box of a mask's True voxels grown by `radius` on every side, clipped to the volume.

    A ball dilation of radius r (`dilate_ball`) changes nothing outside this box, so dilating the
    box alone gives the same result, and a small structure in a large scan stays cheap. The box
    comes from the mask's projections on the axes (two reductions, no voxel list).

    Args:
        mask: (D, H, W) bool, on any device.
        radius: r in voxels (≥ 0).

    Returns:
        One slice per axis, or None when the mask is empty.
    """
    planes = mask.any(2)  # (D, H)
    hits = [planes.any(1), planes.any(0), mask.any(1).any(0)]
    box = []
    for hit, size in zip(hits, mask.shape):
        found = hit.nonzero()
        if not len(found):
            return None
        lo, hi = int(found[0]), int(found[-1])
        box.append(slice(max(lo - radius, 0), min(hi + radius + 1, size)))
    return tuple(box)


# Elements per slab of the voxel-wise passes: a K × slab × H × W block stays cache-sized,
# and no (K, D, H, W) temporary is made (at 512² × 300 with 15 classes it would be 4.7 GB).
_SLAB_ELEMENTS = 1 << 21


# Foreground classes dilated together: one bit each of a uint8 volume.
_CLASSES_PER_PLANE = 8


@dataclass
class ClassRois:
    """Sizes and sums over the dilated class ROIs Ω_k of one case (`class_rois`).

    Attributes:
        sizes: (K−1,) float64 |Ω_k| (on CPU).
        sums: (K−1,) float64 Σ_{v∈Ω_k} values(v) (on CPU).
        union_voxels: |∪_k Ω_k|.
        union_sum: Σ over ∪_k Ω_k of `union_values` (0.0 when none were given).
    """

    sizes: torch.Tensor
    sums: torch.Tensor
    union_voxels: int
    union_sum: float


def class_rois(
    labels: torch.Tensor,
    values: torch.Tensor,
    num_classes: int,
    radius: int,
    union_values: torch.Tensor | None = None,
) -> ClassRois:
    """Per foreground class k, the size of `Ω_k = dilate(labels == k, r)` and the sum of `values` over it.

    Up to 8 classes share one uint8 volume, bit k − 1 marking Ω_k, so one ball dilation
    (`dilate_ball` on the bits) serves them all; a voxel's byte then says which Ω_k hold it, and
    weighted histograms over the 256 byte values, taken slab by slab (float64 sums, no volume-sized
    float64 copy), give every class's size and sum. The same numbers as dilating each class's mask
    alone. With up to 8 foreground classes the union of the Ω_k is every non-zero byte, so its size
    and the sum of `union_values` over it come from the same histograms; with more, the planes'
    union is kept as one boolean volume.

    Args:
        labels: (D, H, W) integer class indices in 0..num_classes − 1.
        values: (D, H, W) float values to sum (e.g. the entropy map), same device.
        num_classes: K, background included.
        radius: r in voxels.
        union_values: optional (D, H, W) float values summed over the union (e.g. max_k p_k).

    Returns:
        The case's `ClassRois`.
    """
    device = labels.device
    wide = labels.to(torch.int16)  # room for `labels − first` below 0
    one = torch.ones((), dtype=torch.uint8, device=device)
    codes = torch.arange(256, device=device)
    step = max(1, _SLAB_ELEMENTS // max(1, labels.shape[1] * labels.shape[2]))
    planes = range(1, num_classes, _CLASSES_PER_PLANE)
    union = torch.zeros(labels.shape, dtype=torch.bool, device=device) if len(planes) > 1 else None
    sizes, sums = [], []
    union_voxels, union_sum = 0, torch.zeros((), dtype=torch.float64, device=device)
    for first in planes:
        n = min(_CLASSES_PER_PLANE, num_classes - first)
        # Class first + j -> bit j, other classes -> 0 (elementwise: a gather through a lookup
        # table is four times slower on CPU).
        rel = wide - first
        plane = torch.bitwise_left_shift(one, rel.clamp(0, n - 1).to(torch.uint8)) * ((rel >= 0) & (rel < n))
        bits = dilate_ball(plane[None], radius)[0]
        counts = torch.zeros(256, dtype=torch.float64, device=device)
        weighted = torch.zeros(256, dtype=torch.float64, device=device)
        over_union = torch.zeros(256, dtype=torch.float64, device=device)
        for z in range(0, bits.shape[0], step):
            flat = bits[z : z + step].reshape(-1)
            counts += torch.bincount(flat, minlength=256)
            weighted += torch.bincount(flat, weights=values[z : z + step].reshape(-1).to(torch.float64), minlength=256)
            if union is None and union_values is not None:
                over_union += torch.bincount(flat, weights=union_values[z : z + step].reshape(-1).to(torch.float64), minlength=256)
        member = ((codes[:, None] >> torch.arange(n, device=device)) & 1).to(torch.float64)  # (256, n)
        sizes.append(counts @ member)
        sums.append(weighted @ member)
        if union is None:
            union_voxels, union_sum = int(counts[1:].sum()), over_union[1:].sum()
        else:
            union |= bits != 0
    if union is not None:
        union_voxels = int(union.count_nonzero())
        if union_values is not None:
            union_sum = torch.where(union, union_values, 0.0).sum(dtype=torch.float64)
    return ClassRois(torch.cat(sizes).cpu(), torch.cat(sums).cpu(), union_voxels, float(union_sum))


def _slab_len(probs: torch.Tensor) -> int:
    k, _, h, w = probs.shape
    return max(1, _SLAB_ELEMENTS // max(1, k * h * w))


def _entropy_of(p: torch.Tensor, k: int) -> torch.Tensor:
    # entr(p) = −p log p is bit for bit −xlogy(p, p) and a third faster on CPU; in place on the
    # (d, H, W) sum.
    return torch.special.entr(p).sum(0).div_(math.log(k)).clamp_(0.0, 1.0)


def voxel_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Normalised voxel entropy `H = −Σ_k p_k log p_k / log K` in [0, 1] (METHOD.md §2).

    Computed in slabs along D (no (K, D, H, W) temporary).

    Args:
        probs: (K, D, H, W) softmax, K ≥ 2.

    Returns:
        (D, H, W) float32 entropy map (0 · log 0 taken as 0), on `probs`' device.

    Raises:
        ValueError: when K < 2.
    """
    k, d, h, w = probs.shape
    if k < 2:
        raise ValueError(f"entropy needs at least 2 classes, got K={k}")
    entropy = torch.empty((d, h, w), dtype=torch.float32, device=probs.device)
    step = _slab_len(probs)
    for z in range(0, d, step):
        entropy[z : z + step] = _entropy_of(probs[:, z : z + step].to(torch.float32), k)
    return entropy


@dataclass
class VoxelMaps:
    """What one slab-wise pass over a softmax gives (`voxel_maps`).

    Attributes:
        labels: (D, H, W) uint8 argmax (first maximum on ties).
        entropy: (D, H, W) float32 normalised entropy H.
        p_max: (D, H, W) float32 max_k p_k.
        entropy_sum: Σ_v H(v), accumulated in float64.
    """

    labels: torch.Tensor
    entropy: torch.Tensor
    p_max: torch.Tensor
    entropy_sum: float


def voxel_maps(probs: torch.Tensor) -> VoxelMaps:
    """Argmax, entropy and max probability of a softmax in one pass, slab by slab along D.

    One `max` over the class axis gives both the labels (== argmax, first maximum on ties; argmax
    over the class axis is ~20× slower on CPU) and max_k p_k; each slab of K × d × H × W values is
    read while it is in cache. Memory: 9 bytes a voxel besides the softmax.

    Args:
        probs: (K, D, H, W) softmax, 2 ≤ K ≤ 256, on any device.

    Raises:
        ValueError: when K < 2 or K > 256 (labels are uint8).
    """
    k, d, h, w = probs.shape
    if k < 2:
        raise ValueError(f"entropy needs at least 2 classes, got K={k}")
    if k > 256:
        raise ValueError(f"at most 256 classes fit the uint8 label map, got K={k}")
    device = probs.device
    labels = torch.empty((d, h, w), dtype=torch.uint8, device=device)
    entropy = torch.empty((d, h, w), dtype=torch.float32, device=device)
    p_max = torch.empty((d, h, w), dtype=torch.float32, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    step = _slab_len(probs)
    for z in range(0, d, step):
        p = probs[:, z : z + step].to(torch.float32)
        best, idx = p.max(0)
        p_max[z : z + step], labels[z : z + step] = best, idx
        ent = _entropy_of(p, k)
        entropy[z : z + step] = ent
        total += ent.sum(dtype=torch.float64)
    return VoxelMaps(labels=labels, entropy=entropy, p_max=p_max, entropy_sum=float(total))


@dataclass
class RoiUncertainty:
    """What ASD-related quantities one softmax yields (ASSFT, METHOD.md §2 and §4).

    Attributes:
        asd: class-averaged mean entropy inside the dilated predicted class ROIs (or the fallback).
        class_entropy: (K−1,) mean H inside each Ω_k, NaN where the class is not predicted.
        confidence: c, mean of max_k p_k over the ROI (union of the Ω_k, or the fallback).
        mean_entropy: mean H over the whole volume (the `entropy` baseline).
        fg_fraction: fraction of voxels whose argmax is a foreground class.
        used_fallback: True when every Ω_k was empty and the top-q fallback ROI was used.
        argmax: (D, H, W) uint8 predicted labels.
        entropy: (D, H, W) float16 entropy map.
    """

    asd: float
    class_entropy: np.ndarray
    confidence: float
    mean_entropy: float
    fg_fraction: float
    used_fallback: bool
    argmax: np.ndarray
    entropy: np.ndarray


def roi_uncertainty(probs: torch.Tensor, cfg: QueryConfig) -> RoiUncertainty:
    """ASD, per-class entropies, confidence and whole-volume entropy from one softmax (METHOD.md §2).

    `Ω_k = dilate(argmax P == k, r)` with a ball of radius `cfg.roi_dilation_voxels`;
    `ASD = mean_{k: Ω_k ≠ ∅} mean_{v ∈ Ω_k} H(v)`. Means, not sums, so neither scan size nor
    structure size buys a higher score. When every Ω_k is empty the ROI is the top
    `cfg.fallback_top_fraction` of voxels by `1 − p_0` (at least one voxel), so a scan the model
    misses entirely still scores.

    Args:
        probs: (K, D, H, W) softmax, K ≥ 2, on any device.
        cfg: query settings (r, q).

    Returns:
        The case's `RoiUncertainty` (maps on CPU).
    """
    k = probs.shape[0]
    maps = voxel_maps(probs)
    ent, p_max, labels = maps.entropy, maps.p_max, maps.labels
    r = cfg.roi_dilation_voxels
    class_entropy = torch.full((k - 1,), float("nan"), dtype=torch.float64)
    box = grown_bounding_box(labels > 0, r)
    if box is not None:
        # The union of the Ω_k lies inside the box: c is summed over it there.
        rois = class_rois(labels[box], ent[box], k, r, union_values=p_max[box])
        present = rois.sizes > 0
        class_entropy[present] = (rois.sums / rois.sizes.clamp_min(1))[present]
        asd = float(class_entropy[present].mean())
        confidence = rois.union_sum / rois.union_voxels
        used_fallback = False
    else:
        n_top = max(1, math.ceil(cfg.fallback_top_fraction * ent.numel()))
        top = torch.topk((1.0 - probs[0]).flatten(), n_top).indices
        union = torch.zeros(ent.numel(), dtype=torch.bool, device=probs.device)
        union[top] = True
        union = union.view_as(ent)
        asd = float(ent[union].to(torch.float64).mean())
        confidence = float(p_max[union].to(torch.float64).mean())
        used_fallback = True
    return RoiUncertainty(
        asd=asd,
        class_entropy=class_entropy.numpy(),
        confidence=confidence,
        mean_entropy=maps.entropy_sum / ent.numel(),
        fg_fraction=int(torch.count_nonzero(labels)) / labels.numel(),
        used_fallback=used_fallback,
        argmax=labels.cpu().numpy(),
        entropy=ent.to(torch.float16).cpu().numpy(),
    )


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """Percentile ranks in (0, 1], ties averaged: `rankdata(v, "average") / n` (METHOD.md §1).

    Args:
        values: (N,) finite scores.

    Returns:
        (N,) float64 ranks (largest value → 1); empty in, empty out.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    return rankdata(values, method="average") / values.size


def cosine_distance_to_set(z: np.ndarray, z_set: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`DIV(x|S) = min_{y∈S} (1 − cos(z(x), z(y)))` and the nearest member (METHOD.md §1).

    Args:
        z: (N, E) embeddings (normalised here, so any scale is fine).
        z_set: (M, E) embeddings of S, M ≥ 1.

    Returns:
        (N,) float64 DIV in [0, 2] and (N,) int index into `z_set` of the nearest member.

    Raises:
        ValueError: when S is empty (DIV is undefined; callers use δ ≡ 1 then).
    """
    if len(z_set) == 0:
        raise ValueError("DIV needs a non-empty set S")
    a = _unit(z)
    b = _unit(z_set)
    dist = np.clip(1.0 - a @ b.T, 0.0, 2.0)
    nearest = dist.argmin(axis=1)
    return dist[np.arange(len(a)), nearest], nearest


def _unit(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norm > 0, norm, 1.0)
