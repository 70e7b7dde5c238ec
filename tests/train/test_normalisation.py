"""bn_mode for every normalisation kind: what `frozen` keeps, and the refusal where it keeps nothing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from assft_core.config import BNMode
from assft_core.errors import StateError
from assft_core.train.normalisation import norm_kind, prepare_normalisation


def _net(norm: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), norm, nn.ReLU(), nn.Conv3d(4, 2, 1))


@pytest.mark.parametrize(
    ("norm", "kind", "eval_mode", "n_frozen"),
    [
        (nn.BatchNorm3d(4), "BatchNorm", True, 2),
        (nn.InstanceNorm3d(4, affine=True), "InstanceNorm", False, 2),
        (nn.InstanceNorm3d(4, affine=True, track_running_stats=True), "InstanceNorm", True, 2),
        (nn.InstanceNorm3d(4, track_running_stats=True), "InstanceNorm", True, 0),
        (nn.GroupNorm(2, 4), "GroupNorm", False, 2),
        (nn.LayerNorm([4, 6, 6, 6]), "LayerNorm", False, 2),
    ],
)
def test_frozen_keeps_what_each_kind_stores(norm: nn.Module, kind: str, eval_mode: bool, n_frozen: int) -> None:
    net = _net(norm)
    params, report = prepare_normalisation(net, BNMode.FROZEN)
    assert norm_kind(norm) == kind and report.layers == {kind: 1}
    assert norm.training is not eval_mode and net[0].training
    # The two convolutions' weights and biases are optimised; the layer's affine parameters are not.
    assert len(params) == 4 and report.frozen_parameters.get(kind, 0) == n_frozen
    assert {id(p) for p in norm.parameters()}.isdisjoint({id(p) for p in params})
    assert kind in report.describe()
    # `train`: every parameter, every layer in training mode.
    params, _ = prepare_normalisation(net, BNMode.TRAIN)
    assert len(params) == len(list(net.parameters())) and norm.training


@pytest.mark.parametrize("norm", [nn.InstanceNorm3d(4), nn.Identity()], ids=["instance_no_affine", "none"])
def test_frozen_refuses_a_network_with_nothing_to_keep(norm: nn.Module) -> None:
    with pytest.raises(StateError, match="nothing to freeze"):
        prepare_normalisation(_net(norm), BNMode.FROZEN)


def test_torchscript_batchnorm_is_recognised() -> None:
    net = torch.jit.script(_net(nn.BatchNorm3d(4)))
    params, report = prepare_normalisation(net, BNMode.FROZEN)
    assert report.layers == {"BatchNorm": 1} and report.eval_mode == {"BatchNorm": 1}
    assert len(params) == 4
