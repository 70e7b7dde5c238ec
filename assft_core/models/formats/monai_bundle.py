"""MONAI bundles in and out: `configs/metadata.json`, `configs/inference.json` (or `train.json`), `models/model.pt`.

In (`bundle_card_fields`): the network is the bundle's `network_def`, built by
`monai.bundle.ConfigParser` from the config file (offline: nothing is downloaded; `_target_`
components are imported, so load bundles from a source you trust, as MONAI says). Backbone
`monai_bundle` keeps the whole config in `backbone_kwargs["config"]`, so a fine-tuned round model
is self-contained. Classes come from `metadata.json`
(`network_data_format.outputs.pred.channel_def`); spacing from the `Spacingd` `pixdim` of the
`preprocessing` transforms; intensities from `ScaleIntensityRanged` (exact: this project's CT
path is the same window to [0, 1], clipped; `b_min` / `b_max` other than 0 / 1 are applied by the
input adapter) or `NormalizeIntensityd` (per-image z-score: the MRI `mri_normalisation` zscore,
or zscore_nonzero for `nonzero=True`; a fixed subtrahend / divisor is refused) or `ScaleIntensityd`
with minv / maxv (per-image min-max, `mri_normalisation` minmax); the ROI from the `inferer`'s `roi_size`. What cannot be
derived raises an error naming the field to set in the override card (`assft_override.json`).
Encoder, norm layers, stages and head are those of the registered backbone of the built
network's class (MONAI UNet, SegResNet, Swin UNETR), or those the override card names for any
other class (`backbone_kwargs.encoder_layout`, `EncoderLayout`); without either a network loads,
predicts and fine-tunes but has no hookable encoder (no source statistics, no embedding), and
`assft model-info` says so and lists the layer names to choose from.

Out (`export_monai_bundle`): the same layout, loadable with `monai.bundle.load(name, bundle_dir=...,
workflow_type="inference")` and `ConfigParser`. Its `preprocessing` and `inferer` are this project's
pipeline and sliding window, so MONAI running them on `probabilities_network` reproduces
`assft predict` on the preprocessed grid (tested); a bundle card's own preprocessing is replaced.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from assft_core.config import Modality, MriNormalisation
from assft_core.errors import ModelError
from assft_core.fsutil import atomic_write, atomic_write_text, read_json_object
from assft_core.models.formats.adapter import attach_input_adapter
from assft_core.models.registry import Backbone, get_backbone, register_backbone

FORMAT = "monai_bundle"
CONFIG_NAMES = ("inference.json", "train.json", "inference.yaml", "train.yaml")


def _read_json_object(path: Path) -> dict[str, Any]:
    return read_json_object(path, error=ModelError, fix="Restore the bundle file.")


def is_monai_bundle(folder: Path) -> bool:
    """True when `folder` has MONAI's bundle layout (`configs/metadata.json` and an inference/train config)."""
    configs = Path(folder) / "configs"
    return (configs / "metadata.json").is_file() and any((configs / n).is_file() for n in CONFIG_NAMES)


def _parser(config: dict[str, Any]):  # noqa: ANN202 - monai type
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(copy.deepcopy(config))
    return parser


