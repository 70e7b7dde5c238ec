"""Forward hooks of the scoring pass: exact encoder statistics and the embedding, per window.

Exactness (ASSFT, METHOD.md §1): every voxel of the (unpadded) volume is assigned to exactly one
sliding window. Along each axis the windows' starts s_0 < s_1 < … split the volume at the middle
of each overlap (rounded down to a multiple of the backbone's total stride relative to the later
window, so the split also falls on feature boundaries of the deeper layers); the windows' owned
regions are the products of those intervals and tile the volume. A hooked layer whose input has
d positions along an axis for an ROI of r voxels counts position k of window w iff its first voxel
(k·r/d in window coordinates) lies in w's owned region. At a layer whose input has full ROI
resolution this counts every voxel exactly once; at deeper layers it counts every feature of an
aligned window grid exactly once (a window whose start is not a multiple of the stride, such as
the last one when the volume size is not, shifts its feature grid, so a few boundary features are
then counted from the neighbouring window's grid instead).
Per layer, per channel Σx, Σx² and n are summed in float64; μ and σ² follow from them, never from
per-window variances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval
from torch import nn

from assft_core.models.inference import WindowSlices
from assft_core.models.outputs import NormMoments

Interval = tuple[int, int]


def owned_intervals(
    size: int, roi: int, overlap: float, stride: int = 1
) -> dict[int, Interval]:
    """Per window start (padded coordinates) along one axis, the owned interval in window coordinates.

    Args:
        size: the volume's size along the axis, in voxels.
        roi: the window size along the axis.
        overlap: sliding-window overlap fraction, as given to MONAI.
        stride: split points are kept on multiples of this relative to the later window.

    Returns:
        start -> (lo, hi), half-open, in that window's own coordinates; the intervals, shifted by
        their starts, tile the unpadded volume [pad, pad + size) exactly.
    """
    padded = max(size, roi)
    pad = max(roi - size, 0) // 2
    # MONAI's own (private) helper: the partition must follow sliding_window_inference's windows exactly.
    interval = _get_scan_interval((padded,), (roi,), 1, (overlap,))
    starts = sorted({int(w[0].start) for w in dense_patch_slices((padded,), (roi,), interval)})
    cuts = [pad]
    for prev, nxt in zip(starts, starts[1:]):
        overlap_len = prev + roi - nxt
        cuts.append(nxt + stride * ((overlap_len // 2) // stride))
    cuts.append(pad + size)
    return {s: (cuts[i] - s, cuts[i + 1] - s) for i, s in enumerate(starts)}


@dataclass
class WindowPartition:
    """The owned region of every sliding window of one volume (see the module docstring).

    Attributes:
        roi: (3,) window size in voxels.
        axes: per spatial axis, window start -> owned (lo, hi) in window coordinates.
    """

    roi: tuple[int, int, int]
    axes: tuple[dict[int, Interval], dict[int, Interval], dict[int, Interval]]

    @classmethod
    def build(
        cls, spatial_shape: Sequence[int], roi: Sequence[int], overlap: float, stride: int = 1
    ) -> WindowPartition:
        """The partition MONAI's sliding window implies for a volume of `spatial_shape` (D, H, W)."""
        axes = tuple(owned_intervals(int(s), int(r), overlap, stride) for s, r in zip(spatial_shape, roi))
        return cls(roi=tuple(int(r) for r in roi), axes=axes)  # type: ignore[arg-type]

    def feature_region(self, window: tuple[slice, slice, slice], feature_shape: Sequence[int]) -> tuple[slice, ...]:
        """Slices of a window's feature map (spatial `feature_shape`) owned by that window."""
        out = []
        for axis, (sl, d) in enumerate(zip(window, feature_shape)):
            lo, hi = self.axes[axis][int(sl.start)]
            r = self.roi[axis]
            out.append(slice(-(-lo * d // r), -(-hi * d // r)))  # ceil(lo·d/r), ceil(hi·d/r)
        return tuple(out)


class _MomentAccumulator:
    """Per-channel Σx (and Σx² when `squares`) and the count n over the owned regions of windows."""

    def __init__(self, squares: bool = True) -> None:
        self.squares = squares
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None
        self.n = 0

    def add(self, owned: torch.Tensor) -> None:
        """`owned`: (C, d, h, w) values of owned positions (a strided view; never copied)."""
        # Each (h, w) plane is reduced in float32 (pairwise, relative error ~1e-7), the d plane sums
        # in float64: ten to twenty times faster than a float64 reduction over every value, at the
        # precision of the features themselves. Results stay on the device, no sync per window.
        x = owned.detach()
        s = x.sum((2, 3)).sum(1, dtype=torch.float64)
        self.sum = s if self.sum is None else self.sum + s
        if self.squares:
            sq = torch.linalg.vector_norm(x, 2, dim=(2, 3)).to(torch.float64).square().sum(1)
            self.sumsq = sq if self.sumsq is None else self.sumsq + sq
        self.n += x[0].numel()

    def moments(self) -> NormMoments:
        assert self.sum is not None and self.sumsq is not None
        return NormMoments(sum=self.sum.cpu(), sumsq=self.sumsq.cpu(), n=self.n)

    def mean(self) -> torch.Tensor:
        """(C,) float64 per-channel mean."""
        assert self.sum is not None
        return self.sum.cpu() / self.n


class ScoringObserver:
    """Hooks a network for one scoring pass; a `WindowObserver` for `predict_probs`.

    Registers forward hooks on the named encoder norm layers (their inputs) and encoder stages
    (their outputs), and removes them on `close()` (or leaving the `with` block).

    Args:
        network: the network to hook.
        partition: owned regions of the windows of the volume being scored.
        norm_layers: module names whose input moments are accumulated.
        stages: module names whose outputs are average-pooled into the embedding (concatenated).
        channels_last_norms: the norm layers see (B, D, H, W, C) rather than (B, C, D, H, W).
        embedding_from_output: take the embedding from the second item of the network's output
            (TorchScript `(logits, embedding)`), weighting each window by its owned voxel count.
        feature_axes: for a network reading the volume's axes in another order (nnU-Net,
            `formats.adapter`): feature axis j is this project's axis `feature_axes[j]`; hooked
            features are permuted back before the owned regions are cut. None: same order.
    """

    def __init__(
        self,
        network: nn.Module,
        partition: WindowPartition,
        norm_layers: Sequence[str],
        stages: Sequence[str],
        channels_last_norms: bool = False,
        embedding_from_output: bool = False,
        feature_axes: Sequence[int] | None = None,
    ) -> None:
        self.partition = partition
        self._back: tuple[int, ...] | None = None
        if feature_axes is not None and tuple(feature_axes) != (0, 1, 2):
            inv = [0, 0, 0]
            for j, a in enumerate(feature_axes):
                inv[int(a)] = j
            self._back = (0, 1, *(2 + a for a in inv))
        self.channels_last_norms = channels_last_norms
        self.embedding_from_output = embedding_from_output
        self.windows: WindowSlices | None = None
        self.norms = {name: _MomentAccumulator() for name in norm_layers}
        self.stages = {name: _MomentAccumulator(squares=False) for name in stages}  # means only
        self._out_sum: torch.Tensor | None = None
        self._out_weight = 0
        modules = dict(network.named_modules())
        self._handles = []
        for name in norm_layers:
            self._handles.append(modules[name].register_forward_hook(self._norm_hook(name)))
        for name in stages:
            self._handles.append(modules[name].register_forward_hook(self._stage_hook(name)))

    def __enter__(self) -> ScoringObserver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def begin(self, windows: WindowSlices) -> None:
        self.windows = windows

    def end(self, raw_output: object) -> None:
        if self.embedding_from_output and isinstance(raw_output, (tuple, list)) and len(raw_output) > 1:
            emb = raw_output[1].detach().to(torch.float64).reshape(len(self.windows or []), -1).cpu()
            for b, window in enumerate(self.windows or []):
                n = 1
                for axis, sl in enumerate(window):
                    lo, hi = self.partition.axes[axis][int(sl.start)]
                    n *= max(hi - lo, 0)
                contrib = emb[b] * n
                self._out_sum = contrib if self._out_sum is None else self._out_sum + contrib
                self._out_weight += n
        self.windows = None

    def _accumulate(self, acc: _MomentAccumulator, x: torch.Tensor, channels_last: bool) -> None:
        if self.windows is None:  # a flipped TTA pass, or a forward outside the scoring pass
            return
        if channels_last:
            x = x.movedim(-1, 1)
        elif self._back is not None:
            x = x.permute(*self._back)
        for b, window in enumerate(self.windows):
            region = self.partition.feature_region(window, x.shape[2:])
            acc.add(x[(b, slice(None), *region)])

    def _norm_hook(self, name: str):  # noqa: ANN202 - torch hook signature
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
            self._accumulate(self.norms[name], inputs[0], self.channels_last_norms)

        return hook

    def _stage_hook(self, name: str):  # noqa: ANN202 - torch hook signature
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            self._accumulate(self.stages[name], out, False)

        return hook

    def norm_moments(self) -> dict[str, NormMoments]:
        """Layer name -> exact moments of its input over the volume."""
        return {name: acc.moments() for name, acc in self.norms.items() if acc.n}

    def embedding(self) -> torch.Tensor | None:
        """(E,) float32 L2-normalised z: the owned-voxel average of the hooked stages (concatenated),
        or of the network's embedding output; None when neither is available."""
        if self.stages:
            pooled = [acc.mean() for acc in self.stages.values() if acc.n]
            if not pooled:
                return None
            z = torch.cat(pooled)
        elif self._out_sum is not None and self._out_weight:
            z = self._out_sum / self._out_weight
        else:
            return None
        return torch.nn.functional.normalize(z, dim=0).float()
