"""Preprocessing to the network's grid with MONAI transforms, its geometric inverse, and a cache.

Pipeline (docs/architecture.md, "Layout": data/; METHOD.md §0): orientation RAS -> resampling to
`cfg.spacing_mm` (image linear, label nearest) -> crop to the body -> intensity normalisation
(CT: HU window to [0, 1]; MRI: percentiles of non-zero voxels to [0, 1], a per-image z-score or
min-max, `cfg.mri_normalisation`) -> pad to a multiple of `cfg.divisor`. MONAI's MetaTensor tracks the affine through every step, so the preprocessed
affine is exact and `invert_label` is a nearest-neighbour resampling through world coordinates
back onto the native grid (the geometry `Invertd` would restore, without keeping transform
stacks alive in a cache).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import CropForeground, DivisiblePad, Orientation, ScaleIntensityRange, Spacing
from scipy.ndimage import binary_fill_holes

from assft_core.config import Modality, MriNormalisation, PreprocessConfig, to_dict
from assft_core.data.grid import resample_label_to_grid
from assft_core.data.io import NiftiFileError, Volume, load_image, load_label
from assft_core.data.records import CaseRecord, PreprocessedCase, case_id_from_filename
from assft_core.errors import DataError
from assft_core.fsutil import atomic_write

# Bump when the pipeline's output changes, so old cache entries are never reused.
PIPELINE_VERSION = "1"
# Settings that do not change the output and so must not invalidate the cache.
_NOT_IN_KEY = ("max_voxels", "geometry_tolerance", "label_max_unique")
# Settings added later, with the value that gives the earlier output: keyed only at another value,
# so the cache entries a project already holds stay valid.
_ADDED_AT_EARLIER_OUTPUT = {"mri_normalisation": MriNormalisation.PERCENTILE.value}


def preprocess_case(record: CaseRecord, cfg: PreprocessConfig, *, cache_dir: Path | None = None) -> PreprocessedCase:
    """Preprocess one case (image and, if present, its label) to the network's grid.

    Args:
        record: the case; `label_path` may be None (unlabelled pool case).
        cfg: preprocessing settings.
        cache_dir: when given, the result is cached there keyed by the files' bytes and `cfg`.

    Returns:
        PreprocessedCase with `image` (C, D, H, W) float32 (in [0, 1], or z-scores for an MRI
        `mri_normalisation` zscore*), `label` (1, D, H, W) uint8
        or None, and the preprocessed and native geometry.

    Raises:
        DataError: unreadable files, or a label whose grid or values do not fit the image (run
            `assft validate` for the full list of problems).
    """
    files = list(record.image_paths) + ([record.label_path] if record.label_path is not None else [])
    key = content_hash(files, cfg, has_label=record.label_path is not None)
    cached = _cache_read(cache_dir, key)
    if cached is not None:
        return _with_identity(cached, record.case_id, record.site)
    case = _run_pipeline(record, cfg, key=key)
    _cache_write(cache_dir, case)
    return case


def preprocess_image(
    paths: Sequence[Path],
    cfg: PreprocessConfig,
    *,
    case_id: str | None = None,
    cache_dir: Path | None = None,
) -> PreprocessedCase:
    """Preprocess an unlabelled scan (e.g. a new scan for `assft predict`).

    Args:
        paths: one file per channel, or one 4D multi-channel file.
        cfg: preprocessing settings (those of the model's card).
        case_id: id to carry; default the first file's name without `.nii(.gz)` and `_0000`.
        cache_dir: optional cache folder.

    Returns:
        PreprocessedCase with `label` None.

    Raises:
        DataError: unreadable or unusable files.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("preprocess_image: no image file given.")
    if case_id is None:
        case_id = case_id_from_filename(paths[0].name)
    return preprocess_case(CaseRecord(case_id=case_id, image_paths=tuple(paths)), cfg, cache_dir=cache_dir)


def invert_label(pred: np.ndarray, case: PreprocessedCase) -> np.ndarray:
    """Map a label on the preprocessed grid back onto the case's native grid (nearest neighbour).

    The inverse of the whole geometry of `preprocess_case` (orientation, spacing, crop, pad):
    each native voxel takes the class of the preprocessed voxel nearest to it in world space;
    native voxels outside the preprocessed (cropped) box are background.

    Args:
        pred: (D, H, W) or (1, D, H, W) uint8 class indices on the preprocessed grid.
        case: the PreprocessedCase `pred` was computed on.

    Returns:
        (X, Y, Z) array of `pred`'s dtype on the native grid (`case.native_shape`, `case.native_affine`).

    Raises:
        DataError: if `pred`'s shape is not the preprocessed grid's.
    """
    pred = np.asarray(pred)
    if pred.ndim == 4 and pred.shape[0] == 1:
        pred = pred[0]
    grid = tuple(case.image.shape[1:])
    if pred.shape != grid:
        raise DataError(f"invert_label: prediction shape {pred.shape} differs from the preprocessed grid {grid} of {case.case_id}.")
    return resample_label_to_grid(pred, case.affine, case.native_shape, case.native_affine)


def content_hash(files: Sequence[Path], cfg: PreprocessConfig, *, has_label: bool) -> str:
    """SHA-256 of the files' bytes (in order) and the output-relevant preprocessing settings."""
    h = hashlib.sha256()
    settings = {
        k: v for k, v in to_dict(cfg).items() if k not in _NOT_IN_KEY and _ADDED_AT_EARLIER_OUTPUT.get(k, object()) != v
    }
    h.update(json.dumps({"v": PIPELINE_VERSION, "cfg": settings, "label": has_label}, sort_keys=True).encode())
    for f in files:
        h.update(b"\0file\0")
        try:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as exc:
            raise NiftiFileError(f, f"cannot be read ({exc.strerror}).", "check the path and permissions.") from None
    return h.hexdigest()


def _check_label_fits(label: Volume, label_path: Path, image_shape: tuple[int, ...], image_affine: np.ndarray, tol: float) -> None:
    if label.array.min() < 0 or label.array.max() > 254:
        raise NiftiFileError(
            label_path,
            f"label values span {int(label.array.min())}..{int(label.array.max())}; class indices must be 0..254 (255 = ignore).",
            "renumber the classes consecutively from 0 (background).",
        )
    if label.spatial_shape != image_shape:
        raise NiftiFileError(
            label_path,
            f"label shape {label.spatial_shape} differs from the image's {image_shape}.",
            "give the label made on this image, or resample it; `assft validate IMAGE LABEL` lists every problem.",
        )
    if not np.allclose(label.affine, image_affine, atol=tol):
        raise NiftiFileError(
            label_path,
            "label geometry (spacing, origin or direction) differs from the image's.",
            "copy the image header onto the label if they truly match; `assft validate IMAGE LABEL` shows details.",
        )


def _run_pipeline(record: CaseRecord, cfg: PreprocessConfig, *, key: str) -> PreprocessedCase:
    """Preprocess the image, then the label: a full-size native volume is never held beside the
    other, only one native volume, its reoriented copy and the resampling grid at a time.

    Each step is the MONAI transform that one dictionary `Compose` over image and label would apply
    to each key (the label resampled onto the image's output shape, cropped with the image's box),
    so the arrays are the same bit for bit. Voxels stay in the file's integer dtype until the
    resampling converts them to float32 (exact for 8- and 16-bit integers).
    """
    image = _image_to_grid(record.image_paths, cfg)
    label = None
    if record.label_path is not None:
        label = _label_to_grid(record.label_path, image, cfg)
        label = np.rint(_pad(label, cfg).numpy()).astype(np.uint8)
    normalised = _pad(_normalise(image.tensor, cfg, record.case_id), cfg)
    pre_affine = normalised.affine.detach().cpu().numpy().astype(np.float64)
    return PreprocessedCase(
        case_id=record.case_id,
        image=normalised.detach().cpu().numpy().astype(np.float32),
        label=label,
        affine=pre_affine,
        spacing_mm=tuple(float(s) for s in np.linalg.norm(pre_affine[:3, :3], axis=0)),  # type: ignore[arg-type]
        native_shape=image.native_shape,
        native_affine=image.native_affine,
        content_hash=key,
        site=record.site,
    )


@dataclass
class _ImageOnGrid:
    """The image resampled and cropped, with what the label's steps need from it."""

    tensor: MetaTensor  # (C, D, H, W) float32, RAS, at cfg.spacing_mm, cropped to the body
    resampled_shape: tuple[int, ...]  # (D, H, W) after resampling, before the crop
    crop: Callable[[MetaTensor], MetaTensor] | None  # the same crop for the label (None: no crop)
    native_shape: tuple[int, int, int]
    native_affine: np.ndarray


def _image_to_grid(paths: Sequence[Path], cfg: PreprocessConfig) -> _ImageOnGrid:
    """RAS, resampled linearly (edges replicated: CT air stays air), cropped to the body."""
    volume = load_image(paths, max_voxels=cfg.max_voxels, keep_integer_dtype=True)
    native_shape, native_affine = volume.spatial_shape, volume.affine
    tensor = _as_meta(volume.array, native_affine)
    del volume  # the tensor is now the only holder of the native voxels; each step frees its input
    tensor = _orient(tensor)
    tensor = Spacing(pixdim=cfg.spacing_mm, mode="bilinear", padding_mode="border", dtype=np.float32)(tensor)
    resampled_shape = tuple(int(s) for s in tensor.shape[1:])
    crop = None
    if cfg.crop_foreground:
        threshold = cfg.ct_body_threshold_hu if cfg.modality is Modality.CT else 0.0
        cropper = CropForeground(select_fn=lambda x: x > threshold, allow_smaller=True)
        start, end = cropper.compute_bounding_box(tensor)
        crop = partial(cropper.crop_pad, box_start=start, box_end=end, mode="constant")
        tensor = crop(tensor)
    return _ImageOnGrid(tensor, resampled_shape, crop, native_shape, native_affine)


def _label_to_grid(path: Path, image: _ImageOnGrid, cfg: PreprocessConfig) -> MetaTensor:
    """The label on the image's grid: RAS, nearest-neighbour (background outside the scan), the
    image's crop. Returns (1, D, H, W) float32 class values.

    Raises:
        NiftiFileError: the label's values, shape or geometry do not fit the image.
    """
    volume = load_label(path, max_voxels=cfg.max_voxels)
    _check_label_fits(volume, path, image.native_shape, image.native_affine, cfg.geometry_tolerance)
    # On the image's affine: within the tolerance they are the same grid, and must resample alike.
    tensor = _as_meta(volume.array, image.native_affine)
    del volume
    tensor = _orient(tensor)
    tensor = Spacing(pixdim=cfg.spacing_mm, mode="nearest", padding_mode="zeros", dtype=np.float32)(
        tensor, output_spatial_shape=image.resampled_shape
    )
    return tensor if image.crop is None else image.crop(tensor)


def _as_meta(array: np.ndarray, affine: np.ndarray) -> MetaTensor:
    """(C, X, Y, Z) array -> MetaTensor, sharing its memory when it is C-contiguous already."""
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=torch.as_tensor(affine, dtype=torch.float64))


