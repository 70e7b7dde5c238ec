"""The model card: everything besides the weights that a checkpoint needs to be used correctly.

A model is always a checkpoint plus this card (docs/architecture.md): backbone and its arguments,
input channels, classes, ROI, spacing in mm, intensity normalisation, the checkpoint and
source-statistics file names, and a fingerprint of the data and code that made it (filled by
`assft pretrain` and fine-tuning; a stale fingerprint fails a test that says how to rebuild).
Saved as JSON (`model_card.json`) beside the checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assft_core.config import Modality, PreprocessConfig, from_dict, to_dict
from assft_core.errors import ModelError
from assft_core.fsutil import atomic_write_text

CARD_FILE = "model_card.json"
CARD_FORMAT = "assft-model-card/1"


@dataclass
class ModelCard:
    """How to build, feed and interpret one checkpoint.

    Attributes:
        backbone: registered backbone name ("unet", "segresnet", "swin_unetr", "torchscript").
        backbone_kwargs: keyword arguments of the backbone's constructor (besides channel counts).
        in_channels: C, input channels the network takes.
        classes: label index -> name, 0 = background, consecutive; K = len(classes).
        roi_size: sliding-window / training ROI in voxels (D, H, W).
        preprocess: intensity normalisation, modality and target spacing the network was trained with.
        spacing_mm: voxel size in mm (D, H, W axes); None takes `preprocess.spacing_mm`.
        checkpoint: weights file name, relative to the card's folder (or absolute).
        source_stats: source-statistics file name beside the checkpoint, or None (METHOD.md §1).
        fingerprint: what made the checkpoint (data hash, code hash, steps ...); free-form, JSON.
        notes: free text for people (where the weights come from, licence, measured Dice ...).
    """

    backbone: str
    in_channels: int
    classes: dict[int, str]
    roi_size: tuple[int, int, int] = (64, 64, 64)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    spacing_mm: tuple[float, float, float] | None = None
    checkpoint: str = "model.pt"
    source_stats: str | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self) -> None:
        self.classes = {int(k): str(v) for k, v in self.classes.items()}
        self.roi_size = tuple(int(r) for r in self.roi_size)  # type: ignore[assignment]
        if self.spacing_mm is None:
            self.spacing_mm = tuple(float(s) for s in self.preprocess.spacing_mm)  # type: ignore[assignment]
        else:
            self.spacing_mm = tuple(float(s) for s in self.spacing_mm)  # type: ignore[assignment]
        problems = self.problems()
        if problems:
            raise ModelError("invalid model card: " + "; ".join(problems))

    @property
    def out_channels(self) -> int:
        """K, the number of classes including background."""
        return len(self.classes)

    def problems(self) -> list[str]:
        """Every inconsistency of the card's fields, each with its fix (empty when valid)."""
        out: list[str] = []
        if not isinstance(self.backbone, str) or not self.backbone:
            out.append("'backbone' must be a backbone name such as 'unet'")
        if not isinstance(self.in_channels, int) or self.in_channels < 1:
            out.append(f"'in_channels' must be a positive integer, got {self.in_channels!r}")
        if sorted(self.classes) != list(range(len(self.classes))) or len(self.classes) < 2:
            out.append(
                f"'classes' must map 0 (background), 1, ... K-1 to names with K >= 2; got keys {sorted(self.classes)}"
            )
        if len(self.roi_size) != 3 or any(r < 1 for r in self.roi_size):
            out.append(f"'roi_size' must be 3 positive integers, got {list(self.roi_size)}")
        spacing = self.spacing_mm or ()
        if len(spacing) != 3 or any(not math.isfinite(s) or s <= 0 for s in spacing):
            out.append(f"'spacing_mm' must be 3 positive numbers in mm, got {list(spacing)}")
        elif tuple(spacing) != tuple(float(s) for s in self.preprocess.spacing_mm):
            out.append(
                f"'spacing_mm' {list(spacing)} differs from 'preprocess.spacing_mm' "
                f"{list(self.preprocess.spacing_mm)}; give one value (spacing_mm may be omitted)"
            )
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            out.append("'checkpoint' must name the weights file")
        return out

    def to_json_dict(self) -> dict[str, Any]:
        """The card as a JSON-ready dict (with a format tag)."""
        data = to_dict(self)
        data["format"] = CARD_FORMAT
        return data

    def save(self, path: Path) -> Path:
        """Write the card as JSON to `path` (a file, or a folder that gets `model_card.json`).

        Written to a temporary file then renamed, so a reader never sees half a card.

        Returns:
            The file written.
        """
        path = Path(path)
        if path.is_dir():
            path = path / CARD_FILE
        return atomic_write_text(path, json.dumps(self.to_json_dict(), indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """Read and validate a card (a JSON file, or a folder holding `model_card.json`).

        A folder without `model_card.json` that is a MONAI bundle or an nnU-Net v2 trained-model
        folder gets its card derived from its own files (`assft_core.models.formats`).

        Raises:
            ModelError: naming the file, when it is missing, not JSON, or has a bad/unknown field.
        """
        path = Path(path)
        if path.is_dir():
            if not (path / CARD_FILE).is_file():
                from assft_core.models.formats import detect_format, foreign_card

                if detect_format(path) is not None:
                    return foreign_card(path)  # a MONAI bundle or an nnU-Net v2 folder
            path = path / CARD_FILE
        if not path.is_file():
            raise ModelError(
                f"{path}: model card not found; give the model folder or its {CARD_FILE} (or a MONAI bundle / "
                "nnU-Net v2 trained-model folder)."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: not a JSON model card ({exc}); fix the file or regenerate it.") from None
        if not isinstance(data, dict):
            raise ModelError(f"{path}: a model card is a JSON object; got {type(data).__name__}.")
        data = dict(data)
        fmt = data.pop("format", CARD_FORMAT)
        if fmt != CARD_FORMAT:
            raise ModelError(f"{path}: card format {fmt!r} is not supported (expected {CARD_FORMAT!r}).")
        missing = [k for k in ("backbone", "in_channels", "classes") if k not in data]
        if missing:
            raise ModelError(f"{path}: model card lacks required field(s) {missing}; add them.")
        try:
            card = from_dict(cls, data)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc}") from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise ModelError(f"{path}: invalid model card: {exc}") from None
        return card

    def resolve(self, folder: Path, name: str) -> Path:
        """A file named in the card (`checkpoint` or `source_stats`), resolved against `folder`."""
        p = Path(name)
        return p if p.is_absolute() else Path(folder) / p


def card_warnings(
    card: ModelCard,
    dataset_spacing: tuple[float, float, float] | None,
    dataset_modality: str | Modality | None,
    rel_tol: float = 0.05,
) -> list[str]:
    """Warnings for `assft init --model-config`: where the dataset differs from the card.

    Args:
        card: the model card.
        dataset_spacing: the dataset's (median) voxel spacing in mm, or None when unknown.
        dataset_modality: the dataset's modality ("CT"/"MRI"), or None when unknown.
        rel_tol: relative spacing difference per axis tolerated without a warning.

    Returns:
        Human-readable warnings (empty when the dataset fits the card).
    """
    out: list[str] = []
    card_modality = Modality(card.preprocess.modality).value
    if dataset_modality is not None:
        ds_mod = Modality(dataset_modality).value if not isinstance(dataset_modality, Modality) else dataset_modality.value
        if ds_mod != card_modality:
            out.append(
                f"the model was trained on {card_modality} but the dataset is {ds_mod}: intensity "
                "normalisation differs and the pre-trained features may not transfer; expect a large "
                "domain gap at round 0."
            )
    if dataset_spacing is not None and card.spacing_mm is not None:
        diffs = [abs(d - c) / c for d, c in zip(dataset_spacing, card.spacing_mm)]
        if any(d > rel_tol for d in diffs):
            out.append(
                f"dataset spacing {[round(float(s), 3) for s in dataset_spacing]} mm differs from the model's "
                f"{list(card.spacing_mm)} mm: images are resampled to the model's spacing; structures "
                "thinner than the coarser spacing may be lost."
            )
    return out