LAYOUT_KEY = "encoder_layout"
_LAYOUT_ATTR = "_assft_encoder_layout"  # set on the built module: backbone methods see only the network
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class EncoderLayout:
    """Where the encoder of a network of any class is, named in the override card.

    `assft_override.json`: `{"backbone_kwargs": {"encoder_layout": {"norm_layers": [...],
    "stages": [...], "head": [...], "total_stride": 16}}}`.

    Attributes:
        norm_layers: module names of the encoder's normalisation layers, shallow to deep (their
            input moments give the knowledge gap, METHOD.md §1; `assft stats` records them).
        stages: module names whose (B, C, d, h, w) outputs are the encoder stages, deepest last
            (the embedding z is the global average of the deepest).
        head: state-dict key prefixes of the class head (re-initialised for other classes).
        total_stride: the encoder's total downsampling factor (windows split on multiples of it).
    """

    norm_layers: tuple[str, ...]
    stages: tuple[str, ...]
    head: tuple[str, ...]
    total_stride: int

    @classmethod
    def parse(cls, spec: Any, network: nn.Module) -> EncoderLayout:
        """The layout `spec` (the override card's dict), checked against `network`.

        Raises:
            ModelError: a field of the wrong type, a module name `network` does not have, a norm
                layer that is no normalisation layer, or a head prefix no weight starts with; the
                message names the override field and lists names to choose from.
        """
        where = f"assft_override.json backbone_kwargs.{LAYOUT_KEY}"
        if not isinstance(spec, dict) or set(spec) - {"norm_layers", "stages", "head", "total_stride"}:
            raise ModelError(f"{where}: expected an object with norm_layers, stages, head and total_stride.")
        names = [spec.get(k, []) for k in ("norm_layers", "stages", "head")]
        if not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in names):
            raise ModelError(f"{where}: norm_layers, stages and head are lists of module names.")
        stride = spec.get("total_stride", 1)
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
            raise ModelError(f"{where}.total_stride: a positive whole number (the encoder's downsampling), got {stride!r}.")
        modules = dict(network.named_modules())
        norms, stages, head = (tuple(v) for v in names)
        missing = [n for n in (*norms, *stages) if n not in modules]
        if missing:
            raise ModelError(f"{where}: {missing[:3]} are not modules of the network; its normalisation layers are "
                             f"{normalisation_layers(network)[:8]} (`assft model-info` lists them all).")
        not_norm = [n for n in norms if not isinstance(modules[n], _NORM_TYPES)]
        if not_norm:
            raise ModelError(f"{where}.norm_layers: {not_norm[:3]} are not normalisation layers; choose from "
                             f"{normalisation_layers(network)[:8]}.")
        keys = list(network.state_dict())
        bad_head = [h for h in head if not any(k.startswith(h) for k in keys)]
        if bad_head:
            raise ModelError(f"{where}.head: no weight starts with {bad_head[:3]}; the last weights are {keys[-4:]}.")
        return cls(norms, stages, head, stride)


def normalisation_layers(network: nn.Module) -> list[str]:
    """Module names of every normalisation layer of `network`, in module order (for a layout)."""
    return [name for name, m in network.named_modules() if name and isinstance(m, _NORM_TYPES)]


def encoder_layout(network: nn.Module) -> EncoderLayout | None:
    """The override card's layout attached to `network` when it was built, or None."""
    return getattr(network, _LAYOUT_ATTR, None)


def _delegate(network: nn.Module) -> Backbone | None:
    """The registered backbone describing `network`'s class (encoder layout), or None."""
    from monai.networks.nets import SegResNet, SwinUNETR, UNet

    for cls, name in ((UNet, "unet"), (SegResNet, "segresnet"), (SwinUNETR, "swin_unetr")):
        if type(network) is cls:
            return get_backbone(name)
    return None


