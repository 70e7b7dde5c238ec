"""nnU-Net v2 trained-model folders in and out: `dataset.json`, `plans.json`, `fold_N/checkpoint_*.pth`.

In (`nnunet_card`): the network is built from the plans' `architecture` entry with
`dynamic-network-architectures` (nnU-Net's own network package, backbone `nnunet`), the weights are
the checkpoint's `network_weights`, the classes come from `dataset.json` (region-based models are
refused: their heads are sigmoids over overlapping regions, not one softmax over classes). The
configuration's `spacing`, `patch_size` and `normalization_schemes` become the card's spacing,
ROI and preprocessing:

- CTNormalization (clip to the training foreground's [p0.5, p99.5], then (x − mean) / std) is
  reproduced exactly: this project's CT path maps the window [p0.5, p99.5] to [0, 1] (clipped) and
  the input adapter applies `x · (p99.5 − p0.5) / std + (p0.5 − mean) / std`.
- RGBTo0_1Normalization (x / 255) is exact too: CT window (0, 255).
- ZScoreNormalization ((x − mean) / std per image and channel; over nnU-Net's non-zero mask, holes
  filled, with the plans' `use_mask_for_norm`) is reproduced by the MRI `mri_normalisation` zscore /
  zscore_body, on the resampled grid (nnU-Net takes the statistics before resampling).
- RescaleTo01Normalization ((x − min) / (max − min)) alone is reproduced by the MRI
  `mri_normalisation` minmax (statistics after resampling, as for ZScore); mixed with ZScore across
  channels it is approximated: percentiles 0.5–99.5 of the non-zero voxels to [0, 1] (z-scored channels then
  to [−2.576, 2.576], where those percentiles sit for a normal distribution); the card's notes
  and `assft model-info` say so, and fine-tuning adapts the network to it.

Axes: nnU-Net reads images with the plans' `image_reader_writer` (SimpleITK: (z, y, x) arrays;
Nibabel: (x, y, z)) and then applies `transpose_forward`; this project's grid is RAS (x, y, z), so
the adapter permutes the axes (network axis j = this project's axis `axes[j]`) and the spacing
and ROI are given in this project's order.

Out (`export_nnunet_folder`): `dataset.json`, `plans.json` and `fold_F/checkpoint_final.pth` in
the layout `nnunetv2.inference.predict_from_raw_data.nnUNetPredictor` opens.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from assft_core.config import Modality, MriNormalisation, PreprocessConfig
from assft_core.errors import ModelError
from assft_core.fsutil import atomic_write, atomic_write_text, read_json_object
from assft_core.models.formats.adapter import attach_input_adapter, network_axes
from assft_core.models.registry import Backbone, norm_layers_under, register_backbone

FORMAT = "nnunet_v2"
_ZSCORE_RANGE = 2.576  # |z| of the 0.5 / 99.5 percentiles of a normal distribution
# Modules a plans file may name (classes are imported by name: only from these packages).
_ALLOWED_MODULES = ("dynamic_network_architectures.", "torch.nn.")


def _read_json_object(path: Path) -> dict[str, Any]:
    return read_json_object(path, error=ModelError, fix="Restore the file from the nnU-Net results folder.")


def is_nnunet_folder(folder: Path) -> bool:
    """True when `folder` looks like an nnU-Net v2 trained-model folder (plans, dataset, a fold)."""
    folder = Path(folder)
    return (folder / "plans.json").is_file() and (folder / "dataset.json").is_file() and any(folder.glob("fold_*"))


def _locate(name: str, where: str) -> Any:
    if not isinstance(name, str) or not name.startswith(_ALLOWED_MODULES):
        raise ModelError(
            f"{where}: {name!r} is not a dynamic_network_architectures or torch.nn class; only those are built "
            "from an nnU-Net plans file."
        )
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise ModelError(
            f"{where}: class {name!r} cannot be imported; install dynamic-network-architectures==0.4.4 "
            "(requirements.txt) or fix the plans' 'architecture'."
        ) from None


@register_backbone("nnunet")
class NnUNetBackbone(Backbone):
    """An nnU-Net v2 network (`dynamic_network_architectures`: PlainConvUNet, ResidualEncoderUNet ...).

    backbone_kwargs: `network_class_name`, `arch_kwargs`, `kw_requires_import` (the plans'
    `architecture` entry), `input_scale` / `input_shift` (C,) and `axes` (the input adapter), and
    for the way back out `plans`, `dataset_json`, `configuration`, `fold`, `trainer_name`.
    Encoder: `encoder` (its stem and `encoder.stages`; InstanceNorm, so no running statistics:
    source statistics come from `assft stats`); stages `encoder.stages.i`; head
    `decoder.seg_layers` (one 1×1 convolution per decoder resolution, all K channels).
    """

    def build(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        name = kwargs.get("network_class_name")
        arch = copy.deepcopy(kwargs.get("arch_kwargs") or {})
        for key in kwargs.get("kw_requires_import") or ():
            if arch.get(key) is not None:
                arch[key] = _locate(arch[key], "plans architecture")
        cls = _locate(str(name), "plans architecture")
        arch["deep_supervision"] = False  # as nnU-Net's predictor builds it: one output
        network = cls(input_channels=in_channels, num_classes=out_channels, **arch)
        if hasattr(network, "initialize"):
            network.apply(network.initialize)
        return attach_input_adapter(network, kwargs.get("input_scale"), kwargs.get("input_shift"), kwargs.get("axes"))

    def encoder_norm_layers(self, network: nn.Module) -> list[str]:
        return norm_layers_under(network, ["encoder"])

    def encoder_stages(self, network: nn.Module) -> list[str]:
        return [f"encoder.stages.{i}" for i in range(len(network.encoder.stages))]  # type: ignore[union-attr,arg-type]

    def head_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        return ("decoder.seg_layers.",)

    def total_stride(self, network: nn.Module) -> int:
        strides = network.encoder.strides  # type: ignore[union-attr]
        per_axis = [1, 1, 1]
        for s in strides:
            s = [int(s)] * 3 if isinstance(s, int) else [int(v) for v in s]
            per_axis = [p * v for p, v in zip(per_axis, s)]
        return max(per_axis)

    def feature_axes(self, network: nn.Module) -> tuple[int, int, int] | None:
        return network_axes(network)


def _configuration(plans: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    configs = plans.get("configurations") or {}
    if name not in configs:
        raise ModelError(
            f"{path}: configuration {name!r} not in the plans (available: {sorted(configs)}); set "
            "\"configuration\" in assft_override.json."
        )
    cfg = copy.deepcopy(configs[name])
    seen = {name}
    while "inherits_from" in cfg:
        parent = cfg.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise ModelError(f"{path}: configuration {name!r} inherits from {parent!r}, which is missing or circular.")
        seen.add(parent)
        cfg = {**copy.deepcopy(configs[parent]), **cfg}
    return cfg


def _pick_fold(folder: Path, override: dict[str, Any]) -> tuple[str, str]:
    ckpt_name = str(override.get("checkpoint_name", "checkpoint_final.pth"))
    if "fold" in override:
        fold = str(override["fold"])
        if not (folder / f"fold_{fold}" / ckpt_name).is_file():
            raise ModelError(f"{folder / f'fold_{fold}' / ckpt_name}: not found; fix \"fold\" / \"checkpoint_name\" in assft_override.json.")
        return fold, ckpt_name
    folds = sorted(p.name[len("fold_"):] for p in folder.glob("fold_*") if (p / ckpt_name).is_file())
    if not folds:
        raise ModelError(
            f"{folder}: no fold_N/{ckpt_name}; give a trained fold, or set \"checkpoint_name\" (e.g. "
            "checkpoint_best.pth) in assft_override.json."
        )
    numeric = sorted((f for f in folds if f.isdigit()), key=int)
    return (numeric or folds)[0], ckpt_name


def _axes(plans: dict[str, Any], notes: list[str]) -> tuple[int, int, int]:
    reader = str(plans.get("image_reader_writer", "SimpleITKIO"))
    tf = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    if reader.startswith("Nibabel"):
        raw = [0, 1, 2]
    else:
        raw = [2, 1, 0]  # SimpleITK arrays are (z, y, x)
        if reader != "SimpleITKIO":
            notes.append(f"image reader {reader!r} taken as SimpleITK-ordered (z, y, x).")
    return tuple(raw[t] for t in tf)  # type: ignore[return-value]


def nnunet_card_fields(folder: Path, override: dict[str, Any]) -> dict[str, Any]:
    """ModelCard fields (before the override card) for an nnU-Net v2 trained-model folder.

    Reads `dataset.json` and `plans.json` only (the checkpoint is read when the model loads).

    Args:
        folder: the trained-model folder (`nnUNetTrainer__nnUNetPlans__3d_fullres`).
        override: the folder's override card (`configuration`, `fold`, `checkpoint_name` are
            read here; every card field is applied by the caller).

    Returns:
        A dict for `ModelCard` (backbone "nnunet"); spacing in mm and ROI in this project's RAS order.

    Raises:
        ModelError: region-based labels, a plans file without an `architecture` entry (pre-2.4
            plans), a non-3D configuration, mixed or unknown normalisation schemes; each names the
            file and the fix.
    """
    folder = Path(folder)
    dataset = _read_json_object(folder / "dataset.json")
    plans = _read_json_object(folder / "plans.json")
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ModelError(f"{folder / 'dataset.json'}: no 'labels'; it must map class names to label values.")
    if any(isinstance(v, (list, tuple)) for v in labels.values()) or dataset.get("regions_class_order") is not None:
        raise ModelError(
            f"{folder / 'dataset.json'}: a region-based nnU-Net model (labels map to lists of values, sigmoid "
            "outputs over overlapping regions) is not supported: this project needs one softmax over "
            "mutually exclusive classes. Train a label-based nnU-Net model for this task."
        )
    notes: list[str] = []
    classes = {int(v): str(k) for k, v in labels.items() if k != "ignore"}
    if "ignore" in labels:
        notes.append(f"nnU-Net ignore label {labels['ignore']} is not a class of the head.")
    name = str(override.get("configuration", "3d_fullres"))
    cfg = _configuration(plans, name, folder / "plans.json")
    arch = cfg.get("architecture")
    if not isinstance(arch, dict) or "network_class_name" not in arch:
        raise ModelError(
            f"{folder / 'plans.json'}: configuration {name!r} has no 'architecture' entry (plans written before "
            "nnU-Net 2.4); open and re-save the plans with nnunetv2 >= 2.4, which converts them."
        )
    patch = [int(p) for p in cfg.get("patch_size", [])]
    spacing = [float(s) for s in cfg.get("spacing", [])]
    if len(patch) != 3 or len(spacing) != 3:
        raise ModelError(
            f"{folder / 'plans.json'}: configuration {name!r} is not 3D (patch {patch}); choose a 3D one with "
            "\"configuration\" in assft_override.json (e.g. 3d_fullres)."
        )
    channels = dataset.get("channel_names") or dataset.get("modality") or {}
    in_channels = len(channels)
    schemes = list(cfg.get("normalization_schemes", []))
    if len(schemes) != in_channels or in_channels < 1:
        raise ModelError(f"{folder / 'plans.json'}: {len(schemes)} normalization_schemes for {in_channels} channel(s) in dataset.json.")
    props = plans.get("foreground_intensity_properties_per_channel", {})
    axes = _axes(plans, notes)
    roi = [0, 0, 0]
    ours_spacing = [0.0, 0.0, 0.0]
    for j, a in enumerate(axes):
        roi[a], ours_spacing[a] = patch[j], spacing[j]
    pre: dict[str, Any]
    kinds = set(schemes)
    if kinds == {"CTNormalization"}:
        windows = {(float(props[str(c)]["percentile_00_5"]), float(props[str(c)]["percentile_99_5"])) for c in range(in_channels)}
        if len(windows) != 1:
            raise ModelError(
                f"{folder / 'plans.json'}: CTNormalization with a different window per channel; this project's CT "
                "window is one for all channels."
            )
        lo, hi = windows.pop()
        scale = [(hi - lo) / max(float(props[str(c)]["std"]), 1e-8) for c in range(in_channels)]
        shift = [(lo - float(props[str(c)]["mean"])) / max(float(props[str(c)]["std"]), 1e-8) for c in range(in_channels)]
        pre = {"modality": Modality.CT.value, "ct_window": [lo, hi]}
        notes.append(f"CTNormalization reproduced exactly: window [{lo:g}, {hi:g}] HU, then (x − mean) / std per channel.")
    elif kinds == {"RGBTo0_1Normalization"}:
        pre = {"modality": Modality.CT.value, "ct_window": [0.0, 255.0]}
        scale, shift = [1.0] * in_channels, [0.0] * in_channels
        notes.append("RGBTo0_1Normalization reproduced exactly (x / 255).")
    elif kinds == {"ZScoreNormalization"}:
        masked = {bool(m) for m in (cfg.get("use_mask_for_norm") or [False] * in_channels)}
        if len(masked) != 1:
            raise ModelError(
                f"{folder / 'plans.json'}: use_mask_for_norm differs between channels; this project normalises every "
                "channel the same way. Set \"preprocess\": {\"mri_normalisation\": \"zscore\" or \"zscore_nonzero\"} "
                "in assft_override.json."
            )
        nonzero = masked.pop()
        scheme = MriNormalisation.ZSCORE_BODY if nonzero else MriNormalisation.ZSCORE
        pre = {"modality": Modality.MRI.value, "mri_normalisation": scheme.value}
        scale, shift = [1.0] * in_channels, [0.0] * in_channels
        notes.append(
            "ZScoreNormalization reproduced: (x − mean) / std per image and channel"
            + (" over the body (use_mask_for_norm: voxels non-zero in any channel, holes filled, as nnU-Net)" if nonzero else "")
            + "; the statistics are taken after resampling to the plans' spacing (nnU-Net: before), which "
            "differs by interpolation only."
        )
    elif kinds == {"RescaleTo01Normalization"}:
        pre = {"modality": Modality.MRI.value, "mri_normalisation": MriNormalisation.MINMAX.value}
        scale, shift = [1.0] * in_channels, [0.0] * in_channels
        notes.append("RescaleTo01Normalization reproduced: (x − min) / (max − min) per image and channel; the "
                     "statistics are taken after resampling to the plans' spacing (nnU-Net: before).")
    elif kinds <= {"ZScoreNormalization", "RescaleTo01Normalization"}:
        pre = {"modality": Modality.MRI.value, "mri_percentiles": [0.5, 99.5]}
        zscored = [s == "ZScoreNormalization" for s in schemes]
        scale = [2 * _ZSCORE_RANGE if z else 1.0 for z in zscored]
        shift = [-_ZSCORE_RANGE if z else 0.0 for z in zscored]
        notes.append(
            f"{'/'.join(sorted(kinds))} (per image) is approximated: percentiles 0.5–99.5 of the non-zero voxels "
            "to [0, 1]" + (" (z-scored channels then to [−2.576, 2.576])" if "ZScoreNormalization" in kinds else "")
            + "; expect a shift at round 0 that fine-tuning adapts to."
        )
    else:
        raise ModelError(
            f"{folder / 'plans.json'}: normalization_schemes {schemes} are not supported (CTNormalization, "
            "ZScoreNormalization, RescaleTo01Normalization, RGBTo0_1Normalization are); set 'preprocess' and "
            "backbone_kwargs 'input_scale' / 'input_shift' in assft_override.json."
        )
    strides = arch.get("arch_kwargs", {}).get("strides", [])
    per_axis = [1, 1, 1]
    for s in strides:
        s = [int(s)] * 3 if isinstance(s, int) else [int(v) for v in s]
        per_axis = [p * v for p, v in zip(per_axis, s)]
    fold, ckpt_name = _pick_fold(folder, override)
    return {
        "backbone": "nnunet",
        "in_channels": in_channels,
        "classes": classes,
        "roi_size": roi,
        "backbone_kwargs": {
            "network_class_name": arch["network_class_name"],
            "arch_kwargs": arch.get("arch_kwargs", {}),
            "kw_requires_import": list(arch.get("_kw_requires_import", [])),
            "input_scale": scale,
            "input_shift": shift,
            "axes": list(axes),
            "configuration": name,
            "fold": fold,
            "plans": plans,
            "dataset_json": dataset,
        },
        "preprocess": {
            **pre,
            "spacing_mm": ours_spacing,
            "crop_foreground": True,
            "divisor": max(per_axis),
        },
        "checkpoint": f"fold_{fold}/{ckpt_name}",
        "notes": f"nnU-Net v2 model folder, configuration {name}, fold {fold}. " + " ".join(notes),
    }


def export_nnunet_folder(network: nn.Module, card: Any, out: Path) -> Path:
    """Write `network` (backbone "nnunet") as an nnU-Net v2 trained-model folder at `out`.

    Writes `dataset.json` (labels from the card's classes), `plans.json` (the source plans) and
    `fold_F/checkpoint_final.pth` ({"network_weights", "init_args", "trainer_name",
    "inference_allowed_mirroring_axes"}: what `nnUNetPredictor.initialize_from_trained_model_folder`
    reads).

    Args:
        network: the adapted network (state-dict keys are nnU-Net's own).
        card: its ModelCard.
        out: an absent or empty folder.

    Raises:
        ModelError: when the card's backbone is not "nnunet" (only nnU-Net networks can be
            written for nnU-Net's predictor).
    """
    if card.backbone != "nnunet":
        raise ModelError(
            f"export as nnU-Net: the model's backbone is {card.backbone!r}; only a model that came from an nnU-Net "
            "v2 folder (backbone 'nnunet') can be written for nnU-Net's predictor. Export it as 'assft' or 'monai_bundle'."
        )
    kw = card.backbone_kwargs
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = copy.deepcopy(kw.get("dataset_json") or {})
    labels = {name: idx for idx, name in sorted(card.classes.items())}
    if "ignore" in (dataset.get("labels") or {}):
        labels["ignore"] = max(labels.values()) + 1
    dataset["labels"] = labels
    plans = copy.deepcopy(kw.get("plans") or {})
    fold = str(kw.get("fold", "0"))
    atomic_write_text(out / "dataset.json", json.dumps(dataset, indent=2) + "\n")
    atomic_write_text(out / "plans.json", json.dumps(plans, indent=2) + "\n")
    fold_dir = out / f"fold_{fold}"
    fold_dir.mkdir(exist_ok=True)
    checkpoint = {
        "network_weights": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "init_args": {
            "plans": plans,
            "configuration": kw.get("configuration", "3d_fullres"),
            "fold": int(fold) if re.fullmatch(r"\d+", fold) else fold,
            "dataset_json": dataset,
        },
        "trainer_name": str(kw.get("trainer_name", "nnUNetTrainer")),
        "inference_allowed_mirroring_axes": (0, 1, 2),
        "current_epoch": 0,
    }
    atomic_write(fold_dir / "checkpoint_final.pth", lambda tmp: torch.save(checkpoint, tmp))
    return out
