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

    Returns:
        (K, D, H, W) float32 softmax on the CPU.

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
                    device=torch.device("cpu"),
                    with_coord=True,
                )
                assert isinstance(probs, torch.Tensor)
                total = probs if total is None else total + probs
    finally:
        network.train(was_training)
    assert total is not None
    return (total / cfg.n_tta)[0].float()
