"""What one scoring forward pass yields (METHOD.md §0): everything every query metric needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class NormMoments:
    """Exact per-channel moments of one normalisation layer's input over a whole volume.

    Accumulated over each sliding window's unpadded region, overlaps counted once (METHOD.md §1).

    Attributes:
        sum: (C,) float64, Σx per channel.
        sumsq: (C,) float64, Σx² per channel.
        n: number of spatial positions summed (same for every channel).
    """

    sum: torch.Tensor
    sumsq: torch.Tensor
    n: int

    @property
    def mean(self) -> torch.Tensor:
        """(C,) per-channel mean μ = Σx / n."""
        return self.sum / self.n

    @property
    def var(self) -> torch.Tensor:
        """(C,) per-channel (population) variance σ² = Σx²/n − μ², clamped at 0."""
        m = self.mean
        return (self.sumsq / self.n - m * m).clamp_min(0.0)


@dataclass
class ForwardOutputs:
    """The result of one scoring pass of one model over one case.

    Attributes:
        probs: (K, D, H, W) float32 softmax on the preprocessed grid, or None when the model has no
            head for the target classes (then ASD and pseudo-labels are unavailable).
        embedding: (E,) float32, L2-normalised global-average-pooled encoder features (z), or None
            when the model exposes no encoder (TorchScript without an embedding output).
        norm_moments: encoder normalisation layer name -> its input's moments (empty when the
            backbone has no hookable encoder normalisation layers).
    """

    probs: torch.Tensor | None
    embedding: torch.Tensor | None
    norm_moments: dict[str, NormMoments] = field(default_factory=dict)
