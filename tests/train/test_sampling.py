"""Patch crops by label: foreground centring, never on ignore, padding, purity in (seed, step)."""

from __future__ import annotations

import numpy as np

from assft_core.config import IntensityAugment
from assft_core.train.data import TrainSample
from assft_core.train.sampling import PatchSource, crop_start, prepare_source, sample_batch, step_rng


def _sample(shape: tuple[int, int, int] = (20, 20, 20)) -> TrainSample:
    return TrainSample("s", np.zeros((1, *shape), np.float32), np.zeros((1, *shape), np.uint8))


def test_foreground_crop_is_centred_on_the_only_foreground_voxel() -> None:
    s = _sample()
    s.label[0, 10, 9, 11] = 2
    s.label[0, 0:5, 0:5, 0:5] = 255  # ignore voxels are never foreground
    src = prepare_source(s, (8, 8, 8), 255)
    assert src.foreground.tolist() == [np.ravel_multi_index((10, 9, 11), (20, 20, 20))]
    for step in range(10):
        assert crop_start(src, (8, 8, 8), 1.0, step_rng(0, step, 0)) == (6, 5, 7)


def test_crop_near_the_border_stays_inside() -> None:
    s = _sample()
    s.label[0, 19, 0, 1] = 1
    src = prepare_source(s, (8, 8, 8), 255)
    assert crop_start(src, (8, 8, 8), 1.0, step_rng(0, 0, 0)) == (12, 0, 0)


def test_only_ignore_falls_back_to_uniform_crops() -> None:
    s = _sample()
    s.label[:] = 255
    src = prepare_source(s, (8, 8, 8), 255)
    assert src.foreground.size == 0
    starts = {crop_start(src, (8, 8, 8), 1.0, step_rng(0, k, 0)) for k in range(20)}
    assert len(starts) > 1 and all(0 <= v <= 12 for st in starts for v in st)


def test_small_volume_is_padded_with_ignore() -> None:
    s = _sample((5, 20, 6))
    s.label[0, 2, 10, 3] = 1
    s.image[0, 2, 10, 3] = 7.0
    src = prepare_source(s, (8, 8, 8), 255)
    assert src.spatial == (8, 20, 8) and src.image is s.image  # padded on the fly, never copied whole
    # Padding split before/after: 3 -> 1 + 2, 2 -> 1 + 1; the foreground is indexed on the padded grid.
    assert src.foreground.tolist() == [np.ravel_multi_index((3, 10, 4), (8, 20, 8))]
    img, lab = src.patch((0, 6, 0), (8, 8, 8))
    assert int((lab == 255).sum()) == 8 * 8 * 8 - 5 * 8 * 6 and lab[0, 3, 4, 4] == 1 and img[0, 3, 4, 4] == 7.0
    assert img.dtype == np.float32 and float(img[lab == 255].max()) == 0.0
    img, lab = sample_batch([src], 3, (8, 8, 8), 0.5, IntensityAugment.JITTER, step_rng(0, 0, 0))
    assert img.shape == (3, 1, 8, 8, 8) and lab.shape == (3, 1, 8, 8, 8) and lab.dtype == np.uint8


def test_virtual_padding_gives_the_patches_of_a_padded_copy() -> None:
    rng = np.random.default_rng(1)
    s = TrainSample("s", rng.normal(size=(2, 5, 9, 6)).astype(np.float32),
                    rng.integers(0, 3, size=(1, 5, 9, 6)).astype(np.uint8))
    src = prepare_source(s, (8, 8, 8), 255)
    widths = [(0, 0), (1, 2), (0, 0), (1, 1)]
    image, label = np.pad(s.image, widths), np.pad(s.label, widths, constant_values=255)
    assert np.array_equal(src.foreground, np.flatnonzero((label[0] >= 1) & (label[0] != 255)))
    for start in [(0, 0, 0), (0, 1, 0), (0, 0, 0)]:
        img, lab = src.patch(start, (8, 8, 8))
        z, y, x = start
        assert np.array_equal(img, image[:, z:z + 8, y:y + 8, x:x + 8])
        assert np.array_equal(lab, label[:, z:z + 8, y:y + 8, x:x + 8])