def _orient(tensor: MetaTensor) -> MetaTensor:
    return Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(tensor)


def _pad(tensor: MetaTensor, cfg: PreprocessConfig) -> MetaTensor:
    return DivisiblePad(k=cfg.divisor, mode="constant")(tensor)


def _normalise(img: MetaTensor, cfg: PreprocessConfig, case_id: str) -> MetaTensor:
    """CT: HU window -> [0, 1], clipped; MRI: per channel, `cfg.mri_normalisation` (`MriNormalisation`).

    `img`: (C, D, H, W). Percentiles use at most ~1M non-zero voxels (an even stride through them):
    `torch.quantile` refuses larger inputs, and the estimate is unchanged to well under 1 %. The
    z-scores use every voxel counted (population std, as MONAI and nnU-Net do).
    """
    if cfg.modality is Modality.CT:
        lo, hi = cfg.ct_window
        return ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(img)
    scheme = MriNormalisation(cfg.mri_normalisation)
    body = None
    if scheme is MriNormalisation.ZSCORE_BODY:  # nnU-Net's create_nonzero_mask: any channel, holes filled
        body = torch.from_numpy(binary_fill_holes((img != 0).any(0).numpy()))[None]
    channels = []
    for c in range(img.shape[0]):
        ch = img[c : c + 1]
        nonzero = ch != 0 if body is None else body
        if not bool(nonzero.any()):
            raise DataError(f"{case_id}: channel {c} is all zero after resampling; check the image file.")
        if scheme is MriNormalisation.PERCENTILE:
            values = ch[nonzero]
            q = torch.quantile(values.float()[:: max(1, values.numel() // 1_000_000)], torch.tensor(cfg.mri_percentiles) / 100.0)
            lo, hi = float(q[0]), float(q[1])
            if hi <= lo:
                raise _constant_channel(case_id, c)
            channels.append(ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(ch))
            continue
        if scheme is MriNormalisation.MINMAX:
            # As nnU-Net's RescaleTo01Normalization: x − min, then divided by the result's maximum.
            shifted = ch - ch.min()
            top = shifted.max()
            if float(top) <= 0.0:
                raise _constant_channel(case_id, c)
            channels.append(shifted / top)
            continue
        counted = ch.reshape(-1) if scheme is MriNormalisation.ZSCORE else ch[nonzero]
        std, mean = torch.std_mean(counted.float(), correction=0)
        del counted
        if float(std) <= 1e-8:
            raise _constant_channel(case_id, c)
        scaled = (ch - mean) / std
        if scheme is not MriNormalisation.ZSCORE:
            scaled = torch.where(nonzero, scaled, torch.zeros((), dtype=scaled.dtype))
        channels.append(scaled)
    return torch.cat(channels, dim=0) if len(channels) > 1 else channels[0]


def _constant_channel(case_id: str, c: int) -> DataError:
    return DataError(f"{case_id}: channel {c} has constant intensity; it cannot be normalised.")


def _with_identity(case: PreprocessedCase, case_id: str, site: str) -> PreprocessedCase:
    # The cache is keyed by content; the id and site belong to the record asking.
    case.case_id, case.site = case_id, site
    return case


def _cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.npz"


def _cache_read(cache_dir: Path | None, key: str) -> PreprocessedCase | None:
    if cache_dir is None:
        return None
    path = _cache_path(cache_dir, key)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            label = z["label"] if z["has_label"] else None
            return PreprocessedCase(
                case_id="",
                image=z["image"],
                label=label,
                affine=z["affine"],
                spacing_mm=tuple(float(s) for s in z["spacing_mm"]),  # type: ignore[arg-type]
                native_shape=tuple(int(s) for s in z["native_shape"]),  # type: ignore[arg-type]
                native_affine=z["native_affine"],
                content_hash=key,
            )
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is recomputed and replaced


def _cache_write(cache_dir: Path | None, case: PreprocessedCase) -> None:
    if cache_dir is None:
        return

    def write(tmp: Path) -> None:
        # Straight into the file, uncompressed (read on every pass): an in-memory archive would hold
        # the image twice more.
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                image=case.image,
                label=case.label if case.label is not None else np.zeros((0,), np.uint8),
                has_label=np.array(case.label is not None),
                affine=case.affine,
                spacing_mm=np.array(case.spacing_mm),
                native_shape=np.array(case.native_shape),
                native_affine=case.native_affine,
            )

    atomic_write(_cache_path(Path(cache_dir), case.content_hash), write)