@register_backbone("monai_bundle")
class MonaiBundleBackbone(Backbone):
    """A network built from a MONAI bundle config's `network_def` (kwargs `config`, `network_key`).

    `in_channels` / `out_channels` of `network_def` are set to the card's (a card with another class
    count gets a re-initialised head, as for every backbone); optional `input_scale` /
    `input_shift` (C,) are applied by the input adapter. Encoder layout: `encoder_layout` (the
    override card's `EncoderLayout`) when given, else the registered backbone of the built class
    (`_delegate`), else none.
    """

    def build(self, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
        config = copy.deepcopy(kwargs.get("config") or {})
        key = str(kwargs.get("network_key", "network_def"))
        net_def = config.get(key)
        if not isinstance(net_def, dict):
            raise ModelError(f"bundle config has no {key!r} component; set backbone_kwargs.network_key in assft_override.json.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if name in net_def:
                net_def[name] = value
        try:
            network = _parser(config).get_parsed_content(key, instantiate=True)
        except Exception as exc:  # MONAI wraps import/instantiation errors in several types
            raise ModelError(f"bundle {key!r} cannot be built: {str(exc).splitlines()[0]}") from None
        if not isinstance(network, nn.Module):
            raise ModelError(f"bundle {key!r} is a {type(network).__name__}, not a torch network.")
        if kwargs.get(LAYOUT_KEY) is not None:
            object.__setattr__(network, _LAYOUT_ATTR, EncoderLayout.parse(kwargs[LAYOUT_KEY], network))
        return attach_input_adapter(network, kwargs.get("input_scale"), kwargs.get("input_shift"))

    def _each(self, network: nn.Module, method: str, default: Any) -> Any:
        d = _delegate(network)
        return default if d is None else getattr(d, method)(network)

    def norms_channels_last(self, network: nn.Module) -> bool:
        d = _delegate(network)
        return encoder_layout(network) is None and d is not None and d.norms_channels_last(network)

    def encoder_norm_layers(self, network: nn.Module) -> list[str]:
        layout = encoder_layout(network)
        return list(layout.norm_layers) if layout else self._each(network, "encoder_norm_layers", [])

    def encoder_stages(self, network: nn.Module) -> list[str]:
        layout = encoder_layout(network)
        return list(layout.stages) if layout else self._each(network, "encoder_stages", [])

    def head_prefixes(self, network: nn.Module) -> tuple[str, ...]:
        layout = encoder_layout(network)
        return layout.head if layout else self._each(network, "head_prefixes", ())

    def total_stride(self, network: nn.Module) -> int:
        layout = encoder_layout(network)
        return layout.total_stride if layout else self._each(network, "total_stride", 1)


def _read_config(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        return _read_json_object(path)
    from monai.bundle import ConfigParser

    try:
        data = ConfigParser.load_config_file(str(path))
    except Exception as exc:  # yaml errors
        raise ModelError(f"{path}: unreadable bundle config ({exc}).") from None
    return dict(data)


def _short(target: object) -> str:
    return str(target).rsplit(".", 1)[-1] if isinstance(target, str) else ""


def bundle_card_fields(folder: Path, override: dict[str, Any]) -> dict[str, Any]:
    """ModelCard fields (before the override card) for a MONAI bundle folder.

    Reads `configs/metadata.json` and the config (override `config_file`, else inference.json,
    train.json) only; the weights are read when the model loads.

    Args:
        folder: the bundle folder.
        override: the override card; a field it sets is not required from the bundle.

    Returns:
        A dict for `ModelCard` (backbone "monai_bundle").

    Raises:
        ModelError: naming the file and the field to set in `assft_override.json` when the
            classes, spacing, normalisation or ROI cannot be derived.
    """
    folder = Path(folder)
    meta_path = folder / "configs" / "metadata.json"
    meta = _read_json_object(meta_path)
    name = override.get("config_file")
    names = [str(name)] if name else list(CONFIG_NAMES)
    cfg_path = next((folder / "configs" / n for n in names if (folder / "configs" / n).is_file()), None)
    if cfg_path is None:
        raise ModelError(f"{folder / 'configs'}: none of {names} found; set \"config_file\" in assft_override.json.")
    config = _read_config(cfg_path)
    config.pop("bundle_root", None)
    config["bundle_root"] = "."  # never an absolute path of the machine that wrote it
    parser = _parser(config)
    over_pre = override.get("preprocess") or {}
    notes: list[str] = [f"MONAI bundle, {cfg_path.relative_to(folder)}."]
    fmt = meta.get("network_data_format") or {}
    image_in = (fmt.get("inputs") or {}).get("image") or {}
    channel_def = ((fmt.get("outputs") or {}).get("pred") or {}).get("channel_def")
    if not channel_def and "classes" not in override:
        raise ModelError(
            f"{meta_path}: no network_data_format.outputs.pred.channel_def; add it, or set \"classes\" "
            "({\"0\": \"background\", ...}) in assft_override.json."
        )
    classes = {int(k): str(v) for k, v in (channel_def or {}).items()}
    net_def = config.get("network_def")
    if not isinstance(net_def, dict) and "network_key" not in (override.get("backbone_kwargs") or {}):
        raise ModelError(f"{cfg_path}: no 'network_def'; set backbone_kwargs.network_key in assft_override.json.")
    in_channels = image_in.get("num_channels")
    if in_channels is None and isinstance(net_def, dict):
        in_channels = parser.get_parsed_content("network_def#in_channels", default=None)
    if in_channels is None and "in_channels" not in override:
        raise ModelError(f"{meta_path}: input channels unknown; set \"in_channels\" in assft_override.json.")
    pre: dict[str, Any] = {"crop_foreground": False}
    scale = shift = None
    transforms = (config.get("preprocessing") or {}).get("transforms") or []
    for i, t in enumerate(transforms):
        kind = _short(t.get("_target_")) if isinstance(t, dict) else ""

        def arg(field: str, default: Any = None, i: int = i) -> Any:
            return parser.get_parsed_content(f"preprocessing#transforms#{i}#{field}", default=default)

        if kind in ("Spacingd", "Spacing"):
            pre["spacing_mm"] = [float(s) for s in arg("pixdim")]
        elif kind in ("ScaleIntensityRanged", "ScaleIntensityRange"):
            a_min, a_max = float(arg("a_min")), float(arg("a_max"))
            b_min, b_max = float(arg("b_min", 0.0)), float(arg("b_max", 1.0))
            pre.update(modality=Modality.CT.value, ct_window=[a_min, a_max])
            if (b_min, b_max) != (0.0, 1.0):
                scale, shift = [b_max - b_min], [b_min]
            notes.append(f"ScaleIntensityRanged [{a_min:g}, {a_max:g}] -> [{b_min:g}, {b_max:g}] reproduced"
                         + (" (the bundle does not clip; this project does)." if not arg("clip", False) else " exactly."))
        elif kind in ("NormalizeIntensityd", "NormalizeIntensity"):
            if arg("subtrahend") is not None or arg("divisor") is not None:
                raise ModelError(
                    f"{cfg_path}: NormalizeIntensityd with a fixed subtrahend / divisor is not reproduced; set "
                    "\"preprocess\" (modality, ct_window) and backbone_kwargs \"input_scale\" / \"input_shift\" in "
                    "assft_override.json."
                )
            nonzero = bool(arg("nonzero", False))
            scheme = MriNormalisation.ZSCORE_NONZERO if nonzero else MriNormalisation.ZSCORE
            pre.update(modality=Modality.MRI.value, mri_normalisation=scheme.value)
            notes.append(
                "NormalizeIntensityd reproduced: (x − mean) / std per image"
                + (" over the non-zero voxels" if nonzero else "")
                + (" and channel" if arg("channel_wise", False) else
                   " (the bundle pools its channels; this project takes each channel alone)")
                + "."
            )
        elif kind in ("ScaleIntensityd", "ScaleIntensity") and arg("factor") is None:
            lo, hi = arg("minv", 0.0), arg("maxv", 1.0)
            if lo is None or hi is None or not arg("channel_wise", False) and in_channels not in (None, 1):
                raise ModelError(
                    f"{cfg_path}: ScaleIntensityd without minv / maxv, or pooling several channels, is not reproduced; "
                    "set \"preprocess\" (modality, mri_normalisation) in assft_override.json."
                )
            pre.update(modality=Modality.MRI.value, mri_normalisation=MriNormalisation.MINMAX.value)
            if (float(lo), float(hi)) != (0.0, 1.0):
                scale, shift = [float(hi) - float(lo)], [float(lo)]
            notes.append(f"ScaleIntensityd (x − min) / (max − min) -> [{float(lo):g}, {float(hi):g}] per image reproduced.")
        elif kind in ("CropForegroundd", "CropForeground"):
            pre["crop_foreground"] = True
        elif kind in ("Orientationd", "Orientation") and str(arg("axcodes", "RAS")) != "RAS":
            notes.append(f"the bundle orients to {arg('axcodes')!r}; this project uses RAS.")
    if "spacing_mm" not in pre and "spacing_mm" not in over_pre:
        raise ModelError(
            f"{cfg_path}: no Spacingd in 'preprocessing'; set \"preprocess\": {{\"spacing_mm\": [x, y, z]}} in "
            "assft_override.json."
        )
    if "modality" not in pre and "modality" not in over_pre:
        raise ModelError(
            f"{cfg_path}: no ScaleIntensityRanged, NormalizeIntensityd or ScaleIntensityd in 'preprocessing'; set \"preprocess\": "
            "{\"modality\": \"CT\", \"ct_window\": [lo, hi]} (or MRI with \"mri_percentiles\") in assft_override.json."
        )
    roi = None
    if isinstance(config.get("inferer"), dict):
        roi = parser.get_parsed_content("inferer#roi_size", default=None)
    if roi is None and "roi_size" not in override:
        raise ModelError(f"{cfg_path}: no inferer roi_size; set \"roi_size\" in assft_override.json.")
    in_channels = int(in_channels) if in_channels is not None else 1
    # The bundle's metadata travels with the card, so an export keeps its authors, licence and fields.
    kwargs: dict[str, Any] = {"config": config, "network_key": "network_def", "metadata": meta}
    if scale is not None:
        kwargs.update(input_scale=scale * in_channels, input_shift=shift * in_channels)  # type: ignore[operator]
    return {
        "backbone": "monai_bundle",
        "in_channels": in_channels,
        "classes": classes,
        "roi_size": [int(r) for r in roi] if roi is not None else [64, 64, 64],
        "backbone_kwargs": kwargs,
        "preprocess": pre,
        "checkpoint": "models/model.pt",
        "notes": " ".join(notes),
    }


def _bundle_config(card: Any, overlap: float) -> dict[str, Any]:
    """The inference config of an exported bundle: MONAI doing what `assft predict` does.

    `network_def` is the logits network the weights belong to (a bundle card's own, else the MONAI
    class of the backbone) and `network` the standard `@network_def` on the device; the inferer on
    `probabilities_network` (a softmax after it) blends probabilities as this project's sliding
    window does (on `network` it blends logits, as Model Zoo bundles do); `preprocessing` is this project's pipeline of `card`
    (RAS, linear resampling with edges replicated, the body crop, the intensity normalisation,
    padding to the divisor), and the inferer has its ROI, overlap and constant blending. The other
    entries of a bundle card's config are kept.

    Raises:
        ModelError: for a backbone that is not a MONAI network.
    """
    if card.backbone == "monai_bundle":
        config = copy.deepcopy(card.backbone_kwargs.get("config") or {})
        key = card.backbone_kwargs.get("network_key", "network_def")
        net_def = config.pop(key)
        if isinstance(net_def, dict):
            for name, value in (("in_channels", card.in_channels), ("out_channels", card.out_channels)):
                if name in net_def:
                    net_def[name] = value
    else:
        targets = {"unet": "monai.networks.nets.UNet", "segresnet": "monai.networks.nets.SegResNet",
                   "swin_unetr": "monai.networks.nets.SwinUNETR"}
        if card.backbone not in targets:
            raise ModelError(
                f"export as MONAI bundle: backbone {card.backbone!r} is not a MONAI network; export it as 'assft'"
                + (" or 'nnunet'." if card.backbone == "nnunet" else ".")
            )
        backbone = get_backbone(card.backbone)
        kwargs = {**backbone.default_kwargs, **card.backbone_kwargs}
        net_def = {"_target_": targets[card.backbone], "in_channels": card.in_channels, "out_channels": card.out_channels,
                   **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}, "spatial_dims": 3}
        config = {"imports": ["$import torch"]}
    config.setdefault("imports", [])
    if "$import torch" not in config["imports"]:
        config["imports"].append("$import torch")
    config.update({
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "network_def": net_def,
        "network": "$@network_def.to(@device)",
        # MONAI's inferer blends what the network returns: on this one, probabilities, as here.
        "probabilities_network": "$torch.nn.Sequential(@network, torch.nn.Softmax(dim=1))",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing_steps(card)},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(card.roi_size), "sw_batch_size": 1,
                    "overlap": float(overlap), "mode": "constant"},
    })
    return config


