"""Dataset integrity checks in the spirit of nnU-Net's `verify_dataset_integrity`.

Every problem of a case is collected (file, what is wrong, how to fix it) before anything
trains; no check raises on a bad file. Headers are opened first and a file whose header claims
a volume above `PreprocessConfig.max_voxels` is refused before its voxels are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assft_core.config import PreprocessConfig
from assft_core.data.header_check import HeaderInfo, decompresses_beyond, label_byte_cap, label_dtype_problem, read_header
from assft_core.data.io import NiftiFileError, open_nifti, read_voxels, spacing_from_affine, squeeze_trailing
from assft_core.data.records import DatasetManifest, IntegrityReport, Problem, Severity, case_id_from_filename


@dataclass
class _Loaded:
    """A file that opened: its voxels (squeezed) and affine."""

    path: Path
    data: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def check_image(
    paths: Sequence[Path | str],
    *,
    expected_channels: int | None = None,
    case_id: str | None = None,
    cfg: PreprocessConfig | None = None,
) -> IntegrityReport:
    """Check the image files of one case.

    Args:
        paths: one 3D file per channel, or one 4D (X, Y, Z, C) multi-channel file.
        expected_channels: declared channel count (a 4D file is an error unless declared).
        case_id: id for the report (default: derived from the first file name).
        cfg: limits (`max_voxels`, `geometry_tolerance`); default `PreprocessConfig()`.

    Returns:
        IntegrityReport listing every problem found (empty when clean).
    """
    cfg = cfg or PreprocessConfig()
    paths = [Path(p) for p in paths]
    report = IntegrityReport(case_id=case_id or case_id_from_filename((paths[0] if paths else Path("?")).name))
    _check_image_into(report, paths, expected_channels, cfg)
    return report


def check_pair(
    image_paths: Sequence[Path | str],
    label_path: Path | str,
    classes: dict[int, str] | None,
    *,
    expected_channels: int | None = None,
    case_id: str | None = None,
    cfg: PreprocessConfig | None = None,
) -> IntegrityReport:
    """Check an image and its label map: each file alone, then the pair's geometry.

    Args:
        image_paths: as in `check_image`.
        label_path: the label map (3D, integer class indices).
        classes: declared classes (index -> name, 0 = background); None: values must be
            consecutive from 0.
        expected_channels: declared channel count of the image.
        case_id: id for the report (default: derived from the first image file name).
        cfg: limits; default `PreprocessConfig()`.

    Returns:
        IntegrityReport listing every problem found.
    """
    cfg = cfg or PreprocessConfig()
    image_paths = [Path(p) for p in image_paths]
    label_path = Path(label_path)
    report = IntegrityReport(case_id=case_id or case_id_from_filename((image_paths[0] if image_paths else label_path).name))
    image = _check_image_into(report, image_paths, expected_channels, cfg)
    # The label's header first: shape, affine and dtype against the image, and how far the file
    # decompresses, before any of its voxels is read (a small .nii.gz can claim gigabytes).
    try:
        header = read_header(label_path, max_voxels=cfg.max_voxels)
    except NiftiFileError as exc:
        _err(report, exc.file, exc.reason, exc.fix)
        return report
    if len(header.shape) != 3:
        _err(report, label_path, f"label is {len(header.shape)}D {header.shape}; a label map must be 3D.",
             "save one 3D label map per case (class indices, not one-hot channels).")
        return report
    if not _label_header_fits(report, header, image, cfg):
        return report
    label = _load(report, label_path, cfg)
    if label is None:
        return report
    _check_label_values(report, label, classes, cfg)
    return report


def _label_header_fits(report: IntegrityReport, header: HeaderInfo, image: _Loaded | None, cfg: PreprocessConfig) -> bool:
    """Header-only label checks appended to `report`; True when the voxels may be read: the dtype
    is a label's, the grid is the image's and the file decompresses no further than such a label
    can (a spacing, origin or direction mismatch is reported and the voxels are still read: their
    size is the image's, and every problem is collected)."""
    fits = True
    dtype_problem = label_dtype_problem(header)
    if dtype_problem:
        _err(report, header.path, dtype_problem, "save the label with an integer voxel type (uint8 / int16).")
        fits = False
    if image is None:
        return fits
    _check_geometry(report, image, header, cfg.geometry_tolerance)
    if tuple(header.shape[:3]) != tuple(image.shape[:3]):
        return False
    cap = label_byte_cap(int(np.prod(image.shape[:3])), header)
    if fits and decompresses_beyond(header.path, cap):
        _err(report, header.path,
             f"decompresses to more than {cap:,} bytes, far beyond what its header promises "
             f"({header.data_end:,} bytes): a damaged or hostile file.",
             "re-export the label from the segmentation tool (one plain .nii.gz).")
        fits = False
    return fits


def check_dataset(
    manifest: DatasetManifest, *, cfg: PreprocessConfig | None = None, classes: dict[int, str] | None = None
) -> list[IntegrityReport]:
    """Check every case of an imported dataset (labelled: `check_pair`; unlabelled: `check_image`;
    a DICOM series the import could not convert: its conversion problem).

    `classes`: the classes a dataset that declares none (a plain folder) is checked against (a model
    card's, or `assft validate --classes K`); a declared class absent from a label is a warning.

    Returns:
        One IntegrityReport per case, in manifest order.
    """
    channels = len(manifest.channel_names) or None
    reports = []
    for case in manifest.cases:
        if case.case_id in manifest.conversion_problems:  # a DICOM series that could not be read
            reports.append(IntegrityReport(case.case_id, list(manifest.conversion_problems[case.case_id])))
        elif case.label_path is None:
            reports.append(check_image(case.image_paths, expected_channels=channels, case_id=case.case_id, cfg=cfg))
        else:
            reports.append(
                check_pair(case.image_paths, case.label_path, manifest.classes or classes or None,
                           expected_channels=channels, case_id=case.case_id, cfg=cfg)
            )
    return reports


def _check_image_into(
    report: IntegrityReport, paths: list[Path], expected_channels: int | None, cfg: PreprocessConfig
) -> _Loaded | None:
    """Image checks appended to `report`; returns the first channel (for pair geometry) or None."""
    if not paths:
        _err(report, "<none>", "no image file given.", "give the image file(s) of the case.")
        return None
    loaded = [_load(report, p, cfg) for p in paths]
    good = [x for x in loaded if x is not None]
    n_channels = 0
    for item in good:
        nd = item.data.ndim
        if nd == 3:
            n_channels += 1
        elif nd == 4 and len(paths) == 1 and expected_channels is not None and expected_channels > 1:
            n_channels += item.data.shape[3]
        elif nd == 4 and len(paths) > 1:
            _err(report, item.path, f"is 4D {item.data.shape} but was given as one of {len(paths)} channel files.",
                 "give either one 3D file per channel or a single 4D multi-channel file.")
            continue
        elif nd == 4:
            _err(report, item.path, f"is 4D {item.data.shape} but no multi-channel image was declared.",
                 "declare the channels (dataset.json channel_names/modality, or --channels N), "
                 "or split it into one 3D file per channel.")
            continue
        else:
            _err(report, item.path, f"is {nd}D {item.data.shape}; expected a 3D volume (or 4D multi-channel).",
                 "export one 3D volume per channel.")
            continue
        if not np.all(np.isfinite(item.data)):
            bad = int(np.count_nonzero(~np.isfinite(item.data)))
            _err(report, item.path, f"contains {bad} NaN/Inf voxel(s).",
                 "replace them with the background value and re-save.")
        elif item.data.size and np.ptp(item.data) == 0:
            _warn(report, item.path, f"has constant intensity {item.data.flat[0]!r}.", "check that this is the right scan.")
    if len(good) == len(paths) and expected_channels is not None and n_channels and n_channels != expected_channels:
        _err(report, paths[0], f"has {n_channels} channel(s), {expected_channels} declared.",
             "give one file per declared channel (nnU-Net: case_0000, case_0001, ...), or fix the declaration.")
    first = good[0] if good else None
    for other in good[1:]:
        if first is not None and other.data.shape[:3] == first.data.shape[:3]:
            _check_geometry(report, first, other, cfg.geometry_tolerance, what="channel")
        elif first is not None:
            _err(report, other.path, f"channel shape {other.data.shape[:3]} differs from {first.path.name}'s {first.data.shape[:3]}.",
                 "resample every channel onto the same grid.")
    return first


def _check_label_values(report: IntegrityReport, label: _Loaded, classes: dict[int, str] | None, cfg: PreprocessConfig) -> None:
    data, path = label.data, label.path
    if np.issubdtype(data.dtype, np.floating):
        if not np.all(np.isfinite(data)):
            _err(report, path, "label contains NaN/Inf voxels.", "set them to 0 (background) and re-save.")
            return
        if not np.array_equal(data, np.round(data)):
            _err(report, path, f"label holds non-integer values ({data.dtype}): it looks like an intensity image.",
                 "give the segmentation (integer class indices), not the scan.")
            return
    values = np.unique(data).astype(np.int64)
    if values.size > cfg.label_max_unique:
        _err(report, path, f"label has {values.size} distinct values: it looks like an intensity image.",
             "give the segmentation (integer class indices), not the scan.")
        return
    vset = {int(v) for v in values}
    if vset <= {0, 255} and 255 in vset and (classes is None or 255 not in classes):
        _err(report, path, "binary mask stored as {0, 255}.", "divide by 255 (store the mask as {0, 1}) and re-save.")
        return
    if values.min() < 0:
        _err(report, path, f"label has negative values {sorted(v for v in vset if v < 0)}.",
             "class indices start at 0 (background); renumber them.")
    if classes is not None:
        outside = sorted(vset - set(classes))
        if outside:
            _err(report, path, f"label values {outside} are not declared classes {sorted(classes)}.",
                 "renumber the label, or declare these classes (dataset.json labels / --classes K).")
        absent = sorted(set(classes) - vset - {0})
        if absent and vset != {0}:
            names = ", ".join(f"{k} {classes[k]}" for k in absent[:8]) + (" ..." if len(absent) > 8 else "")
            _warn(report, path, f"declared class(es) absent from this label: {names}.",
                  "fine when the structure is really absent from this scan (resected, outside the field of view); "
                  "otherwise check the label.")
    else:
        expected = set(range(max(vset) + 1))
        if vset != expected:
            _err(report, path, f"label values {sorted(vset)} are not consecutive from 0 (missing {sorted(expected - vset)}).",
                 "renumber classes 0..K-1, or declare the classes (--classes K / dataset.json labels).")
    if vset == {0}:
        _warn(report, path, "label is empty (all background).", "check that this is the right label file; it teaches only background.")


def _check_geometry(
    report: IntegrityReport, ref: _Loaded | HeaderInfo, other: _Loaded | HeaderInfo, tol: float, what: str = "label"
) -> None:
    """Shape, spacing, origin and direction of `other` against `ref` (nnU-Net's geometry checks);
    either may be a loaded file or a header alone."""
    if tuple(other.shape[:3]) != tuple(ref.shape[:3]):
        _err(report, other.path, f"{what} shape {tuple(other.shape[:3])} differs from the image's {tuple(ref.shape[:3])}.",
             f"give the {what} made on this image, or resample it onto the image grid.")
        return
    sp_ref, sp_oth = np.array(spacing_from_affine(ref.affine)), np.array(spacing_from_affine(other.affine))
    if not np.allclose(sp_ref, sp_oth, atol=tol):
        _err(report, other.path, f"{what} spacing {np.round(sp_oth, 4).tolist()} mm differs from the image's {np.round(sp_ref, 4).tolist()} mm.",
             f"copy the image header onto the {what} if they truly match, or resample it.")
    if not np.allclose(ref.affine[:3, 3], other.affine[:3, 3], atol=tol):
        _err(report, other.path, f"{what} origin {np.round(other.affine[:3, 3], 3).tolist()} mm differs from the image's "
             f"{np.round(ref.affine[:3, 3], 3).tolist()} mm.", f"check that the {what} belongs to this image; fix its header.")
    dir_ref = ref.affine[:3, :3] / np.maximum(sp_ref, 1e-12)
    dir_oth = other.affine[:3, :3] / np.maximum(sp_oth, 1e-12)
    if not np.allclose(dir_ref, dir_oth, atol=tol):
        _err(report, other.path, f"{what} direction (orientation) differs from the image's.",
             f"reorient the {what} to the image's orientation (e.g. same export tool), or copy the image header.")


def _load(report: IntegrityReport, path: Path, cfg: PreprocessConfig) -> _Loaded | None:
    """Open header (size check first), then voxels; any failure becomes an error Problem."""
    try:
        img = open_nifti(path, max_voxels=cfg.max_voxels)
        shape = squeeze_trailing(img.shape)
        if shape != tuple(img.shape):
            _warn(report, path, f"trailing singleton dimension(s) in shape {tuple(img.shape)}; squeezed to {shape}.",
                  "re-save as a plain 3D volume to silence this.")
        data = read_voxels(img, path).reshape(shape)
    except NiftiFileError as exc:
        _err(report, exc.file, exc.reason, exc.fix)
        return None
    return _Loaded(path=path, data=data, affine=np.asarray(img.affine, dtype=np.float64))


def _err(report: IntegrityReport, file: Path | str, message: str, fix: str) -> None:
    report.problems.append(Problem(Severity.ERROR, str(file), message, fix))


def _warn(report: IntegrityReport, file: Path | str, message: str, fix: str) -> None:
    report.problems.append(Problem(Severity.WARNING, str(file), message, fix))
