"""Fixtures of the benchmark tests: a tiny f_0 and one real tiny benchmark, made once per session.

The tiny f_0 is a two-level BatchNorm UNet saved as a model folder whose card fits the tiny demo
corpus (4 mm, MRI, the demo's classes). Made in the test, never shipped. Its output layer is zero
with a background bias of `BACKGROUND_LOGIT`, so it predicts background everywhere, also after a
few fine-tuning steps (AdamW moves a weight by about lr = 5e-4 a step): every foreground class of
every test case is missed. That makes the test metrics computable by hand (Dice 0, HD95
undefined, one miss per class and case) and keeps evaluation fast. Its encoder keeps random
weights, so the scoring pass yields real, distinct embeddings and layer statistics.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from assft_core.bench.config import preset
from assft_core.config import Modality, PreprocessConfig
from assft_core.data.demo.anatomy import CLASS_NAMES
from assft_core.models.card import ModelCard
from assft_core.models.loaded import save_model
from assft_core.models.registry import get_backbone

BACKGROUND_LOGIT = 20.0
KWARGS = {"channels": (4, 8), "strides": (2,), "num_res_units": 1, "norm": "batch"}


def tiny_model_dir(folder: Path, seed: int = 0) -> Path:
    """Write the tiny model folder (checkpoint + card) into `folder`; returns it."""
    torch.manual_seed(seed)
    classes = dict(CLASS_NAMES)
    network = get_backbone("unet").make(1, len(classes), KWARGS)
    head = [m for m in network.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[0] = BACKGROUND_LOGIT
    card = ModelCard(
        backbone="unet",
        in_channels=1,
        classes=classes,
        roi_size=(48, 48, 48),  # the tiny corpus's whole preprocessed grid: one window per case
        backbone_kwargs=dict(KWARGS),
        preprocess=PreprocessConfig(spacing_mm=(4.0, 4.0, 4.0), modality=Modality.MRI),
        notes="random encoder, background-only head (benchmark tests)",
    )
    return save_model(network, card, folder)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny background-only f_0's model folder."""
    return tiny_model_dir(tmp_path_factory.mktemp("bench_model") / "model")


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory, tiny_demo_corpus: Path, tiny_model: Path):
    """The `tiny` preset (assft and random, 1 seed, 1 round × 1 label, 2 steps, ceiling and
    floor) through the real loop on the tiny demo corpus, its runs and ceiling in two worker
    processes (the path of `--workers`); returns (config, out folder, outcome).

    Treat the folder as read-only: tests that change it work on a copy.
    """
    from assft_core.bench.strategy_cli import run_benchmark

    torch.set_num_threads(2)
    cfg = preset("tiny")
    out = tmp_path_factory.mktemp("bench_out") / "tiny"
    outcome = run_benchmark(
        cfg, out, datasets={"unbalanced": tiny_demo_corpus}, model=tiny_model, device="cpu",
        command=["assft", "bench", "strategies", "--config", "tiny"], resume=False, png=False,
        workers=2,
    )
    return cfg, out, outcome
