"""Foreign model folders as model cards: MONAI bundles and nnU-Net v2 trained-model folders.

`ModelCard.load(folder)` reads a folder without `model_card.json` through `foreign_card`: the
folder's format is detected (`detect_format`), its own files give the card's fields
(`monai_bundle.bundle_card_fields`, `nnunet_folder.nnunet_card_fields`), and an optional override
card beside them, `assft_override.json`, sets what cannot be derived or should differ (any card
field; `preprocess` and `backbone_kwargs` are merged key by key; format keys: `config_file` for a
bundle, `configuration`, `fold`, `checkpoint_name` for nnU-Net). Everything downstream (scoring
hooks, training, export) then works on the registered backbones `monai_bundle` and `nnunet`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assft_core.errors import ModelError
from assft_core.fsutil import atomic_write_text

if TYPE_CHECKING:
    from assft_core.models.card import ModelCard

OVERRIDE_FILE = "assft_override.json"
_FORMAT_KEYS = ("config_file", "configuration", "fold", "checkpoint_name")


def detect_format(folder: Path) -> str | None:
    """"monai_bundle", "nnunet_v2" or None (not a foreign model folder this project reads)."""
    from assft_core.models.formats.monai_bundle import is_monai_bundle
    from assft_core.models.formats.nnunet_folder import is_nnunet_folder

    folder = Path(folder)
    if not folder.is_dir():
        return None
    if is_monai_bundle(folder):
        return "monai_bundle"
    if is_nnunet_folder(folder):
        return "nnunet_v2"
    return None


def read_override(folder: Path) -> dict[str, Any]:
    """The folder's override card (`assft_override.json`) as a dict; {} when absent.

    Raises:
        ModelError: naming the file when it is not a JSON object.
    """
    path = Path(folder) / OVERRIDE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not JSON ({exc}); fix the override card.") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: an override card is a JSON object of model-card fields.")
    return data


def update_override(folder: Path, **fields: Any) -> Path:
    """Set `fields` in the folder's override card (created when absent); returns its path."""
    data = read_override(folder)
    data.update(fields)
    return atomic_write_text(Path(folder) / OVERRIDE_FILE, json.dumps(data, indent=2) + "\n")


def foreign_card(folder: Path) -> ModelCard:
    """The model card of a MONAI bundle or nnU-Net v2 folder, with its override card applied.

    Raises:
        ModelError: when the folder is neither format (lists what each needs), or when a field
            cannot be derived (names the field to set in `assft_override.json`).
    """
    from assft_core.config import from_dict
    from assft_core.models.card import CARD_FILE, ModelCard
    from assft_core.models.formats.monai_bundle import bundle_card_fields
    from assft_core.models.formats.nnunet_folder import nnunet_card_fields

    folder = Path(folder)
    fmt = detect_format(folder)
    if fmt is None:
        raise ModelError(
            f"{folder}: not a model folder: no {CARD_FILE}, no MONAI bundle (configs/metadata.json + "
            "configs/inference.json, models/model.pt) and no nnU-Net v2 folder (dataset.json, plans.json, "
            "fold_N/checkpoint_final.pth)."
        )
    override = read_override(folder)
    fields = bundle_card_fields(folder, override) if fmt == "monai_bundle" else nnunet_card_fields(folder, override)
    for key, value in override.items():
        if key in _FORMAT_KEYS or key == "format":
            continue
        if key in ("preprocess", "backbone_kwargs") and isinstance(value, dict):
            fields[key] = {**fields.get(key, {}), **value}
        else:
            fields[key] = value
    if override:
        fields["notes"] = (fields.get("notes", "") + f" Override card {OVERRIDE_FILE}: {sorted(override)}.").strip()
    try:
        return from_dict(ModelCard, fields)
    except ModelError as exc:
        raise ModelError(f"{folder}: {exc} (fix it in {OVERRIDE_FILE})") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{folder}: invalid model card from the {fmt} folder: {exc}; fix it in {OVERRIDE_FILE}.") from None


EXPORT_FORMATS = ("assft", "monai_bundle", "nnunet")


def export_model(model_dir: Path, fmt: str, out: Path, *, overlap: float = 0.25) -> Path:
    """Write the model in `model_dir` (any folder `load_model` reads) to `out` in format `fmt`.

    "monai_bundle": configs/metadata.json, configs/inference.json, models/model.pt (MONAI networks:
    unet, segresnet, swin_unetr, monai_bundle); "nnunet": dataset.json, plans.json,
    fold_F/checkpoint_final.pth (backbone nnunet only). A source-statistics file is copied beside
    and named in an `assft_override.json`, so this project reads the exported folder back with its
    statistics; the foreign library ignores both files. `overlap`: the sliding-window overlap an
    exported bundle's inferer uses (the project's).

    Raises:
        ModelError: an unknown format, or a backbone the format cannot hold (names the ones it can).
    """
    import shutil

    from assft_core.models.formats.monai_bundle import export_monai_bundle
    from assft_core.models.formats.nnunet_folder import export_nnunet_folder
    from assft_core.models.loaded import load_model

    if fmt not in EXPORT_FORMATS[1:]:
        raise ModelError(f"export format {fmt!r} unknown; choose one of {list(EXPORT_FORMATS)}.")
    loaded = load_model(model_dir, device="cpu")
    card = loaded.card
    if fmt == "monai_bundle":
        export_monai_bundle(loaded.network, card, Path(out), overlap=overlap)
    else:
        export_nnunet_folder(loaded.network, card, Path(out))
    fields: dict[str, Any] = {"classes": {str(k): v for k, v in card.classes.items()}}
    if card.source_stats:
        src = card.resolve(loaded.model_dir or Path(model_dir), card.source_stats)
        shutil.copy2(src, Path(out) / "source_stats.pt")
        fields["source_stats"] = "source_stats.pt"
    update_override(Path(out), **fields)
    return Path(out)
