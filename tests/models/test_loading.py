from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks.nets import SwinUNETR

from assft_core.errors import ModelError
from assft_core.models.card import ModelCard
from assft_core.models.loaded import load_model, save_model
from assft_core.models.registry import get_backbone

CLASSES = {0: "bg", 1: "a", 2: "b"}
TINY = {
    "unet": {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1},
    "segresnet": {"init_filters": 4, "blocks_down": (1, 1, 1), "blocks_up": (1, 1)},
    "swin_unetr": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
}


def _card(backbone: str, in_channels: int = 1, classes: dict[int, str] = CLASSES, **extra) -> ModelCard:
    return ModelCard(backbone=backbone, in_channels=in_channels, classes=classes, roi_size=(32, 32, 32),
                     backbone_kwargs=TINY.get(backbone, {}), **extra)


@pytest.mark.parametrize("backbone", ["unet", "segresnet", "swin_unetr"])
def test_save_load_round_trip(tmp_path: Path, backbone: str) -> None:
    torch.manual_seed(1)
    card = _card(backbone)
    net = get_backbone(backbone).make(1, 3, card.backbone_kwargs)
    save_model(net, card, tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    ref = net.state_dict()
    got = loaded.network.state_dict()
    assert set(ref) == set(got)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert loaded.has_head and loaded.report.missing == [] and loaded.report.unexpected == []
    expected_origin = "batchnorm" if backbone == "unet" else "none"
    assert loaded.source_stats_origin == expected_origin


def _unet_file(tmp_path: Path, wrap) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(2)
    net = get_backbone("unet").make(1, 3, TINY["unet"])
    path = tmp_path / "ckpt.pth"
    torch.save(wrap({f"module.{k}": v for k, v in net.state_dict().items()}), path)
    return net, path


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"state_dict": s, "epoch": 3},
                                  lambda s: {"model": {"net": s}}])
