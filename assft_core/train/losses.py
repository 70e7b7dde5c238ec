"""Training losses: Dice + cross-entropy with an ignore label, and the SSFT weight ramp.

MONAI's `DiceCELoss` has no ignore label, and masking class indices before one-hot encoding would
turn ignored voxels into background. So the labelled loss is built from MONAI's `MaskedDiceLoss`
(fed a one-hot target whose ignored voxels are zero in every channel) plus cross-entropy with
`ignore_index`; with nothing ignored it equals `DiceCELoss(to_onehot_y=True, softmax=True)`
(tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from monai.networks.utils import one_hot
from torch import nn

from assft_core.errors import DataError


def lambda_u_ramp(fraction_done: float, lambda_max: float) -> float:
    """Weight of the pseudo-label loss: λ_u = λ_max · exp(−5 (1 − e/E)²) (ASSFT, METHOD.md §4).

    Args:
        fraction_done: e/E, the fraction of this run's steps done, clipped to [0, 1].
        lambda_max: λ_max, the weight reached at the end of the run.

    Returns:
        λ_u; λ_max · e^−5 ≈ 0.0067 · λ_max at the start, λ_max at the end.
    """
    e = min(max(float(fraction_done), 0.0), 1.0)
    return float(lambda_max) * math.exp(-5.0 * (1.0 - e) ** 2)


def _check_target(target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Validity mask (B, 1, ...) of `target`; raises if a kept voxel names a class the net lacks."""
    valid = target != ignore_index
    if bool((target[valid] >= num_classes).any()) or bool((target[valid] < 0).any()):
        bad = int(target[valid].max())
        raise DataError(
            f"a training label holds class {bad}, but the network predicts {num_classes} classes "
            f"(0..{num_classes - 1}; {ignore_index} = ignore). Fix: check the label files' values or "
            "build the network with more output channels."
        )
    return valid


def ignore_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy averaged over the voxels whose label is not `ignore_index`.

    Args:
        logits: (B, K, D, H, W) raw network outputs.
        target: (B, 1, D, H, W) integer class indices, `ignore_index` = ignore.
        ignore_index: label value left out of the loss.

    Returns:
        Scalar loss; 0 (still attached to the graph) when every voxel is ignored, where plain
        `F.cross_entropy` would return NaN.

    Raises:
        DataError: a kept voxel holds a class index ≥ K.
    """
    valid = _check_target(target, logits.shape[1], ignore_index)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target[:, 0].long(), ignore_index=ignore_index)


class MaskedDiceCELoss(nn.Module):
    """Dice (softmax, one-hot target) + cross-entropy, both ignoring `ignore_index` voxels.

    Equal to MONAI `DiceCELoss(to_onehot_y=True, softmax=True)` when no voxel is ignored.
    Used for labelled batches (ASSFT, METHOD.md §4: `DiceCE(L)`).
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.dice = MaskedDiceLoss(include_background=True, to_onehot_y=False, softmax=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of one batch.

        Args:
            logits: (B, K, D, H, W) raw network outputs.
            target: (B, 1, D, H, W) integer class indices, `ignore_index` = ignore.

        Returns:
            Scalar Dice + CE loss.

        Raises:
            DataError: a kept voxel holds a class index ≥ K.
        """
        valid = _check_target(target, logits.shape[1], self.ignore_index)
        # Ignored voxels get class 0 only so that one_hot is defined; the mask then zeroes them
        # in every channel of both prediction and target.
        safe = torch.where(valid, target, torch.zeros_like(target)).long()
        onehot = one_hot(safe, num_classes=logits.shape[1], dim=1).to(logits.dtype)
        dice = self.dice(logits, onehot, mask=valid.to(logits.dtype))
        return dice + ignore_ce(logits, target, self.ignore_index)