def _preprocessing_steps(card: Any) -> list[dict[str, Any]]:
    """MONAI transforms doing `preprocess.preprocess_image` for `card` (its PreprocessConfig)."""
    pre = card.preprocess
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": list(card.spacing_mm), "mode": "bilinear",
         "padding_mode": "border"},
    ]
    ct = Modality(pre.modality) is Modality.CT
    if pre.crop_foreground:  # the body: above the air threshold in HU (CT), non-zero (MRI)
        steps.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image", "allow_smaller": True,
                      **({"select_fn": f"$lambda x: x > {float(pre.ct_body_threshold_hu)!r}"} if ct else {})})
    shift = card.backbone_kwargs.get("input_shift")
    steps.extend(_intensity_steps(pre, card.backbone_kwargs.get("input_scale"), shift))
    # Padded with what this project's 0 becomes in the network's range (b_min; 0 for z-scores).
    steps.append({"_target_": "DivisiblePadd", "keys": "image", "k": int(pre.divisor), "mode": "constant",
                  "value": float(shift[0]) if shift else 0.0})
    steps.append({"_target_": "EnsureTyped", "keys": "image"})
    return steps


def _intensity_steps(pre: Any, scale: Any = None, shift: Any = None) -> list[dict[str, Any]]:
    """MONAI transforms doing this project's intensity normalisation of `pre` (a PreprocessConfig),
    to the [shift, shift + scale] range the network reads (the input adapter's; default [0, 1])."""
    b_min = float(shift[0]) if shift else 0.0
    b_max = b_min + (float(scale[0]) if scale else 1.0)
    if Modality(pre.modality) is Modality.CT:
        lo, hi = pre.ct_window
        return [{"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": lo, "a_max": hi,
                 "b_min": b_min, "b_max": b_max, "clip": True}]
    scheme = MriNormalisation(pre.mri_normalisation)
    if scheme is MriNormalisation.PERCENTILE:
        lo, hi = pre.mri_percentiles
        return [{"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": lo, "upper": hi,
                 "b_min": b_min, "b_max": b_max, "clip": True, "channel_wise": True}]
    if scheme is MriNormalisation.ZSCORE_BODY:
        raise ModelError(
            "export as MONAI bundle: mri_normalisation 'zscore_body' (nnU-Net's hole-filled non-zero mask) has no "
            "MONAI transform; export as 'assft', or set 'zscore_nonzero' (MONAI NormalizeIntensityd(nonzero=True))."
        )
    if scheme is MriNormalisation.MINMAX:
        return [{"_target_": "ScaleIntensityd", "keys": "image", "minv": b_min, "maxv": b_max, "channel_wise": True}]
    return [{"_target_": "NormalizeIntensityd", "keys": "image", "channel_wise": True,
             "nonzero": scheme is MriNormalisation.ZSCORE_NONZERO}]