def test_nested_and_module_prefix(tmp_path: Path, wrap) -> None:
    net, path = _unet_file(tmp_path, wrap)
    _card("unet", checkpoint=str(path)).save(tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    assert len(loaded.report.matched) == len(net.state_dict())
    assert torch.equal(loaded.network.state_dict()["model.0.conv.unit0.conv.weight"],
                       net.state_dict()["model.0.conv.unit0.conv.weight"])


def test_head_reinitialised_for_other_class_count(tmp_path: Path) -> None:
    net, path = _unet_file(tmp_path, lambda s: s)  # trained for 3 classes
    _card("unet", classes={0: "bg", 1: "a", 2: "b", 3: "c", 4: "d"}, checkpoint=str(path)).save(tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    assert loaded.report.reinitialised and all(k.startswith("model.2.") for k in loaded.report.reinitialised)
    assert not loaded.has_head
    assert "re-initialised" in str(loaded.report)
    key = "model.0.conv.unit0.conv.weight"  # encoder weights still loaded
    assert torch.equal(loaded.network.state_dict()[key], net.state_dict()[key])


def test_channel_mismatch_refused(tmp_path: Path) -> None:
    _, path = _unet_file(tmp_path, lambda s: s)  # 1 input channel
    _card("unet", in_channels=2, checkpoint=str(path)).save(tmp_path)
    with pytest.raises(ModelError, match=r"takes 1 input channel\(s\).*has 2"):
        load_model(tmp_path, device="cpu")


def test_pickled_object_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": object()}, path)
    _card("unet").save(tmp_path)
    with pytest.raises(ModelError, match=str(path)):
        load_model(tmp_path, device="cpu")


def _swin_source() -> SwinUNETR:
    torch.manual_seed(3)
    return get_backbone("swin_unetr").make(1, 3, TINY["swin_unetr"])  # type: ignore[return-value]


def test_swinvit_ssl_layout(tmp_path: Path) -> None:
    """model_swinvit.pt: {"state_dict": {"module.<SwinTransformer key>"}} (MLP as fc1/fc2) plus SSL heads."""
    src = _swin_source()
    state = {f"module.{k}".replace(".linear1.", ".fc1.").replace(".linear2.", ".fc2."): v
             for k, v in src.swinViT.state_dict().items()}
    state["module.rotation_head.weight"] = torch.zeros(4, 8)
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    _card("swin_unetr", checkpoint="model_swinvit.pt").save(tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    assert loaded.report.layout == "swinvit_ssl"
    assert loaded.report.unexpected == ["module.rotation_head.weight"]
    got = loaded.network.state_dict()
    for key in ("swinViT.patch_embed.proj.weight", "swinViT.layers3.0.blocks.0.attn.qkv.weight",
                "swinViT.layers4.0.blocks.0.mlp.linear2.weight",
                "swinViT.layers2.0.downsample.reduction.weight"):
        assert torch.equal(got[key], src.state_dict()[key]), key
    assert not loaded.has_head and any(k.startswith("out.") for k in loaded.report.missing)


def test_ssl_pretrained_layout(tmp_path: Path) -> None:
    """ssl_pretrained_weights.pth: {"model": {"encoder.layersN.0.0.blocks…"}} (filter_swinunetr's input)."""
    src = _swin_source()
    model = {}
    for k, v in src.swinViT.state_dict().items():
        # inverse of filter_swinunetr: "layers1.0.blocks…" was stored as "encoder.layers1.0.0.blocks…"
        model["encoder." + (k if k.startswith("patch_embed") else k[:10] + "0." + k[10:])] = v
    model["encoder.mask_token"] = torch.zeros(1, 1, 12)
    model["decoder.conv.weight"] = torch.zeros(2, 2)
    torch.save({"model": model}, tmp_path / "ssl_pretrained_weights.pth")
    _card("swin_unetr", checkpoint="ssl_pretrained_weights.pth").save(tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    assert loaded.report.layout == "ssl_pretrained"
    assert sorted(loaded.report.unexpected) == ["decoder.conv.weight", "encoder.mask_token"]
    got, ref = loaded.network.state_dict(), src.state_dict()
    swin_keys = [k for k in ref if k.startswith("swinViT.")]
    assert sorted(loaded.report.matched) == sorted(swin_keys)
    assert all(torch.equal(got[k], ref[k]) for k in swin_keys)
    assert not loaded.has_head


def test_ssl_channel_mismatch(tmp_path: Path) -> None:
    src = _swin_source()
    state = {f"module.{k}".replace(".linear1.", ".fc1.").replace(".linear2.", ".fc2."): v
             for k, v in src.swinViT.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    _card("swin_unetr", in_channels=4, checkpoint="w.pt").save(tmp_path)
    with pytest.raises(ModelError, match=r"takes 1 input channel"):
        load_model(tmp_path, device="cpu")


class _LogitsOnly(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _WithEmbedding(_LogitsOnly):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        logits = self.conv(x)
        return logits, logits.mean(dim=(2, 3, 4))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("with_embedding", [True, False])
def test_torchscript(tmp_path: Path, with_embedding: bool) -> None:
    from assft_core.config import InferenceConfig

    scripted = torch.jit.script(_WithEmbedding() if with_embedding else _LogitsOnly())
    torch.jit.save(scripted, str(tmp_path / "model.ts"))
    _card("torchscript", checkpoint="model.ts").save(tmp_path)
    loaded = load_model(tmp_path, device="cpu")
    assert loaded.has_embedding is with_embedding
    assert loaded.source_stats_origin == "none"
    out = loaded.scoring_pass(torch.rand(1, 20, 20, 20), InferenceConfig(roi_size=(32, 32, 32)))
    assert out.probs is not None and out.probs.shape == (3, 20, 20, 20)
    assert (out.embedding is not None) is with_embedding
    if not with_embedding:
        assert "only output-based strategies" in str(loaded.report)
