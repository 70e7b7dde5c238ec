"""The tiny task shared by the pytest process and the torchrun workers (tests/distributed).

The equality test's network is a MONAI UNet without normalisation layers: BatchNorm statistics
of two per-rank batches differ from those of one big batch (SyncBatchNorm, which fixes that,
runs on GPUs only), and a convolution bias in front of Instance/GroupNorm has a zero gradient
that AdamW turns into ±lr steps of float noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assft_core.config import InferenceConfig, TrainConfig
from assft_core.data.records import PreprocessedCase
from assft_core.models.card import ModelCard
from assft_core.models.loaded import save_model
from assft_core.models.registry import get_backbone
from assft_core.query.table import ScoreTable
from assft_core.train.data import TrainData
from tests.train.factories import cube_sample

STEPS = 3
PATCH = (8, 8, 8)
NORM_FREE_UNET = {"channels": (4, 8), "strides": (2,), "num_res_units": 1, "norm": None}
# One window per scoring case (cases are at most 16³).
SCORING_INFER = InferenceConfig(roi_size=(16, 16, 16), sw_batch_size=1, device="cpu")


def write_model(folder: Path, seed: int = 0) -> Path:
    """A seeded, normalisation-free two-level UNet (1 channel in, 2 classes) saved as a model folder."""
    import torch

    torch.manual_seed(seed)
    network = get_backbone("unet").make(1, 2, NORM_FREE_UNET)
    card = ModelCard(
        backbone="unet", in_channels=1, classes={0: "background", 1: "cube"}, roi_size=PATCH,
        backbone_kwargs=NORM_FREE_UNET,
    )
    return save_model(network, card, folder)


def task_data() -> TrainData:
    """Two labelled cubes (one smaller than the patch, so padded with ignore) and one pseudo-label
    with an ignored slab: ranks keep different numbers of voxels, which the CE weighting must fix."""
    labelled = [cube_sample("l0", 0, size=14, half=3), cube_sample("l1", 1, size=6, half=1)]
    pseudo = cube_sample("u0", 10, size=14, half=3)
    pseudo.label[0, :, :, :5] = 255
    return TrainData(labelled, [pseudo])


def train_cfg(batch: int, unlabelled_batch: int) -> TrainConfig:
    """CPU settings of the equality run; `batch` is per process."""
    return TrainConfig(
        steps=STEPS, patch_size=PATCH, batch_size=batch, unlabelled_batch_size=unlabelled_batch, lr=1e-2,
        checkpoint_every=STEPS, device="cpu", seed=3,
    )


def scoring_cases(n: int = 3) -> list[PreprocessedCase]:
    """`n` small random volumes of different sizes on a 2 mm grid (3 cases: shards of 2 and 1)."""
    rng = np.random.default_rng(7)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    cases = []
    for i in range(n):
        shape = (12 + 2 * (i % 3), 12, 14)
        cases.append(
            PreprocessedCase(
                case_id=f"case{i}", image=rng.normal(0.5, 0.3, (1, *shape)).astype(np.float32), label=None,
                affine=affine, spacing_mm=(2.0, 2.0, 2.0), native_shape=shape, native_affine=affine,
                content_hash=f"h{i}", site="AB"[i % 2],
            )
        )
    return cases


def assert_tables_equal(a: ScoreTable, b: ScoreTable) -> None:
    """Same cases in the same order, same availability, and every score and stored map equal."""
    assert a.case_ids == b.case_ids and a.layers == b.layers and a.model_tag == b.model_tag
    assert vars(a.availability) == vars(b.availability)
    np.testing.assert_array_equal(a.kl, b.kl)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.class_entropy, b.class_entropy)
    for name in ("asd", "confidence", "mean_entropy", "fg_fraction"):
        np.testing.assert_array_equal(a.column(name), b.column(name))
    assert [r.site for r in a.rows] == [r.site for r in b.rows]
    assert [r.cache_key for r in a.rows] == [r.cache_key for r in b.rows]
    for cid in a.case_ids:
        ma, mb = a.case_arrays(cid), b.case_arrays(cid)
        np.testing.assert_array_equal(ma.argmax, mb.argmax)
        np.testing.assert_array_equal(ma.entropy, mb.entropy)
        np.testing.assert_array_equal(ma.affine, mb.affine)
