"""Sliding-window softmax inference, the one code path behind prediction and the scoring pass.

`predict_probs` is plain MONAI sliding-window inference (constant blending, padding for volumes
smaller than the ROI) with optional flip test-time augmentation. The scoring pass
(`assft_core.models.hooks`) runs the very same function with a `WindowObserver`, so its softmax is
identical to `predict_probs` by construction (ASSFT, METHOD.md §0: one pass, never one per metric).
"""

from __future__ import annotations

import itertools
from typing import Protocol

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from assft_core.config import InferenceConfig
from assft_core.errors import AssftError

# Flip axes of the (B, C, D, H, W) window batch for each TTA pass; pass 0 is the identity.
_FLIPS: tuple[tuple[int, ...], ...] = tuple(
    axes for r in range(4) for axes in itertools.combinations((2, 3, 4), r)
)

WindowSlices = list[tuple[slice, slice, slice]]


class WindowObserver(Protocol):
    """Receives each batch of windows of the un-flipped pass (the scoring pass's hooks use it)."""

    def begin(self, windows: WindowSlices) -> None:
        """Called before the network runs on a batch; `windows` are spatial slices in padded coords."""

    def end(self, raw_output: object) -> None:
        """Called with the network's raw output for that batch (tensor or tuple)."""


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a device setting.

    Args:
        name: "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:i".

    Raises:
        AssftError: when CUDA is asked for but not available, or the name is not a device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AssftError(f"device {name!r} is not a device; use 'auto', 'cpu' or 'cuda[:i]'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AssftError(f"device {name!r} asked for, but CUDA is not available here; use --device auto or cpu.")
    return device


def logits_of(raw_output: object) -> torch.Tensor:
    """The logits of a network output: the tensor itself, or the first item of a tuple/list.

    TorchScript backbones return `(logits, embedding)`; MONAI networks return logits.
    """
    if isinstance(raw_output, torch.Tensor):
        return raw_output
    if isinstance(raw_output, (tuple, list)) and raw_output and isinstance(raw_output[0], torch.Tensor):
        return raw_output[0]
    raise AssftError(
        f"the network returned {type(raw_output).__name__}; expected logits (B, K, D, H, W) or a "
        "tuple (logits, embedding)."
    )


def network_device(network: nn.Module, cfg: InferenceConfig) -> torch.device:
    param = next(itertools.chain(network.parameters(), network.buffers()), None)
    return param.device if param is not None else resolve_device(cfg.device)


def predict_probs(
    network: nn.Module,
    image: torch.Tensor,
    cfg: InferenceConfig,
    observer: WindowObserver | None = None,
    output_device: torch.device | None = None,
) -> torch.Tensor:
    """Softmax of `network` over a whole volume by sliding-window inference.

    Runs in eval mode without gradients (the network's train/eval state is restored after), on the
    device of the network's parameters (`cfg.device` when it has none). Windows of `cfg.roi_size`
    with `cfg.overlap`, constant blending; a volume smaller than the ROI is zero-padded and the
    output cropped back (MONAI). With `cfg.n_tta` > 1, softmax is averaged over that many flip
    combinations (identity first).

    Args:
        network: maps (B, C, *roi) to logits (B, K, *roi), or to a tuple whose first item is that.
        image: (C, D, H, W) preprocessed volume.
        cfg: sliding-window settings.
        observer: optional; sees every window batch of the identity pass (scoring-pass hooks).
        output_device: where the windows are summed and the softmax volume returned (None: the
            CPU). The scoring pass keeps it on the GPU it runs on, so its metrics read the softmax
            there (no round trip of the volume); the same float32 sums either way.

    Returns:
        (K, D, H, W) float32 softmax on `output_device` (the CPU by default).

    Raises:
        AssftError: on a non-4D image, `n_tta` outside 1..8, or an unexpected network output.
    """
    if image.ndim != 4:
        raise AssftError(f"image must be (C, D, H, W); got shape {tuple(image.shape)}.")
    if not 1 <= cfg.n_tta <= len(_FLIPS):
        raise AssftError(f"InferenceConfig.n_tta={cfg.n_tta}; it must be in 1..{len(_FLIPS)} (flip combinations).")
    device = network_device(network, cfg)
    was_training = network.training
    network.eval()
    batch = image[None].to(device=device, dtype=torch.float32)
    total: torch.Tensor | None = None
    try:
        with torch.no_grad():
            for flip_axes in _FLIPS[: cfg.n_tta]:
                watch = observer if not flip_axes else None

                def predictor(
                    windows: torch.Tensor, coords: list[list[slice]], axes: tuple[int, ...] = flip_axes,
                    obs: WindowObserver | None = watch,
                ) -> torch.Tensor:
                    if obs is not None:
                        obs.begin([tuple(c[2:5]) for c in coords])  # type: ignore[misc]
                    x = windows.flip(axes) if axes else windows
                    raw = network(x)
                    if obs is not None:
                        obs.end(raw)
                    probs = torch.softmax(logits_of(raw).float(), dim=1)
                    return probs.flip(axes) if axes else probs

                probs = sliding_window_inference(
                    batch,
                    roi_size=tuple(cfg.roi_size),
                    sw_batch_size=cfg.sw_batch_size,
                    predictor=predictor,
                    overlap=cfg.overlap,
                    mode="constant",
                    device=torch.device("cpu") if output_device is None else torch.device(output_device),
                    with_coord=True,
                )
                assert isinstance(probs, torch.Tensor)
                total = probs if total is None else total.add_(probs)
    finally:
        network.train(was_training)
    assert total is not None
    if cfg.n_tta > 1:
        # In place: the numbers of `total / n_tta` without a second (K, D, H, W) float32 volume
        # (a 15-class CT at 1.5 mm is ~0.7 GB per copy); n_tta = 1 needs no division at all.
        total.div_(cfg.n_tta)
    return total[0]


def softmax_device(network: nn.Module, cfg: InferenceConfig, n_classes: int, shape: tuple[int, ...]) -> torch.device:
    """Where a scoring pass keeps its (K, D, H, W) softmax: the network's GPU when the volume
    (with MONAI's count map and one TTA copy) takes at most half its free memory, else the CPU.

    Args:
        network: the network (its parameters' device decides).
        cfg: sliding-window settings.
        n_classes: K.
        shape: (D, H, W) of the preprocessed volume.
    """
    device = network_device(network, cfg)
    if device.type != "cuda":
        return torch.device("cpu")
    voxels = 1
    for s in shape:
        voxels *= int(s)
    need = 4 * voxels * (n_classes * (2 if cfg.n_tta > 1 else 1) + 1)
    free, _total = torch.cuda.mem_get_info(device)
    return device if need <= free // 2 else torch.device("cpu")


def predict_labels(network: nn.Module, image: torch.Tensor, cfg: InferenceConfig) -> tuple[torch.Tensor, int]:
    """Argmax of `predict_probs` without its whole (K, D, H, W) softmax volume in memory.

    The same windows, batches and constant blending as MONAI's sliding-window inference, so the
    same sums per voxel in the same order, divided by the same counts: the labels equal
    `predict_probs(...).max(0).indices` exactly. Windows come in MONAI's scan order (first axis
    outermost); voxels before the next window's start along the first axis are final, so they are
    divided, reduced to their argmax and released. Peak memory is one slab of K × roi_D × H × W
    float32 instead of K × D × H × W (a 15-class CT of 246 × 192 × 240 voxels: ~0.27 GB instead
    of ~0.68 GB; the slab does not grow with D). Flip TTA (`n_tta` > 1) and volumes smaller than
    the ROI (MONAI pads those) take `predict_probs` and its argmax.

    Args:
        network: maps (B, C, *roi) to logits (B, K, *roi), or to a tuple whose first item is that.
        image: (C, D, H, W) preprocessed volume.
        cfg: sliding-window settings.

    Returns:
        ((D, H, W) class indices on the CPU, uint8 for K ≤ 256 classes and int64 above (first
        maximum on ties, as `max(0).indices`), K: the number of classes the network predicts).

    Raises:
        AssftError: on a non-4D image, `n_tta` outside 1..8, or an unexpected network output.
    """
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    if image.ndim != 4:
        raise AssftError(f"image must be (C, D, H, W); got shape {tuple(image.shape)}.")
    roi = tuple(int(r) for r in cfg.roi_size)
    size = tuple(int(s) for s in image.shape[1:])
    if cfg.n_tta != 1 or any(s < r for s, r in zip(size, roi)):
        probs = predict_probs(network, image, cfg)
        return probs.max(dim=0).indices.to(_label_dtype(probs.shape[0])), int(probs.shape[0])
    overlap = (float(cfg.overlap),) * 3
    slices = dense_patch_slices(size, roi, _get_scan_interval(size, roi, 3, overlap))
    device = network_device(network, cfg)
    was_training = network.training
    network.eval()
    batch = image[None].to(device=device, dtype=torch.float32)
    labels: torch.Tensor | None = None  # (D, H, W), allocated once K is known
    depth = min(roi[0], size[0])
    acc: torch.Tensor | None = None  # (K, depth, H, W): sums of the voxels [base, base + depth)
    count = torch.zeros((depth, *size[1:]), dtype=torch.float32)
    base = 0

    def finish(upto: int) -> None:
        # Voxels [base, upto) along the first axis are final: divide, argmax, shift the slab.
        nonlocal base
        n = upto - base
        if n <= 0 or acc is None:
            return
        assert labels is not None
        # In place: these planes are final and dropped below, so no (K, n, H, W) quotient is made.
        labels[base:upto] = acc[:, :n].div_(count[None, :n]).max(dim=0).indices
        # Shift the slab down by n in chunks of n planes: source and target never overlap, so no
        # copy of the slab is made (a clone would double the peak: K x depth x H x W float32).
        for j in range(0, depth - n, n):
            m = min(n, depth - n - j)
            acc[:, j : j + m] = acc[:, j + n : j + n + m]
            count[j : j + m] = count[j + n : j + n + m]
        acc[:, depth - n :] = 0
        count[depth - n :] = 0
        base = upto

    try:
        with torch.no_grad():
            for start in range(0, len(slices), int(cfg.sw_batch_size)):
                group = slices[start : start + int(cfg.sw_batch_size)]
                windows = torch.cat([batch[(slice(None), slice(None), *s)] for s in group])
                probs = torch.softmax(logits_of(network(windows)).float(), dim=1).cpu()
                for s, p in zip(group, probs):
                    finish(s[0].start)
                    if acc is None:
                        acc = torch.zeros((p.shape[0], depth, *size[1:]), dtype=torch.float32)
                        labels = torch.empty(size, dtype=_label_dtype(p.shape[0]))
                    local = (slice(s[0].start - base, s[0].stop - base), s[1], s[2])
                    acc[(slice(None), *local)] += p
                    count[local] += 1.0
            finish(size[0])
    finally:
        network.train(was_training)
    assert acc is not None and labels is not None
    return labels, int(acc.shape[0])


def _label_dtype(num_classes: int) -> torch.dtype:
    """uint8 class indices when K ≤ 256 (an eighth of int64's memory), else int64."""
    return torch.uint8 if num_classes <= 256 else torch.int64
