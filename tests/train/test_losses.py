"""Losses: the λ_u ramp (METHOD.md §4) and Dice+CE with an ignore label."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss

from assft_core.errors import DataError
from assft_core.train.losses import MaskedDiceCELoss, ignore_ce, lambda_u_ramp


def test_lambda_u_ramp_values() -> None:
    assert lambda_u_ramp(0.0, 0.5) == pytest.approx(0.5 * math.exp(-5.0))
    assert lambda_u_ramp(0.5, 0.5) == pytest.approx(0.5 * math.exp(-1.25))
    assert lambda_u_ramp(1.0, 0.5) == pytest.approx(0.5)
    assert lambda_u_ramp(0.8, 2.0) == pytest.approx(2.0 * math.exp(-5 * 0.04))
    assert lambda_u_ramp(1.7, 0.5) == pytest.approx(0.5)  # clipped to the end of the run
    assert lambda_u_ramp(-1.0, 0.5) == pytest.approx(0.5 * math.exp(-5.0))


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 6, 5, 4, generator=g)
    target = torch.randint(0, 3, (2, 1, 6, 5, 4), generator=g)
    return logits, target


def test_equals_monai_dicece_without_ignore() -> None:
    logits, target = _batch(0)
    ours = MaskedDiceCELoss(255)(logits, target)
    ref = DiceCELoss(to_onehot_y=True, softmax=True)(logits, target)
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_ignored_voxels_do_not_count() -> None:
    logits, target = _batch(1)
    target[:, :, :3] = 255
    logits.requires_grad_(True)
    loss = MaskedDiceCELoss(255)(logits, target)
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[:, :, :3] == 0)
    assert torch.any(logits.grad[:, :, 3:] != 0)
    # Changing the logits at ignored voxels leaves the loss unchanged.
    other = logits.detach().clone()
    other[:, :, :3] = torch.randn_like(other[:, :, :3]) * 10
    assert float(MaskedDiceCELoss(255)(other, target)) == pytest.approx(float(loss.detach()), rel=1e-6)
    # The kept voxels alone, scored by hand-made CE, give the CE part.
    keep = target[:, 0] != 255
    ce_hand = torch.nn.functional.cross_entropy(logits.detach().permute(0, 2, 3, 4, 1)[keep], target[:, 0][keep])
    assert float(ignore_ce(logits.detach(), target)) == pytest.approx(float(ce_hand), rel=1e-6)


def test_all_ignored_is_zero_and_finite() -> None:
    logits, target = _batch(2)
    target[:] = 255
    logits.requires_grad_(True)
    ce = ignore_ce(logits, target)
    total = MaskedDiceCELoss(255)(logits, target)
    assert float(ce.detach()) == 0.0 and math.isfinite(float(total.detach()))
    total.backward()  # still attached to the graph


def test_class_beyond_network_is_an_error() -> None:
    logits, target = _batch(3)
    target[0, 0, 0, 0, 0] = 7
    with pytest.raises(DataError, match="class 7"):
        MaskedDiceCELoss(255)(logits, target)
