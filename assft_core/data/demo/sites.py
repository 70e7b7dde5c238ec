"""Site profiles of the demo corpus: how each simulated scanner/protocol turns anatomy into an image.

The source site is a plain T1. The four target sites follow the calibrated set of DATA.md, each
a different kind of domain shift:

- A: strong multiplicative bias field (smooth degree-3 polynomial, exponentiated) + noise;
- B: T2-like inverted contrast (CSF > GM > WM) + noise;
- C: 3x thick slices through-plane (axis Z, slab-averaged after in-plane blur), stored with the
  thick spacing so preprocessing has to resample it, + mild noise;
- D: low contrast + gamma + heavy noise.

Noise is Rician (magnitude MRI). Intensities end in int16 "scanner units" with a random gain per
case, as real scans have no fixed scale. Source: ASSFT Studio DATA.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import GaussianSmooth, RandBiasField, RandRicianNoise

from assft_core.data.demo.anatomy import voxel_spacing_mm
from assft_core.data.demo.plan import Site

@dataclass(frozen=True)
class SiteProfile:
    """Acquisition of one site (intensities on the template's [0, 1] T1 scale before the gain).

    Attributes:
        description: one line for the corpus README.
        invert: T2-like contrast, intensity 1.1 - T1 inside the head (CSF > GM > WM).
        contrast: (offset, gain) applied inside the head, or None; gain < 1 lowers contrast.
        gamma_range: exponent drawn uniformly in this range and applied to intensities, or None.
        bias_coeff: Legendre coefficients of the log bias field drawn in ±this (0 = no field).
        slab: slices averaged into one through-plane (axis Z); 1 = native slices.
        blur_mm: in-plane Gaussian blur sigma in mm before slab averaging (0 = none).
        noise_std: Rician noise sigma (template scale, white matter ~0.84).
    """

    description: str
    invert: bool = False
    contrast: tuple[float, float] | None = None
    gamma_range: tuple[float, float] | None = None
    bias_coeff: float = 0.0
    slab: int = 1
    blur_mm: float = 0.0
    noise_std: float = 0.015


SITE_PROFILES: dict[Site, SiteProfile] = {
    Site.SOURCE: SiteProfile("plain T1, little noise"),
    Site.A: SiteProfile("T1 with a strong bias field and noise", bias_coeff=0.3, noise_std=0.05),
    Site.B: SiteProfile("T2-like inverted contrast (CSF > GM > WM)", invert=True, noise_std=0.03),
    Site.C: SiteProfile("T1 with 3x thick slices (through-plane Z) and blur", slab=3, blur_mm=1.5, noise_std=0.02),
    Site.D: SiteProfile(
        "T1 with low contrast, gamma and heavy noise", contrast=(0.35, 0.45), gamma_range=(1.5, 2.0), noise_std=0.09
    ),
}

# Range of the random scanner gain: [0, 1] template intensities -> int16 scanner units.
GAIN_RANGE = (700.0, 1300.0)
# T1 below which a voxel fades into the stripped background; scales the head weight (see _head_weight).
_HEAD_T1 = 0.2


def acquire(
    t1: np.ndarray, label: np.ndarray, affine: np.ndarray, site: Site, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image one virtual subject at `site`.

    Args:
        t1: (X, Y, Z) float32 subject T1 in [0, 1] (RAS).
        label: (X, Y, Z) uint8 subject classes.
        affine: (4, 4) voxel -> world (RAS, mm) of `t1`.
        site: which site profile to apply.
        rng: the case's random generator (same state, same image).

    Returns:
        `image`: (X, Y, Z') int16 scanner units; `label`: (X, Y, Z') uint8; `affine`: (4, 4) of the
        stored grid. Z' = ceil(Z / slab) for site C (thick slices), else Z.
    """
    p = SITE_PROFILES[site]
    x = t1.astype(np.float32)
    affine = np.array(affine, dtype=np.float64)  # the caller's (possibly read-only) affine is never returned
    head = _head_weight(x)
    if p.invert:
        x = head * (1.1 - x)
    if p.contrast is not None:
        x = head * (p.contrast[0] + p.contrast[1] * x)
    if p.gamma_range is not None:
        x = np.power(np.clip(x, 0.0, None), rng.uniform(*p.gamma_range)).astype(np.float32)
    if p.bias_coeff > 0:
        bias = RandBiasField(degree=3, coeff_range=(-p.bias_coeff, p.bias_coeff), prob=1.0)
        bias.set_random_state(seed=int(rng.integers(2**31)))
        x = np.asarray(bias(torch.from_numpy(x[None]))[0], dtype=np.float32)
    spacing = voxel_spacing_mm(affine)
    if p.blur_mm > 0:
        sigma = [p.blur_mm / s for s in spacing[:2]] + [0.0]
        x = np.asarray(GaussianSmooth(sigma=sigma)(torch.from_numpy(x[None]))[0], dtype=np.float32)
    if p.slab > 1:
        x, label, affine = _thick_slices(x, label, affine, p.slab)
    noise = RandRicianNoise(prob=1.0, std=p.noise_std, sample_std=False)
    noise.set_random_state(seed=int(rng.integers(2**31)))
    x = np.asarray(noise(torch.from_numpy(x[None]))[0], dtype=np.float32)
    gain = rng.uniform(*GAIN_RANGE)
    image = np.clip(np.rint(x * gain), 0, np.iinfo(np.int16).max).astype(np.int16)
    return image, label, affine


def _head_weight(t1: np.ndarray) -> np.ndarray:
    """(X, Y, Z) weight in [0, 1]: 1 inside the head, fading to 0 with the stripped T1's rim.

    Contrast changes are multiplied by it so the background stays dark and the rim stays smooth.
    """
    return np.clip(t1 / _HEAD_T1, 0.0, 1.0).astype(np.float32)


def _thick_slices(
    x: np.ndarray, label: np.ndarray, affine: np.ndarray, slab: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average every `slab` slices along Z into one thick slice.

    The image is the slab mean (partial volume, as a thick acquisition integrates it); the label
    is the slab's centre slice (nearest neighbour), and the affine's Z column is `slab` times
    longer with its origin moved to the first slab's centre. Z is zero-padded to a multiple of `slab`.
    """
    pad = (-x.shape[2]) % slab
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (0, pad)))
        label = np.pad(label, ((0, 0), (0, 0), (0, pad)))
    nz = x.shape[2] // slab
    thick = x.reshape(x.shape[0], x.shape[1], nz, slab).mean(axis=3).astype(np.float32)
    centre = slab // 2
    thick_label = np.ascontiguousarray(label[:, :, centre::slab][:, :, :nz])
    out = affine.copy()
    out[:3, 2] = affine[:3, 2] * slab
    out[:3, 3] = affine[:3, 3] + affine[:3, 2] * centre
    return thick, thick_label, out
