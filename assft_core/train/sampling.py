"""Patch sampling and augmentation, with every draw a pure function of (seed, step).

A step's crops, flips and intensity jitter come from `step_rng(seed, step, stream)` alone, never
from a generator carried across steps, so a run resumed from a checkpoint at step k draws exactly
what an uninterrupted run draws at step k (ASSFT, METHOD.md §5; issue 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai.transforms import (
    Compose,
    Flip,
    RandAdjustContrast,
    RandGaussianNoise,
    RandGaussianSmooth,
    RandScaleIntensityFixedMean,
    RandSimulateLowResolution,
)

from assft_core.config import IntensityAugment
from assft_core.train.data import TrainSample

# Independent random streams of one step.
STREAM_LABELLED = 0
STREAM_PSEUDO = 1
STREAM_TORCH = 2
STREAM_RETAINED = 3

# Foreground voxels indexed per case for foreground-centred crops (int32, so at most 2 MiB a case):
# more than this are an even draw of this many (nnU-Net keeps 10^4 per class); the demo's cases
# (at most 280 425 foreground voxels) stay below it, so their crops are unchanged.
MAX_FOREGROUND_INDEX = 2**19

# Intensity jitter: multiply by U(1 − s, 1 + s), add U(−o, o) (normalised intensities ~[0, 1]).
_SCALE_JITTER = 0.1
_SHIFT_JITTER = 0.1


def step_rng(seed: int, step: int, stream: int) -> np.random.Generator:
    """The generator of one step's `stream`: a pure function of (seed, step, stream)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(step), int(stream)]))


