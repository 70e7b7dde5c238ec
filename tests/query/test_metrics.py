"""Query metrics against hand computations and independent implementations (METHOD.md §1–§2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from assft_core.config import QueryConfig
from assft_core.models.outputs import NormMoments
from assft_core.models.source_stats import floored_source_var
from digital_ball import ball_kernel
from assft_core.query import metrics
from assft_core.query.metrics import (
    class_rois,
    cosine_distance_to_set,
    dilate_ball,
    grown_bounding_box,
    gaussian_kl,
    knowledge_gap,
    layer_kl,
    percentile_rank,
    roi_uncertainty,
    voxel_entropy,
)

CFG = QueryConfig()


def h2(p: float) -> float:
    """Binary entropy normalised by log 2 (K = 2)."""
    return -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2)


def test_gaussian_kl_closed_form_and_torch_distributions():
    # Hand: μx=1, σ²x=4, μs=0, σ²s=1 → ½ log(1/4) + (4 + 1)/2 − ½.
    kl = gaussian_kl(torch.tensor([1.0, 0.0]), torch.tensor([4.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert kl[0].item() == pytest.approx(0.5 * math.log(0.25) + 2.5 - 0.5, rel=1e-12)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-15)
    mu_x, var_x = torch.tensor([0.3, -2.0, 5.0]), torch.tensor([0.5, 2.0, 0.01])
    mu_s, var_s = torch.tensor([0.0, 1.0, 4.0]), torch.tensor([1.5, 0.2, 3.0])
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu_x.double(), var_x.double().sqrt()),
        torch.distributions.Normal(mu_s.double(), var_s.double().sqrt()),
    )
    torch.testing.assert_close(gaussian_kl(mu_x, var_x, mu_s, var_s), ref)


def test_source_var_floor_and_layer_kl_from_moments():
    var_src = torch.tensor([1.0, 2.0, 1e-9])
    floored = floored_source_var(var_src.double(), CFG)
    # median 1.0 → floor max(1e-5, 1e-3) = 1e-3 lifts only the dead channel.
    torch.testing.assert_close(floored, torch.tensor([1.0, 2.0, 1e-3], dtype=torch.float64))
    # Channel values {1, 3} and {0, 0.02}: μ = (2, 0.01), σ² = (1, 1e-4).
    x = torch.tensor([[1.0, 3.0], [0.0, 0.02]], dtype=torch.float64)
    m = NormMoments(sum=x.sum(1), sumsq=(x * x).sum(1), n=2)
    mu_s, var_s = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1e-9])
    got = layer_kl(m, mu_s, var_s, CFG)
    # Source floor max(1e-5, 1e-3 · median(1, 1e-9) = 5e-4) = 5e-4; the case σ² 1e-4 gets it too.
    kl0 = 0.5 * math.log(1.0 / 1.0) + (1.0 + 4.0) / 2.0 - 0.5
    kl1 = 0.5 * math.log(1.0) + (5e-4 + 1e-4) / (2 * 5e-4) - 0.5
    assert got == pytest.approx((kl0 + kl1) / 2, rel=1e-6)


def test_case_variance_floor_is_phi_not_the_smallest_source_variance():
    # No source channel sits at the floor: φ_s = max(1e-5, 1e-3 · median(1, 2, 4) = 2e-3) = 2e-3,
    # while the smallest floored source variance is 1.0. A case channel that is constant (σ²_x = 0)
    # must be floored at φ_s = 2e-3 (METHOD.md §1), not at 1.0.
    x = torch.tensor([[0.5, 0.5], [1.0, 3.0], [2.0, 2.0]], dtype=torch.float64)
    m = NormMoments(sum=x.sum(1), sumsq=(x * x).sum(1), n=2)
    mu_s, var_s = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 2.0, 4.0])
    phi = 2e-3

    def kl(mu: float, var: float, vs: float) -> float:
        return 0.5 * math.log(vs / var) + (var + mu * mu) / (2 * vs) - 0.5

    expected = (kl(0.5, phi, 1.0) + kl(2.0, 1.0, 2.0) + kl(2.0, phi, 4.0)) / 3
    assert layer_kl(m, mu_s, var_s, CFG) == pytest.approx(expected, rel=1e-9)


def test_scoring_cache_key_carries_the_metrics_version(monkeypatch):
    from assft_core.query import scoring

    before = scoring._case_key("model", "content", CFG)
    monkeypatch.setattr(scoring, "METRICS_VERSION", scoring.METRICS_VERSION + 1)
    assert scoring._case_key("model", "content", CFG) != before


def test_knowledge_gap_median_over_pool_only():
    kl = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [100.0, 1000.0]])
    pool = np.array([True, True, True, False])  # the last row is a test case
    # medians over the pool: 2 and 20, so the 50×-larger second layer weighs the same.
    np.testing.assert_allclose(knowledge_gap(kl, pool), [0.5, 1.0, 1.5, 50.0])
    # Had the test row counted, the medians would be 2.5 and 25.
    np.testing.assert_allclose(knowledge_gap(kl, np.ones(4, bool))[:3], [0.4, 0.8, 1.2])
    np.testing.assert_allclose(knowledge_gap(np.zeros((3, 0)), np.ones(3, bool)), [1, 1, 1])


def test_ball_kernel_and_dilation_match_scipy():
    assert int(ball_kernel(2).sum()) == 33
    assert int(ball_kernel(1).sum()) == 7
    rng = np.random.default_rng(0)
    masks = rng.random((2, 12, 10, 9)) > 0.97
    masks[0, 0, 0, 0] = True  # a seed on the border: outside counts as background
    for radius in (1, 2, 3, 4):  # the run decomposition is exact for any radius
        got = dilate_ball(torch.from_numpy(masks), radius).numpy()
        struct = ball_kernel(radius).numpy() > 0
        for i in range(2):
            np.testing.assert_array_equal(got[i], ndimage.binary_dilation(masks[i], structure=struct))
    np.testing.assert_array_equal(dilate_ball(torch.from_numpy(masks), 0).numpy(), masks)


def test_dilating_bit_planes_dilates_every_bit_alone():
    rng = np.random.default_rng(1)
    planes = rng.random((8, 9, 11, 10)) > 0.96
    bits = torch.from_numpy((planes * (1 << np.arange(8))[:, None, None, None]).sum(0).astype(np.uint8))[None]
    got = dilate_ball(bits, 2)[0].numpy()
    assert got.dtype == np.uint8
    for j in range(8):
        np.testing.assert_array_equal((got >> j) & 1 == 1, dilate_ball(torch.from_numpy(planes[j])[None], 2)[0].numpy())


def test_grown_bounding_box_is_the_box_of_the_true_voxels():
    mask = torch.zeros(10, 12, 9, dtype=torch.bool)
    assert grown_bounding_box(mask, 2) is None
    mask[3, 7, 1] = mask[5, 2, 4] = True
    assert grown_bounding_box(mask, 0) == (slice(3, 6), slice(2, 8), slice(1, 5))
    assert grown_bounding_box(mask, 2) == (slice(1, 8), slice(0, 10), slice(0, 7))  # clipped at 0


def _reference_roi_uncertainty(probs: torch.Tensor, r: int) -> dict[str, object]:
    """ASD, class entropies and c as METHOD.md §2 writes them: each Ω_k dilated alone over the
    whole volume (scipy), means in float64 with numpy; H from `voxel_entropy` (tested above)."""
    k = probs.shape[0]
    ent = voxel_entropy(probs).numpy().astype(np.float64)
    labels = probs.argmax(0).numpy()
    p_max = probs.max(0).values.numpy().astype(np.float64)
    struct = ball_kernel(r).numpy() > 0
    rois = [ndimage.binary_dilation(labels == c, structure=struct) for c in range(1, k)]
    class_entropy = np.array([ent[m].mean() if m.any() else np.nan for m in rois])
    union = np.any(rois, axis=0)
    return {
        "class_entropy": class_entropy,
        "asd": float(np.nanmean(class_entropy)),
        "confidence": float(p_max[union].mean()),
        "mean_entropy": float(ent.mean()),
        "fg_fraction": float((labels > 0).mean()),
        "argmax": labels.astype(np.uint8),
    }


@pytest.mark.parametrize(("k", "shape"), [(3, (14, 12, 10)), (12, (9, 16, 11))])  # 11 classes: two bit planes
def test_roi_uncertainty_matches_the_per_class_reference(k: int, shape: tuple[int, int, int]):
    gen = torch.Generator().manual_seed(k)
    logits = torch.randn((k, *shape), generator=gen) * 3.0
    logits[0, :, :, : shape[2] // 2] += 6.0  # half the volume background, so the box is a part of it
    logits[1:, 0, 0, -1] += 30.0  # a structure at the corner: the grown box is clipped there
    probs = torch.softmax(logits, 0)
    res = roi_uncertainty(probs, CFG)
    ref = _reference_roi_uncertainty(probs, CFG.roi_dilation_voxels)
    assert not res.used_fallback and np.isfinite(res.class_entropy).sum() >= 2
    np.testing.assert_allclose(res.class_entropy, ref["class_entropy"], rtol=1e-12)
    for name in ("asd", "confidence", "mean_entropy", "fg_fraction"):
        assert getattr(res, name) == pytest.approx(ref[name], rel=1e-12), name
    np.testing.assert_array_equal(res.argmax, ref["argmax"])


@pytest.mark.parametrize("num_classes", [4, 12])  # one bit plane; two (the union kept as a volume)
def test_class_rois_sizes_sums_and_union(num_classes: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(metrics, "_SLAB_ELEMENTS", 2 * 7 * 7)  # several slabs of 2 slices
    labels = torch.zeros(7, 7, 7, dtype=torch.uint8)
    top = num_classes - 1
    labels[3, 3, 3], labels[3, 3, 4], labels[1, 1, 1] = 1, 3, top  # class 2 absent; Ω_1 and Ω_3 overlap
    values = torch.arange(7**3, dtype=torch.float32).view(7, 7, 7)
    weights = torch.rand(7, 7, 7, generator=torch.Generator().manual_seed(0))
    rois = class_rois(labels, values, num_classes, 1, union_values=weights)
    struct = ball_kernel(1).numpy() > 0
    masks = [ndimage.binary_dilation(labels.numpy() == c, structure=struct) for c in range(1, num_classes)]
    np.testing.assert_array_equal(rois.sizes.numpy(), [m.sum() for m in masks])
    np.testing.assert_array_equal(rois.sums.numpy(), [values.numpy()[m].astype(np.float64).sum() for m in masks])
    union = np.any(masks, axis=0)
    assert rois.union_voxels == union.sum()
    assert rois.union_sum == pytest.approx(weights.numpy()[union].astype(np.float64).sum(), rel=1e-12)
    assert class_rois(labels, values, num_classes, 1).union_sum == 0.0


def test_voxel_maps_in_slabs_equal_the_whole_volume_formulas(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(metrics, "_SLAB_ELEMENTS", 3 * 5 * 6 * 2)  # 2 slices a slab, the last one short
    probs = torch.randn(3, 7, 5, 6, generator=torch.Generator().manual_seed(1)).softmax(0)
    probs[:, 0, 0, 0] = torch.tensor([0.4, 0.4, 0.2])  # a tie: the first maximum wins, as argmax
    maps = metrics.voxel_maps(probs)
    whole = (torch.special.xlogy(probs, probs).sum(0) / -math.log(3)).clamp(0.0, 1.0)
    assert maps.labels.dtype == torch.uint8 and maps.labels[0, 0, 0] == 0
    np.testing.assert_array_equal(maps.labels.numpy(), probs.argmax(0).numpy())
    np.testing.assert_array_equal(maps.p_max.numpy(), probs.amax(0).numpy())
    np.testing.assert_allclose(maps.entropy.numpy(), whole.numpy(), rtol=0, atol=1e-7)
    assert maps.entropy_sum == pytest.approx(float(whole.double().sum()), rel=1e-12)


def test_voxel_entropy_bounds():
    probs = torch.zeros(3, 2, 1, 1)
    probs[:, 0] = 1.0 / 3
    probs[1, 1] = 1.0
    ent = voxel_entropy(probs)
    assert ent[0, 0, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert ent[1, 0, 0].item() == 0.0
    with pytest.raises(ValueError):
        voxel_entropy(torch.ones(1, 2, 2, 2))


def _single_voxel_case(shape: tuple[int, int, int], centre: tuple[int, int, int]) -> torch.Tensor:
    """K=2: one foreground voxel (p1=0.6) at `centre`, its 32 ball neighbours at p0=0.55, the rest p0=0.99."""
    p0 = torch.full(shape, 0.99)
    ball = ball_kernel(2) > 0
    d, h, w = centre
    region = p0[d - 2 : d + 3, h - 2 : h + 3, w - 2 : w + 3]
    region[ball] = 0.55
    p0[centre] = 0.4
    return torch.stack([p0, 1 - p0])


def test_asd_on_foreground_only_for_a_scan_999_background():
    probs = _single_voxel_case((32, 32, 32), (16, 16, 16))
    res = roi_uncertainty(probs, CFG)
    assert res.fg_fraction == pytest.approx(1 / 32**3)  # 0.003% foreground
    assert not res.used_fallback
    assert res.asd == pytest.approx((h2(0.6) + 32 * h2(0.55)) / 33, rel=1e-5)
    assert res.confidence == pytest.approx((0.6 + 32 * 0.55) / 33, rel=1e-5)
    assert res.class_entropy == pytest.approx([res.asd])
    # The whole-volume mean is dominated by background, unlike ASD.
    assert res.mean_entropy == pytest.approx((h2(0.6) + 32 * h2(0.55) + (32**3 - 33) * h2(0.99)) / 32**3, rel=1e-4)
    assert res.argmax.dtype == np.uint8 and res.entropy.dtype == np.float16


def test_asd_size_invariance_when_padded_to_twice_the_size():
    small = _single_voxel_case((16, 16, 16), (8, 8, 8))
    bg = torch.zeros(2, 16, 16, 16)
    bg[0] = 0.99
    bg[1] = 0.01
    padded = torch.cat([small, bg], dim=1)  # (2, 32, 16, 16): twice the voxels, same anatomy
    a, b = roi_uncertainty(small, CFG), roi_uncertainty(padded, CFG)
    assert b.asd == pytest.approx(a.asd, rel=1e-6)
    assert b.confidence == pytest.approx(a.confidence, rel=1e-6)
    assert b.mean_entropy < a.mean_entropy  # the whole-volume entropy is not size invariant


def test_asd_is_class_averaged():
    # Class 1: a large uncertain block; class 2: one voxel. Class-averaged, not voxel-pooled.
    probs = torch.zeros(3, 20, 20, 20)
    probs[0] = 1.0
    probs[:, 2:12, 2:12, 2:12] = torch.tensor([0.0, 1.0, 0.0])[:, None, None, None]
    probs[:, 16, 16, 16] = torch.tensor([0.0, 0.0, 1.0])
    res = roi_uncertainty(probs, CFG)
    assert res.asd == pytest.approx(0.0, abs=1e-7)  # one-hot everywhere: zero entropy
    probs[:, 2:12, 2:12, 2:12] = torch.tensor([0.2, 0.6, 0.2])[:, None, None, None]
    res = roi_uncertainty(probs, CFG)
    h_block = -(0.2 * math.log(0.2) * 2 + 0.6 * math.log(0.6)) / math.log(3)
    block_roi = ndimage.binary_dilation(np.pad(np.ones((10, 10, 10), bool), 2), ball_kernel(2).numpy() > 0).sum()
    assert res.class_entropy[0] == pytest.approx(h_block * 1000 / block_roi, rel=1e-5)
    assert res.class_entropy[1] == pytest.approx(0.0, abs=1e-7)
    assert res.asd == pytest.approx(res.class_entropy.mean(), rel=1e-9)


def test_adaptive_fallback_when_nothing_is_predicted():
    n = 10 * 10 * 10
    p_fg = torch.linspace(0.0, 0.4, n)  # every voxel argmax background
    probs = torch.stack([1 - p_fg, p_fg]).view(2, 10, 10, 10)
    res = roi_uncertainty(probs, CFG)
    assert res.used_fallback and res.fg_fraction == 0.0
    top = p_fg.double()[-10:]  # q = 1% of 1000 voxels: the 10 highest 1 − p0
    expected = np.mean([h2(float(p)) for p in top])
    assert res.asd == pytest.approx(expected, rel=1e-5)
    assert np.isnan(res.class_entropy).all()


def test_percentile_rank_ties_averaged():
    np.testing.assert_allclose(percentile_rank(np.array([3.0, 1.0, 3.0, 2.0])), [3.5 / 4, 1 / 4, 3.5 / 4, 2 / 4])
    np.testing.assert_allclose(percentile_rank(np.ones(3)), [2 / 3] * 3)
    assert percentile_rank(np.zeros(0)).size == 0


def test_cosine_distance_to_set():
    z = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    s = np.array([[1.0, 0.0], [0.0, -1.0]])
    div, nearest = cosine_distance_to_set(z, s)
    np.testing.assert_allclose(div, [0.0, 1.0, 1.0])
    assert nearest[0] == 0
    with pytest.raises(ValueError):
        cosine_distance_to_set(z, np.zeros((0, 2)))


def test_class_rois_match_scipy_dilation_on_random_predictions():
    # Independent check of the cropped conv3d path, foreground touching the borders included.
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1, (3, 14, 12, 10))
    logits[0] += 2.5  # mostly background
    logits[1, 0, 0, 0] = logits[2, -1, -1, -1] = 20.0
    probs = torch.softmax(torch.from_numpy(logits), 0).float()
    res = roi_uncertainty(probs, CFG)
    p = probs.double().numpy()
    ent = -(p * np.log(p)).sum(0) / math.log(3)
    labels = p.argmax(0)
    struct = ball_kernel(2).numpy() > 0
    rois = [ndimage.binary_dilation(labels == k, structure=struct) for k in (1, 2)]
    np.testing.assert_allclose(res.class_entropy, [ent[r].mean() for r in rois], rtol=1e-5)
    union = rois[0] | rois[1]
    assert res.confidence == pytest.approx(p.max(0)[union].mean(), rel=1e-5)
