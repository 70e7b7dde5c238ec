"""Tiny synthetic tasks and fixed networks for trainer tests (made in the test, never shipped)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.networks.nets import UNet
from torch import nn

from assft_core.data.records import PreprocessedCase
from assft_core.train.data import TrainSample


def cube_sample(case_id: str, seed: int, size: int = 24, half: int = 4) -> TrainSample:
    """A bright cube (class 1) at a random place in Gaussian noise: image (1, s, s, s), label (1, s, s, s)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 0.3, (1, size, size, size)).astype(np.float32)
    label = np.zeros((1, size, size, size), np.uint8)
    c = rng.integers(half + 1, size - half - 1, 3)
    label[0, c[0] - half : c[0] + half, c[1] - half : c[1] + half, c[2] - half : c[2] + half] = 1
    image[label > 0] += 1.0
    return TrainSample(case_id, image, label)


def tiny_unet(seed: int = 0, out_channels: int = 2) -> nn.Module:
    """A two-level BatchNorm MONAI UNet, seeded."""
    torch.manual_seed(seed)
    return UNet(
        spatial_dims=3, in_channels=1, out_channels=out_channels, channels=(4, 8), strides=(2,), num_res_units=1, norm="batch"
    )


class ThresholdNet(nn.Module):
    """Fixed 1×1×1 convolution: class 1 where intensity > 0.75, else class 0 (an oracle for boxes;
    `write_box_scan` normalises to body ≈ 0.5, box ≈ 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1] = 20.0
            self.conv.bias[1] = -15.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def identity_case(sample: TrainSample, site: str = "A") -> PreprocessedCase:
    """A PreprocessedCase whose preprocessed grid is its native grid (1 mm, identity affine)."""
    shape = tuple(int(s) for s in sample.image.shape[1:])
    return PreprocessedCase(
        case_id=sample.case_id,
        image=sample.image,
        label=sample.label,
        affine=np.eye(4),
        spacing_mm=(1.0, 1.0, 1.0),
        native_shape=shape,  # type: ignore[arg-type]
        native_affine=np.eye(4),
        content_hash=sample.case_id,
        site=site,
    )


def write_box_scan(folder: Path, name: str, affine: np.ndarray, shape: tuple[int, int, int] = (30, 26, 14)) -> tuple[Path, Path]:
    """A scan (body 50, bright box 100, air 0) and its box label as NIfTI; returns (image, label) paths."""
    img = np.zeros(shape, np.float32)
    img[3:-3, 3:-3, 2:-2] = 50.0
    lab = np.zeros(shape, np.uint8)
    lab[8:20, 7:17, 4:10] = 1
    img[lab > 0] = 100.0
    folder.mkdir(parents=True, exist_ok=True)
    ip, lp = folder / f"{name}_0000.nii.gz", folder / f"{name}_label.nii.gz"
    nib.save(nib.Nifti1Image(img, affine), str(ip))
    nib.save(nib.Nifti1Image(lab, affine), str(lp))
    return ip, lp
