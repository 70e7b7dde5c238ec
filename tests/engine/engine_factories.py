"""Helpers of the round-engine tests (a tiny model, small settings, in-process CLI runs).

A uniquely named module, imported by conftest.py and the tests alike.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from assft_core.config import InferenceConfig, PreprocessConfig, ProjectConfig, SSFTConfig, TrainConfig
from assft_core.models.card import ModelCard

CLASSES = {0: "background", 1: "CSF", 2: "grey_matter", 3: "white_matter"}
ROI = (48, 48, 48)  # the tiny corpus's preprocessed grid: one sliding window per case
PATCH = (32, 32, 32)


def tiny_model(folder: Path, seed: int = 0) -> Path:
    """A random 2-level UNet for the tiny corpus (4 mm grid), saved with its card in `folder`."""
    from assft_core.models.loaded import save_model
    from assft_core.models.registry import get_backbone

    card = ModelCard(
        backbone="unet",
        in_channels=1,
        classes=CLASSES,
        roi_size=ROI,
        backbone_kwargs={"channels": [4, 8], "strides": [2], "num_res_units": 1},
        preprocess=PreprocessConfig(spacing_mm=(4.0, 4.0, 4.0)),
    )
    torch.manual_seed(seed)
    network = get_backbone("unet").make(1, len(CLASSES), card.backbone_kwargs)
    return save_model(network, card, folder)


def engine_config(**ssft: object) -> ProjectConfig:
    """Settings small enough for a 2-core test machine: 32³ patches, a few steps, fast heartbeats."""
    return ProjectConfig(
        budget=2,
        heartbeat_s=0.2,
        stale_after_s=1.5,
        preprocess=PreprocessConfig(spacing_mm=(4.0, 4.0, 4.0)),
        inference=InferenceConfig(roi_size=ROI, sw_batch_size=1, device="cpu"),
        train=TrainConfig(patch_size=PATCH, batch_size=1, unlabelled_batch_size=1, checkpoint_every=2, device="cpu"),
        ssft=SSFTConfig(supervised_steps=4, ssft_steps=2, **ssft),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class CliRun:
    """One `assft` command line run in-process: exit code and what it printed."""

    code: int
    out: str
    err: str


def run_cli(*argv: str | Path) -> CliRun:
    """Run `assft ARGV...` in this process (the same `main` as the console script)."""
    from assft_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return CliRun(code, out.getvalue(), err.getvalue())
