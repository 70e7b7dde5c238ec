"""Statistics recalibration (AdaBN): BatchNorm running statistics re-estimated on the target pool.

A round trained on two scans leaves every BatchNorm layer with running statistics averaged over
patches of those two scans' sites; at test time every other site is normalised with them
(ASSFT Studio retention recipe `adabn`, METHOD.md §6). Recalibration replaces them with statistics
of all pool images, labelled or not (target data only: source-free), weights unchanged.

What is estimated is what training's running statistics estimate: the average over window batches
of each batch's per-channel mean and variance, every BatchNorm normalising its batch with the
batch's own statistics (train-mode BatchNorm, PyTorch's cumulative average, `momentum=None`),
over the sliding windows of the scoring pass. Not the exact pooled variance over whole volumes
(METHOD.md §1's sums): that one adds the spread of the windows' means, which batch normalisation
removed while the weights were learnt. Measured on the demo model (f_0 recalibrated on the 40 pool
images, test Dice): pooled exact moments 0.545 → 0.235; batch averages 0.545 → 0.539.
Instance/Group/LayerNorm keep no running statistics: nothing to do, and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from assft_core.config import InferenceConfig
from monai.inferers import sliding_window_inference

from assft_core.models.inference import network_device

@dataclass
class RecalibrationReport:
    """What a recalibration did (saved with the round).

    Attributes:
        layers: BatchNorm layers recalibrated (empty: the network has none; a no-op).
        cases: images measured.
        max_mean_shift: the largest |Δμ| / σ_old over every layer and channel: how far the pool's
            statistics were from the ones training left.
        note: plain words for logs and the UI.
    """

    layers: list[str] = field(default_factory=list)
    cases: int = 0
    max_mean_shift: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def batchnorm_layers(network: nn.Module) -> list[str]:
    """Names of the network's BatchNorm modules that track running statistics, in module order."""
    return [
        name for name, m in network.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats
    ]


def recalibrate_batchnorm(
    network: nn.Module,
    images: Iterable[np.ndarray],
    cfg: InferenceConfig,
    *,
    should_stop: Callable[[], bool] | None = None,
) -> RecalibrationReport:
    """Set every BatchNorm layer's running mean and variance to the pool's batch-averaged statistics.

    Args:
        network: the model, changed in place (running statistics only; weights untouched); left
            in eval mode.
        images: (C, D, H, W) float32 preprocessed images, consumed one at a time (a generator
            keeps memory flat).
        cfg: sliding-window settings of the pass (ROI, overlap, window batch, device).
        should_stop: polled after each image; True raises `RecalibrationStopped` with the
            statistics left as they were.

    Returns:
        The report; `layers` empty when the network has no BatchNorm (nothing changed).

    Raises:
        ValueError: no image.
        RecalibrationStopped: when `should_stop` asked.
    """
    names = batchnorm_layers(network)
    if not names:
        return RecalibrationReport(
            note="no BatchNorm layer with running statistics (Instance/Group/LayerNorm): nothing to recalibrate."
        )
    layers = [m for name, m in network.named_modules() if name in names]
    old = {id(bn): (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone(), bn.momentum) for bn in layers}
    device = network_device(network, cfg)
    network.eval()
    n_cases = 0
    try:
        for bn in layers:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over every window batch
            bn.train()
        with torch.no_grad():
            for image in images:
                x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None].to(device)
                sliding_window_inference(
                    x, tuple(cfg.roi_size), cfg.sw_batch_size, network, overlap=cfg.overlap, mode="constant",
                    device=torch.device("cpu"),
                )
                n_cases += 1
                if should_stop is not None and should_stop():
                    raise RecalibrationStopped("recalibration stopped on request; the statistics were left as they were.")
        if n_cases == 0:
            raise ValueError("no image to recalibrate the BatchNorm statistics on.")
    except BaseException:
        for bn in layers:
            mean, var, count, _ = old[id(bn)]
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)
        raise
    finally:
        for bn in layers:
            bn.momentum = old[id(bn)][3]
        network.eval()
    shift = max(
        float(((bn.running_mean - old[id(bn)][0]).abs() / (old[id(bn)][1] + bn.eps).sqrt()).max()) for bn in layers
    )
    return RecalibrationReport(
        layers=names,
        cases=n_cases,
        max_mean_shift=shift,
        note=f"BatchNorm statistics of {len(names)} layer(s) re-estimated on {n_cases} pool image(s); "
        f"the largest change of a mean was {shift:.3g} σ.",
    )


class RecalibrationStopped(Exception):
    """A recalibration was stopped by its caller (`should_stop`)."""
