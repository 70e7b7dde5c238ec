from __future__ import annotations

from pathlib import Path

import pytest
import torch

from assft_core.config import InferenceConfig, QueryConfig
from assft_core.models.card import ModelCard
from assft_core.models.hooks import WindowPartition, owned_intervals
from assft_core.models.inference import predict_probs
from assft_core.models.loaded import LoadedModel, load_model, save_model
from assft_core.models.registry import get_backbone
from assft_core.models.source_stats import floored_source_var

CLASSES = {0: "bg", 1: "a", 2: "b"}


def _model(tmp_path: Path, backbone: str, kwargs: dict, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    card = ModelCard(backbone=backbone, in_channels=1, classes=CLASSES, roi_size=(32, 32, 32), backbone_kwargs=kwargs)
    net = get_backbone(backbone).make(1, 3, kwargs)
    for m in net.modules():  # non-trivial running statistics, as a trained model has
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    save_model(net, card, tmp_path)
    return load_model(tmp_path, device="cpu")


@pytest.mark.parametrize("size, roi, overlap", [(48, 32, 0.5), (40, 32, 0.25), (20, 32, 0.25), (100, 32, 0.25)])
def test_owned_intervals_tile_the_volume(size: int, roi: int, overlap: float) -> None:
    parts = owned_intervals(size, roi, overlap, stride=4)
    pad = max(roi - size, 0) // 2
    covered = sorted(v for s, (lo, hi) in parts.items() for v in range(s + lo, s + hi))
    assert covered == list(range(pad, pad + size))  # every voxel exactly once
    assert all(0 <= lo <= hi <= roi for lo, hi in parts.values())


def test_exact_moments_over_2x2x2_windows(tmp_path: Path) -> None:
    """48³ volume, 32³ ROI, overlap 0.5: windows start at 0 and 16 on each axis (8 windows).

    PatchNet's norm0 input is the image and norm1's input a non-overlapping 2³ stride-2 conv of the
    (voxel-wise, eval-mode) norm0 output,
    so each position's value is the same whether computed in a window or over the whole volume;
    the accumulated moments must equal the direct ones over the whole volume.
    """
    loaded = _model(tmp_path, "patchnet_test", {})
    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, 48, 48, 48, generator=g) * 3 + 1
    cfg = InferenceConfig(roi_size=(32, 32, 32), overlap=0.5, sw_batch_size=3)
    partition = WindowPartition.build(image.shape[1:], cfg.roi_size, cfg.overlap, stride=2)
    assert all(sorted(ax) == [0, 16] for ax in partition.axes)
    out = loaded.scoring_pass(image, cfg)

    x0 = image.double()
    with torch.no_grad():
        enc = loaded.network.enc
        x1 = enc.down(enc.norm0(image[None]))[0].double()  # (3, 24, 24, 24); eval BN is voxel-wise
    for name, x in (("enc.norm0", x0), ("enc.norm1", x1)):
        m = out.norm_moments[name]
        flat = x.flatten(1)
        assert m.n == flat.shape[1]
        torch.testing.assert_close(m.mean, flat.mean(1))
        torch.testing.assert_close(m.var, flat.var(1, unbiased=False))
    # z: GAP of the deepest stage (enc.down's output) over the volume, L2-normalised
    z = torch.nn.functional.normalize(x1.flatten(1).mean(1), dim=0).float()
    torch.testing.assert_close(out.embedding, z)


def test_hook_shapes_unet_and_tta(tmp_path: Path) -> None:
    loaded = _model(tmp_path, "unet", {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1})
    image = torch.rand(1, 40, 36, 20)
    cfg = InferenceConfig(roi_size=(32, 32, 32), overlap=0.25, n_tta=2)
    out = loaded.scoring_pass(image, cfg)
    assert out.probs is not None and out.probs.shape == (3, 40, 36, 20) and out.probs.dtype == torch.float32
    torch.testing.assert_close(out.probs.sum(0), torch.ones(40, 36, 20))
    torch.testing.assert_close(out.probs, predict_probs(loaded.network, image, cfg), rtol=0, atol=0)
    norms = loaded.encoder_norm_layers()
    assert set(out.norm_moments) == set(norms)
    net = dict(loaded.network.named_modules())
    for name, m in out.norm_moments.items():
        assert m.sum.shape == (net[name].num_features,) and m.sum.dtype == torch.float64
    # first down layer halves each axis: 20·18·10 positions, the bottom unit is at 1/4
    assert out.norm_moments[norms[0]].n == 20 * 18 * 10
    assert out.norm_moments[norms[-1]].n == 10 * 9 * 5
    assert out.embedding is not None and out.embedding.shape == (16,)
    torch.testing.assert_close(out.embedding.norm(), torch.tensor(1.0))
    # hooks were removed: a later plain inference is unaffected and the module has no hooks left
    assert all(not m._forward_hooks for m in loaded.network.modules())


def test_batchnorm_source_stats_equal_running_stats(tmp_path: Path) -> None:
    loaded = _model(tmp_path, "unet", {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1})
    assert loaded.source_stats_origin == "batchnorm" and loaded.source_stats is not None
    modules = dict(loaded.network.named_modules())
    assert set(loaded.source_stats) == set(loaded.encoder_norm_layers())
    for name, (mu, var) in loaded.source_stats.items():
        torch.testing.assert_close(mu, modules[name].running_mean.double())
        torch.testing.assert_close(var, modules[name].running_var.double())
    assert not any(n.startswith("model.2.") for n in loaded.source_stats)  # decoder excluded


def test_floored_source_var() -> None:
    cfg = QueryConfig(var_floor_abs=1e-5, var_floor_rel=1e-3)
    var = torch.tensor([1e-9, 2.0, 4.0, 6.0], dtype=torch.float64)  # median 3 -> floor 3e-3
    torch.testing.assert_close(floored_source_var(var, cfg), torch.tensor([3e-3, 2.0, 4.0, 6.0], dtype=torch.float64))
    tiny = torch.tensor([1e-9, 1e-8, 1e-7], dtype=torch.float64)  # relative floor below 1e-5
    torch.testing.assert_close(floored_source_var(tiny, cfg), torch.full((3,), 1e-5, dtype=torch.float64))


def test_wrap_network_in_memory(tmp_path: Path) -> None:
    from assft_core.models.loaded import wrap_network

    loaded = _model(tmp_path, "segresnet", {"init_filters": 4, "blocks_down": (1, 1), "blocks_up": (1,), "norm": "instance"})
    wrapped = wrap_network(loaded.network, loaded.card)
    assert wrapped.has_head and wrapped.source_stats_origin == "none" and wrapped.source_stats is None
    image = torch.rand(1, 24, 24, 24)
    cfg = InferenceConfig(roi_size=(32, 32, 32))
    out = wrapped.scoring_pass(image, cfg)
    assert out.probs is not None and out.probs.shape == (3, 24, 24, 24)
    # single padded window: each norm input of the first stage covers exactly the 24³ voxels
    first = wrapped.encoder_norm_layers()[0]
    assert out.norm_moments[first].n == 24**3
