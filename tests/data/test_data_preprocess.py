"""Preprocessing: exact geometry (round trip), intensity normalisation by hand, content-hash cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_factories import label, scan, write_nifti
from assft_core.config import Modality, MriNormalisation, PreprocessConfig
from assft_core.data import preprocess as pp
from assft_core.data.preprocess import invert_label, preprocess_case, preprocess_image
from assft_core.data.records import CaseRecord
from assft_core.errors import DataError

# Non-RAS (axes permuted and flipped: roughly PIL), anisotropic 1 x 3 x 2 mm, off-origin.
NATIVE_AFFINE = np.array([
    [0.0, 0.0, -2.0, 40.0],
    [-1.0, 0.0, 0.0, 12.0],
    [0.0, -3.0, 0.0, -7.0],
    [0.0, 0.0, 0.0, 1.0],
])


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask).mean(axis=0)
    return (affine @ np.append(idx, 1.0))[:3]


def _case(tmp_path: Path, img: np.ndarray, lab: np.ndarray, affine: np.ndarray) -> CaseRecord:
    return CaseRecord(
        "c1",
        (write_nifti(tmp_path / "c1.nii.gz", img, affine),),
        write_nifti(tmp_path / "c1_seg.nii.gz", lab, affine),
        site="A",
    )


def test_round_trip_to_finer_grid_is_exact(tmp_path: Path) -> None:
    shape = (20, 10, 12)
    lab = label(shape)
    lab[10:16, 2:8, 6:10] = 3
    cfg = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), divisor=8)
    case = preprocess_case(_case(tmp_path, scan(shape), lab, NATIVE_AFFINE), cfg)
    assert case.label is not None and case.image.shape[1:] == case.label.shape[1:]
    assert all(s % 8 == 0 for s in case.image.shape[1:])
    # Preprocessed grid is RAS: positive diagonal, target spacing.
    np.testing.assert_allclose(case.affine[:3, :3], np.eye(3), atol=1e-6)
    assert case.spacing_mm == pytest.approx((1.0, 1.0, 1.0))
    back = invert_label(case.label, case)
    assert back.shape == shape
    np.testing.assert_array_equal(back, lab)


def test_round_trip_to_coarser_grid_keeps_values_and_places(tmp_path: Path) -> None:
    shape = (24, 10, 12)
    lab = np.zeros(shape, np.uint8)
    lab[4:12, 2:6, 2:6] = 1
    lab[14:22, 5:9, 6:11] = 2
    cfg = PreprocessConfig(spacing_mm=(2.5, 2.5, 2.5), divisor=4)
    case = preprocess_case(_case(tmp_path, scan(shape), lab, NATIVE_AFFINE), cfg)
    back = invert_label(case.label, case)
    assert set(np.unique(back)) == {0, 1, 2}
    for k in (1, 2):
        # Where the class lies in mm, checked on the preprocessed grid with its own affine (MONAI's
        # MetaTensor) and after inversion, against the native label: a nearest-neighbour block edge
        # moves by at most half a coarse voxel (1.25 mm) per axis.
        native = _world_centroid(lab == k, NATIVE_AFFINE)
        assert np.abs(_world_centroid(case.label[0] == k, case.affine) - native).max() <= 1.25 + 1e-6
        # Back on the native grid, add half a native voxel along each world axis (2, 1, 3 mm voxels).
        slack = 1.25 + 0.5 * np.array([2.0, 1.0, 3.0]) + 1e-6
        assert np.all(np.abs(_world_centroid(back == k, NATIVE_AFFINE) - native) <= slack)
        dice = 2 * np.sum((back == k) & (lab == k)) / (np.sum(back == k) + np.sum(lab == k))
        assert dice > 0.7


def test_ct_window_crop_and_pad_by_hand(tmp_path: Path) -> None:
    img = np.full((20, 14, 12), -1000.0, np.float32)  # air
    img[5:15, 4:10, 4:8] = 0.0  # body, water
    img[6, 5, 5] = 500.0
    cfg = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), modality=Modality.CT, ct_window=(-1000.0, 1000.0), divisor=8)
    case = preprocess_image([write_nifti(tmp_path / "ct_0000.nii.gz", img)], cfg)
    assert case.case_id == "ct" and case.label is None
    # Body 10 x 6 x 4 cropped, then padded symmetrically to (16, 8, 8): offsets (3, 1, 2).
    assert case.image.shape == (1, 16, 8, 8)
    np.testing.assert_allclose(case.affine[:3, 3], [5 - 3, 4 - 1, 4 - 2])
    body = case.image[0, 3:13, 1:7, 2:6]
    assert body[1, 1, 1] == pytest.approx(0.75)  # 500 HU in [-1000, 1000] -> 0.75
    body_others = np.delete(body.ravel(), np.ravel_multi_index((1, 1, 1), body.shape))
    np.testing.assert_allclose(body_others, 0.5)  # water
    assert case.image[0, 0, 0, 0] == 0.0  # padding


def test_mri_percentile_scaling_matches_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    img = np.zeros((16, 16, 16), np.float32)
    img[2:14, 2:14, 2:14] = rng.gamma(2.0, 50.0, (12, 12, 12)) + 1.0
    cfg = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), mri_percentiles=(1.0, 99.0), divisor=4)
    case = preprocess_image([write_nifti(tmp_path / "mr.nii.gz", img)], cfg)
    fg = img[2:14, 2:14, 2:14]
    lo, hi = np.percentile(fg, [1.0, 99.0])
    expected = np.clip((fg - lo) / (hi - lo), 0.0, 1.0)
    assert case.image.shape == (1, 12, 12, 12)  # cropped to the non-zero box, already divisible
    np.testing.assert_allclose(case.image[0], expected, atol=1e-5)


@pytest.mark.parametrize("nonzero", [False, True])
def test_mri_zscore_matches_nnunet_and_monai(tmp_path: Path, nonzero: bool) -> None:
    from monai.transforms import NormalizeIntensity
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

    rng = np.random.default_rng(6)
    img = np.zeros((16, 16, 16), np.float32)
    img[2:14, 2:14, 2:14] = rng.gamma(2.0, 50.0, (12, 12, 12)) + 1.0
    img[6:9, 6:9, 6:9] = 0.0  # zeros inside the body box: counted by zscore, left alone by zscore_nonzero
    scheme = MriNormalisation.ZSCORE_NONZERO if nonzero else MriNormalisation.ZSCORE
    cfg = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), mri_normalisation=scheme, divisor=4)
    case = preprocess_image([write_nifti(tmp_path / "mr.nii.gz", img)], cfg)
    box = img[2:14, 2:14, 2:14]
    seg = np.where(box != 0, 0, -1)[None]
    nnunet = ZScoreNormalization(use_mask_for_norm=nonzero, intensityproperties={}).run(box[None].copy(), seg)
    monai = NormalizeIntensity(nonzero=nonzero, channel_wise=True)(box[None].copy())
    assert case.image.shape == (1, 12, 12, 12)
    np.testing.assert_allclose(case.image, nnunet, atol=1e-5)
    np.testing.assert_allclose(case.image, np.asarray(monai), atol=1e-5)
    assert (case.image[0][box == 0] == 0).all() == nonzero


def test_mri_zscore_body_equals_nnunet_crop_and_masked_zscore(tmp_path: Path) -> None:
    # nnU-Net with use_mask_for_norm: the mask is its crop's non-zero mask (any channel) with holes
    # filled, so zeros inside the body are normalised; zeros outside stay zero.
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

    rng = np.random.default_rng(8)
    img = np.zeros((2, 16, 16, 16), np.float32)
    img[0, 2:14, 2:14, 2:14] = rng.gamma(2.0, 50.0, (12, 12, 12)) + 1.0
    img[1, 3:13, 2:14, 2:14] = rng.gamma(3.0, 20.0, (10, 12, 12)) + 1.0
    img[:, 6:9, 6:9, 6:9] = 0.0  # a hole inside the body, in both channels
    paths = [write_nifti(tmp_path / f"mr_000{c}.nii.gz", img[c]) for c in range(2)]
    cfg = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), mri_normalisation=MriNormalisation.ZSCORE_BODY, divisor=4)
    case = preprocess_image(paths, cfg)
    data, seg, _ = crop_to_nonzero(img.copy())
    expected = np.stack([ZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(data[c].copy(), seg[0])
                         for c in range(2)])
    assert case.image.shape == expected.shape == (2, 12, 12, 12)
    np.testing.assert_allclose(case.image, expected, atol=1e-5)
    assert (case.image[:, 4:7, 4:7, 4:7] != 0).all()  # the hole (6:9 in the 2:14 box) was normalised


def test_mri_minmax_equals_nnunet_rescale_to_01_and_monai_scale_intensity(tmp_path: Path) -> None:
    from monai.transforms import ScaleIntensity
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import RescaleTo01Normalization

    rng = np.random.default_rng(7)
    img = np.zeros((16, 16, 16), np.float32)
    img[2:14, 2:14, 2:14] = rng.gamma(2.0, 50.0, (12, 12, 12)) + 30.0
    cfg = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), mri_normalisation=MriNormalisation.MINMAX, divisor=4)
    case = preprocess_image([write_nifti(tmp_path / "mr.nii.gz", img)], cfg)
    box = img[2:14, 2:14, 2:14][None]
    nnunet = RescaleTo01Normalization(use_mask_for_norm=False, intensityproperties={}).run(box.copy(), None)
    monai = ScaleIntensity(minv=0.0, maxv=1.0, channel_wise=True)(box.copy())
    np.testing.assert_array_equal(case.image, nnunet)  # the same float32 operations
    np.testing.assert_allclose(case.image, np.asarray(monai), atol=1e-6)
    assert case.image.min() == 0.0 and case.image.max() == 1.0


def test_mri_zscore_refuses_a_constant_channel_and_gets_its_own_cache_key(tmp_path: Path) -> None:
    img = np.zeros((8, 8, 8), np.float32)
    img[2:6, 2:6, 2:6] = 7.0
    path = write_nifti(tmp_path / "flat.nii.gz", img)
    cfg = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), mri_normalisation=MriNormalisation.ZSCORE_NONZERO, divisor=4)
    with pytest.raises(DataError, match="constant intensity"):
        preprocess_image([path], cfg)
    # The default (percentile) keeps the key it had before the setting existed; zscore is keyed.
    default_key = pp.content_hash([path], PreprocessConfig(), has_label=False)
    assert pp.content_hash([path], cfg, has_label=False) != default_key


def test_cache_by_content_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = _case(tmp_path, scan(), label(), np.eye(4))
    cfg = PreprocessConfig(spacing_mm=(1.0, 1.0, 1.0), divisor=4)
    calls = []
    real = pp.load_image
    monkeypatch.setattr(pp, "load_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = tmp_path / "cache"
    first = preprocess_case(record, cfg, cache_dir=cache)
    again = preprocess_case(CaseRecord("other", record.image_paths, record.label_path), cfg, cache_dir=cache)
    assert len(calls) == 1 and again.case_id == "other"
    np.testing.assert_array_equal(again.image, first.image)
    np.testing.assert_array_equal(again.label, first.label)
    np.testing.assert_allclose(again.affine, first.affine)
    assert again.native_shape == first.native_shape
    # Other settings or other bytes: a new key, recomputed.
    preprocess_case(record, PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), divisor=4), cache_dir=cache)
    write_nifti(record.image_paths[0], scan(seed=9))
    preprocess_case(record, cfg, cache_dir=cache)
    assert len(calls) == 3
    assert len(list(cache.glob("*.npz"))) == 3 and not list(cache.glob(".*"))


def test_label_must_fit_the_image(tmp_path: Path) -> None:
    record = CaseRecord(
        "x",
        (write_nifti(tmp_path / "x.nii.gz", scan()),),
        write_nifti(tmp_path / "x_seg.nii.gz", label((12, 10, 9))),
    )
    with pytest.raises(DataError, match="assft validate"):
        preprocess_case(record, PreprocessConfig())


def test_invert_label_checks_shape(tmp_path: Path) -> None:
    case = preprocess_image([write_nifti(tmp_path / "s.nii.gz", scan())], PreprocessConfig(divisor=4))
    with pytest.raises(DataError, match="preprocessed grid"):
        invert_label(np.zeros((3, 3, 3), np.uint8), case)


def _one_compose_reference(img: np.ndarray, lab: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig) -> tuple:
    """What one MONAI dictionary Compose over image and label gives (float32 in, CT window)."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Compose, CropForegroundd, DivisiblePadd, Orientationd, ScaleIntensityRanged, Spacingd

    aff = torch.as_tensor(affine, dtype=torch.float64)
    data = {"image": MetaTensor(torch.from_numpy(img.astype(np.float32)[None]), affine=aff),
            "label": MetaTensor(torch.from_numpy(lab.astype(np.float32)[None]), affine=aff.clone())}
    keys = ["image", "label"]
    out = Compose([
        Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys=keys, pixdim=cfg.spacing_mm, mode=("bilinear", "nearest"), padding_mode=("border", "zeros"),
                 dtype=np.float32),
        CropForegroundd(keys=keys, source_key="image", select_fn=lambda x: x > cfg.ct_body_threshold_hu, allow_smaller=True),
        ScaleIntensityRanged(keys="image", a_min=cfg.ct_window[0], a_max=cfg.ct_window[1], b_min=0.0, b_max=1.0, clip=True),
        DivisiblePadd(keys=keys, k=cfg.divisor, mode="constant"),
    ])(data)
    return out["image"].numpy(), np.rint(out["label"].numpy()).astype(np.uint8), out["image"].affine.numpy()


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_image_then_label_equals_one_monai_compose(tmp_path: Path, dtype: type) -> None:
    # The pipeline runs image and label one after the other (one native volume in memory at a
    # time) and keeps int16 voxels until resampling: it must equal MONAI's dictionary Compose.
    shape = (26, 14, 18)
    rng = np.random.default_rng(3)
    img = np.full(shape, -1000.0)
    img[3:-4, 2:-3, 4:-2] = rng.normal(40, 60, (shape[0] - 7, shape[1] - 5, shape[2] - 6)).round()
    lab = np.zeros(shape, np.uint8)
    lab[6:14, 4:9, 6:12] = 1
    lab[15:20, 5:10, 8:14] = 2
    cfg = PreprocessConfig(spacing_mm=(1.7, 2.3, 1.3), divisor=8, modality=Modality.CT)
    case = preprocess_case(_case(tmp_path, img.astype(dtype), lab, NATIVE_AFFINE), cfg)
    ref_image, ref_label, ref_affine = _one_compose_reference(img, lab, NATIVE_AFFINE, cfg)
    assert case.image.shape == ref_image.shape and ref_image.shape[1:] != shape  # cropped and resampled
    np.testing.assert_array_equal(case.image, ref_image)
    np.testing.assert_array_equal(case.label, ref_label)
    np.testing.assert_array_equal(case.affine, ref_affine)
    assert set(np.unique(case.label)) == {0, 1, 2}