def export_monai_bundle(network: nn.Module, card: Any, out: Path, *, overlap: float = 0.25) -> Path:
    """Write `network` as a MONAI bundle folder at `out` (configs/metadata.json, configs/inference.json, models/model.pt).

    Args:
        network: the adapted network (a MONAI network: its state-dict keys are the bundle's).
        card: its ModelCard; the classes become `channel_def`, its preprocessing MONAI transforms
            (`_preprocessing_steps`), its ROI the inferer's (`_bundle_config`).
        out: an absent or empty folder.
        overlap: the sliding-window overlap the inferer uses (the project's).

    Raises:
        ModelError: for a backbone that is not a MONAI network (TorchScript, nnU-Net).
    """
    import monai

    config = _bundle_config(card, overlap)
    out = Path(out)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    ct = Modality(card.preprocess.modality) is Modality.CT
    ours = {
        "version": "0.1.0",
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "name": "assft adapted model",
        "task": "segmentation, adapted with ASSFT Studio",
        "description": card.notes or "adapted with ASSFT Studio",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield" if ct else "magnitude",
                                 "num_channels": card.in_channels, "spatial_shape": list(card.roi_size),
                                 "dtype": "float32", "modality": Modality(card.preprocess.modality).value}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": card.out_channels,
                                 "spatial_shape": list(card.roi_size), "dtype": "float32",
                                 "channel_def": {str(k): v for k, v in sorted(card.classes.items())}}},
        },
    }
    original = card.backbone_kwargs.get("metadata") if card.backbone == "monai_bundle" else None
    metadata = _metadata_of_export(original, ours) if isinstance(original, dict) else ours
    atomic_write_text(out / "configs" / "metadata.json", json.dumps(metadata, indent=2) + "\n")
    atomic_write_text(out / "configs" / "inference.json", json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    atomic_write(out / "models" / "model.pt", lambda tmp: torch.save(state, tmp))
    return out


def _metadata_of_export(original: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """The brought bundle's metadata with what the adaptation changed: the library versions, the
    classes and channel counts, the ROI; every other field of it (authors, licence, value ranges,
    references) is kept, and the description says the model was adapted."""
    metadata = copy.deepcopy(original)
    for key in ("monai_version", "pytorch_version"):
        metadata[key] = ours[key]
    described = str(original.get("description") or original.get("name") or "MONAI bundle")
    suffix = " (adapted with ASSFT Studio)"
    metadata["description"] = described if described.endswith(suffix) else described + suffix  # once, on re-export
    fmt = metadata.setdefault("network_data_format", {})
    for side, key in (("inputs", "image"), ("outputs", "pred")):
        entry = fmt.setdefault(side, {}).setdefault(key, {})
        mine = ours["network_data_format"][side][key]
        for field in ("num_channels", "spatial_shape") + (("channel_def",) if side == "outputs" else ()):
            entry[field] = mine[field]
        for field, value in mine.items():
            entry.setdefault(field, value)
    return metadata
