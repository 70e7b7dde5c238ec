"""End to end with a non-BatchNorm backbone: `assft stats` → statistics file → KL per layer.

SegResNet with instance norm carries no running statistics, so without `assft stats` it has no
source knowledge (KG ≡ 1); after it, a source-like case must sit closer to the source than a
contrast-inverted, noisy one.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from assft_core.cli import main
from assft_core.config import InferenceConfig, QueryConfig
from assft_core.models.card import ModelCard
from assft_core.models.loaded import load_model, save_model
from assft_core.models.registry import get_backbone
from assft_core.models.source_stats import floored_source_var, pooled_moments
from assft_core.query.metrics import gaussian_kl

KWARGS = {"init_filters": 4, "blocks_down": (1, 1, 1), "blocks_up": (1, 1), "norm": "instance"}


def _phantom(seed: int, invert: bool = False, noise: float = 0.02) -> np.ndarray:
    """A 24³ head-like phantom: bright sphere in a dimmer shell, on a zero background."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:24, :24, :24] - 11.5
    r = np.sqrt(x * x + y * y + z * z) * rng.uniform(0.9, 1.1)
    img = np.where(r < 6, 1.0, np.where(r < 10, 0.5, 0.0))
    if invert:
        img = np.where(r < 10, 1.5 - img, 0.0)
    img = img + noise * rng.standard_normal(img.shape) * (r < 10)
    return (img * 1000).astype(np.float32)


def _write(path: Path, arr: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(arr, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


def test_stats_cli_then_kl(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cases = {"src1": _phantom(1), "src2": _phantom(2), "like": _phantom(3), "shift": _phantom(4, invert=True, noise=0.3)}
    for name, arr in cases.items():
        _write(data / f"{name}.nii.gz", arr)
    (data / "cases.csv").write_text(
        "case_id,site,split\nsrc1,S,source_train\nsrc2,S,source_train\nlike,S,pool\nshift,T,pool\n"
    )
    model_dir = tmp_path / "model"
    torch.manual_seed(0)
    card = ModelCard(backbone="segresnet", in_channels=1, classes={0: "bg", 1: "fg"}, roi_size=(32, 32, 32),
                     backbone_kwargs=KWARGS)
    save_model(get_backbone("segresnet").make(1, 2, KWARGS), card, model_dir)
    assert load_model(model_dir, device="cpu").source_stats_origin == "none"

    assert main(["stats", "--data", str(data), "--checkpoint", str(model_dir), "--device", "cpu"]) == 0
    # a second run refuses to replace the file unless asked
    assert main(["stats", "--data", str(data), "--checkpoint", str(model_dir), "--device", "cpu"]) == 1

    loaded = load_model(model_dir, device="cpu")
    assert loaded.source_stats_origin == "file" and loaded.card.source_stats == "source_stats.pt"
    assert loaded.source_stats is not None and set(loaded.source_stats) == set(loaded.encoder_norm_layers())

    from assft_core.data.importers import import_dataset
    from assft_core.data.preprocess import preprocess_case

    cfg = InferenceConfig(roi_size=(32, 32, 32))
    manifest = {c.case_id: c for c in import_dataset(data).cases}
    images = {k: torch.as_tensor(preprocess_case(manifest[k], loaded.card.preprocess).image) for k in manifest}
    moments = {k: loaded.scoring_pass(images[k], cfg).norm_moments for k in images}
    # the file holds the pooled moments of the two source cases (Σ and n added over cases)
    pooled = pooled_moments([moments["src1"], moments["src2"]])
    for name, (mu, var) in loaded.source_stats.items():
        torch.testing.assert_close(mu, pooled[name].mean)
        torch.testing.assert_close(var, pooled[name].var)
        n1, n2 = moments["src1"][name].n, moments["src2"][name].n
        expected_mu = (moments["src1"][name].mean * n1 + moments["src2"][name].mean * n2) / (n1 + n2)
        torch.testing.assert_close(mu, expected_mu)

    qcfg = QueryConfig()

    def mean_kl(case: str) -> float:
        per_layer = []
        for name, (mu_src, var_src) in loaded.source_stats.items():
            m = moments[case][name]
            kl = gaussian_kl(m.mean, m.var.clamp_min(qcfg.var_floor_abs), mu_src, floored_source_var(var_src, qcfg))
            per_layer.append(float(kl.mean()))
        return float(np.mean(per_layer))

    kl_src, kl_like, kl_shift = mean_kl("src1"), mean_kl("like"), mean_kl("shift")
    print(f"mean KL: source {kl_src:.4f}, source-like {kl_like:.4f}, shifted {kl_shift:.4f}")
    assert kl_src < kl_shift and kl_like < kl_shift
    assert kl_shift > 2 * kl_like


def test_model_info(tmp_path: Path, capsys) -> None:
    card = ModelCard(backbone="segresnet", in_channels=1, classes={0: "bg", 1: "fg"}, roi_size=(32, 32, 32),
                     backbone_kwargs=KWARGS)
    save_model(get_backbone("segresnet").make(1, 2, KWARGS), card, tmp_path)
    assert main(["model-info", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "source statistics: none" in out and "KG ≡ 1" in out and "head for the card's classes: yes" in out