@dataclass(frozen=True)
class PatchSource:
    """A training case seen as padded to at least the patch size (the padding is virtual: it is
    filled in per patch, so a memory-mapped case is never copied whole), with its foreground
    voxels indexed once.

    Attributes:
        case_id: the case's id.
        image: (C, D, H, W) float32 or float16, unpadded (e.g. a memory-mapped spilled sample,
            read a patch at a time); patches are float32, padding 0.
        label: (1, D, H, W) uint8, unpadded; padding reads as `ignore_index`.
        foreground: flat indices (int32 below 2^31 voxels) into the padded grid (`spatial`) of voxels with a
            class in 1..254, never the ignore value; at most `MAX_FOREGROUND_INDEX` of them, an
            even draw when there are more; may be empty.
        group: the sample's draw group (`TrainSample.group`).
        pad_before: voxels of padding before the data on each spatial axis.
        padded: (D', H', W'), the padded grid; None: the image's own (no padding).
        ignore_index: the label of padded voxels.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    foreground: np.ndarray
    group: str = ""
    pad_before: tuple[int, int, int] = (0, 0, 0)
    padded: tuple[int, int, int] | None = None
    ignore_index: int = 255

    @property
    def spatial(self) -> tuple[int, int, int]:
        """(D', H', W'): the padded grid crops are drawn on."""
        return self.padded if self.padded is not None else tuple(int(v) for v in self.image.shape[1:])  # type: ignore[return-value]

    def patch(self, start: Sequence[int], size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The (C, *size) float32 image and (1, *size) uint8 label of the padded grid at `start`."""
        lo = [int(a) - b for a, b in zip(start, self.pad_before)]  # in the unpadded data
        inside = tuple(slice(max(l, 0), min(l + int(n), int(d))) for l, n, d in zip(lo, size, self.image.shape[1:]))
        if all(sl.start == l and sl.stop == l + int(n) for sl, l, n in zip(inside, lo, size)):
            return np.asarray(self.image[(slice(None), *inside)], dtype=np.float32), np.asarray(self.label[(slice(None), *inside)])
        image = np.zeros((self.image.shape[0], *(int(n) for n in size)), np.float32)
        label = np.full((1, *(int(n) for n in size)), self.ignore_index, np.uint8)
        dst = tuple(slice(sl.start - l, sl.stop - l) for sl, l in zip(inside, lo))
        image[(slice(None), *dst)] = self.image[(slice(None), *inside)]
        label[(slice(None), *dst)] = self.label[(slice(None), *inside)]
        return image, label


def prepare_source(sample: TrainSample, patch_size: Sequence[int], ignore_index: int) -> PatchSource:
    """`sample` seen padded (image with 0, label with `ignore_index`) to at least `patch_size`,
    the padding split before/after, and its foreground indexed on that grid.

    Padded voxels are not anatomy, so they are ignored by the loss rather than called background.
    Image padding is 0, as in sliding-window inference. The arrays are kept as they are (a
    float16 or memory-mapped image is never copied whole).
    """
    spatial = [int(v) for v in sample.image.shape[1:]]
    pads = [max(int(p) - s, 0) for p, s in zip(patch_size, spatial)]
    before = tuple(p // 2 for p in pads)
    padded = tuple(s + p for s, p in zip(spatial, pads))
    image = sample.image if sample.image.dtype in (np.float16, np.float32) else np.asarray(sample.image, np.float32)
    label = np.asarray(sample.label, dtype=np.uint8)
    lab = label[0]
    coords = np.nonzero((lab >= 1) & (lab != ignore_index))
    foreground = np.ravel_multi_index(tuple(c + b for c, b in zip(coords, before)), padded)
    del coords
    if np.prod(padded, dtype=np.int64) < 2**31:
        foreground = foreground.astype(np.int32)
    if foreground.size > MAX_FOREGROUND_INDEX:  # a CT's foreground can be 10^7 voxels
        keep = np.random.default_rng(np.random.SeedSequence(list(sample.case_id.encode()))).choice(
            foreground.size, MAX_FOREGROUND_INDEX, replace=False
        )
        foreground = foreground[np.sort(keep)]
    return PatchSource(sample.case_id, image, label, foreground, sample.group, before,  # type: ignore[arg-type]
                       padded if any(pads) else None, ignore_index)


def crop_start(
    source: PatchSource, patch_size: Sequence[int], fg_prob: float, rng: np.random.Generator
) -> tuple[int, int, int]:
    """Corner (z, y, x) of one crop: centred on a random foreground voxel with probability
    `fg_prob` (shifted to stay inside the volume), else uniform. An empty foreground falls back to
    a uniform crop (ASSFT, METHOD.md §4: the sampler must tolerate all-ignored pseudo-labels).
    """
    spatial = np.asarray(source.spatial)
    patch = np.asarray(patch_size)
    high = spatial - patch  # ≥ 0 after prepare_source
    use_fg = rng.random() < fg_prob
    if use_fg and source.foreground.size:
        centre = np.asarray(np.unravel_index(source.foreground[rng.integers(source.foreground.size)], spatial))
        start = np.clip(centre - patch // 2, 0, high)
    else:
        start = np.asarray([rng.integers(h + 1) for h in high])
    return int(start[0]), int(start[1]), int(start[2])


def augment(
    image: np.ndarray, label: np.ndarray, intensity: IntensityAugment, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random flips along each spatial axis (p = 0.5, same for image and label), intensity
    scale/shift jitter of the image and, with `IntensityAugment.NNUNET`, nnU-Net's intensity
    augmentations (`_nnunet_intensity`). Nothing moves voxels but the flips, so labels stay exact.

    Args:
        image: (C, D, H, W) float32 patch (not modified).
        label: (1, D, H, W) uint8 patch (not modified).
        intensity: the intensity augmentation (`TrainConfig.intensity_augment`).
        rng: the step's generator; every draw comes from it.

    Returns:
        (image, label), new arrays of the same shapes and dtypes.
    """
    axes = [a for a in range(3) if rng.random() < 0.5]
    scale = rng.uniform(1.0 - _SCALE_JITTER, 1.0 + _SCALE_JITTER)
    shift = rng.uniform(-_SHIFT_JITTER, _SHIFT_JITTER)
    if axes:
        flip = Flip(spatial_axis=axes)
        image = np.asarray(flip(image))
        label = np.asarray(flip(label))
    image = (image * np.float32(scale) + np.float32(shift)).astype(np.float32)
    if intensity is IntensityAugment.NNUNET:
        image = _nnunet_intensity(image, int(rng.integers(2**31)))
    return image, label


def _nnunet_intensity(image: np.ndarray, seed: int) -> np.ndarray:
    """nnU-Net's default intensity augmentations (Isensee et al. 2021, with its probabilities):
    Gaussian noise (p 0.1, σ up to 0.1 of the patch's s.d.), Gaussian blur (p 0.2, σ 0.5–1 voxel),
    brightness and contrast (p 0.15 each, ×0.75–1.25, contrast about the mean within the range),
    simulated low resolution (p 0.25, zoom 0.5–1) and gamma (p 0.3, 0.7–1.5, mean and s.d. kept).

    Args:
        image: (C, D, H, W) float32 patch.
        seed: seeds MONAI's random transforms, so the result is a pure function of the step.

    Returns:
        (C, D, H, W) float32.
    """
    transforms = Compose(
        [
            RandGaussianNoise(prob=0.1, std=0.1 * float(image.std())),
            RandGaussianSmooth(prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            RandScaleIntensityFixedMean(prob=0.15, factors=0.25, fixed_mean=False),
            RandScaleIntensityFixedMean(prob=0.15, factors=0.25, fixed_mean=True, preserve_range=True),
            RandSimulateLowResolution(prob=0.25, zoom_range=(0.5, 1.0)),
            RandAdjustContrast(prob=0.3, gamma=(0.7, 1.5), retain_stats=True),
        ]
    )
    transforms.set_random_state(seed=seed)
    out = transforms(image)
    return np.asarray(out.numpy() if hasattr(out, "numpy") else out, dtype=np.float32)


def sample_batch(
    sources: Sequence[PatchSource],
    batch_size: int,
    patch_size: Sequence[int],
    fg_prob: float,
    augmentation: IntensityAugment | None,
    rng: np.random.Generator,
    *,
    by_group: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `batch_size` patches (cases with replacement) from `sources`.

    With `by_group`, each patch first draws a group (`PatchSource.group`, e.g. a site) uniformly,
    then a case of it, so a group with few cases is drawn as often as one with many.
    `augmentation` None draws patches as they are; otherwise `augment` with that intensity part.

    Returns:
        images: (B, C, *patch_size) float32; labels: (B, 1, *patch_size) uint8.
    """
    groups = sorted({s.group for s in sources}) if by_group else []
    images, labels = [], []
    for _ in range(batch_size):
        if len(groups) > 1:
            group = groups[int(rng.integers(len(groups)))]
            members = [s for s in sources if s.group == group]
            src = members[int(rng.integers(len(members)))]
        else:
            src = sources[int(rng.integers(len(sources)))]
        z, y, x = crop_start(src, patch_size, fg_prob, rng)
        img, lab = src.patch((z, y, x), patch_size)
        if augmentation is not None:
            img, lab = augment(img, lab, augmentation, rng)
        images.append(np.ascontiguousarray(img))
        labels.append(np.ascontiguousarray(lab))
    return np.stack(images), np.stack(labels)