def test_batches_are_a_pure_function_of_seed_and_step() -> None:
    s = _sample()
    s.image[:] = np.random.default_rng(0).normal(size=s.image.shape)
    s.label[0, 5:9, 5:9, 5:9] = 1
    src = prepare_source(s, (8, 8, 8), 255)
    a = sample_batch([src], 2, (8, 8, 8), 0.5, IntensityAugment.JITTER, step_rng(3, 7, 0))
    b = sample_batch([src], 2, (8, 8, 8), 0.5, IntensityAugment.JITTER, step_rng(3, 7, 0))
    c = sample_batch([src], 2, (8, 8, 8), 0.5, IntensityAugment.JITTER, step_rng(3, 8, 0))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_flips_move_image_and_label_together() -> None:
    s = _sample((8, 8, 8))
    s.label[0, 1, 2, 3] = 1
    s.image[0, 1, 2, 3] = 5.0
    src = prepare_source(s, (8, 8, 8), 255)
    for step in range(8):
        img, lab = sample_batch([src], 1, (8, 8, 8), 0.0, IntensityAugment.JITTER, step_rng(0, step, 0))
        assert np.argmax(img[0, 0]) == np.argmax(lab[0, 0])


def test_a_group_balanced_draw_gives_a_small_group_its_share() -> None:
    # Three cases of site A, one of site C, told apart by their constant intensity.
    def source(value: float, group: str) -> PatchSource:
        image = np.full((1, 8, 8, 8), value, np.float32)
        return PatchSource(f"{group}{value}", image, np.zeros((1, 8, 8, 8), np.uint8), np.empty(0, np.int64), group)

    sources = [source(1.0, "A"), source(2.0, "A"), source(3.0, "A"), source(9.0, "C")]

    def share_of_c(by_group: bool) -> float:
        images, _ = sample_batch(sources, 400, (8, 8, 8), 0.0, None, step_rng(0, 0, 0), by_group=by_group)
        return float(np.mean(images[:, 0, 0, 0, 0] == 9.0))

    assert abs(share_of_c(False) - 0.25) < 0.07 and abs(share_of_c(True) - 0.5) < 0.07
    one_site = [PatchSource(s.case_id, s.image, s.label, s.foreground, "A") for s in sources]
    a = sample_batch(one_site, 20, (8, 8, 8), 0.0, None, step_rng(1, 0, 0), by_group=True)[0]
    b = sample_batch(one_site, 20, (8, 8, 8), 0.0, None, step_rng(1, 0, 0))[0]
    assert np.array_equal(a, b)  # one group: the same draws as by case


def test_nnunet_intensity_augmentation_is_pure_in_the_step_and_leaves_labels_exact() -> None:
    s = _sample((12, 12, 12))
    s.image[:] = np.random.default_rng(0).uniform(size=s.image.shape)
    s.label[0, 3:9, 3:9, 3:9] = 1
    src = prepare_source(s, (12, 12, 12), 255)
    draws = [sample_batch([src], 1, (12, 12, 12), 0.0, IntensityAugment.NNUNET, step_rng(0, k, 0)) for k in range(12)]
    again = sample_batch([src], 1, (12, 12, 12), 0.0, IntensityAugment.NNUNET, step_rng(0, 5, 0))
    assert np.array_equal(draws[5][0], again[0]) and np.array_equal(draws[5][1], again[1])
    jitter = [sample_batch([src], 1, (12, 12, 12), 0.0, IntensityAugment.JITTER, step_rng(0, k, 0)) for k in range(12)]
    # Same flips and labels as the jitter profile; the image differs on some steps (p < 1 per transform).
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(draws, jitter))
    changed = [not np.allclose(a[0], b[0]) for a, b in zip(draws, jitter)]
    assert any(changed) and all(d[0].dtype == np.float32 and d[0].shape == (1, 1, 12, 12, 12) for d in draws)
