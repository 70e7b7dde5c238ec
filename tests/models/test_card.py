from __future__ import annotations

import json
from pathlib import Path

import pytest

from assft_core.config import Modality, PreprocessConfig
from assft_core.errors import ModelError
from assft_core.models.card import ModelCard, card_warnings


def _card() -> ModelCard:
    return ModelCard(
        backbone="unet",
        in_channels=1,
        classes={0: "background", 1: "gm", 2: "wm"},
        roi_size=(32, 32, 32),
        preprocess=PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), modality=Modality.MRI),
        source_stats="source_stats.pt",
        fingerprint={"data": "abc", "code": "def"},
    )


def test_round_trip(tmp_path: Path) -> None:
    card = _card()
    path = card.save(tmp_path)
    back = ModelCard.load(path)
    assert back == card
    assert back.out_channels == 3 and back.spacing_mm == (2.0, 2.0, 2.0)
    assert not list(tmp_path.glob(".card-*"))  # temp file renamed away


@pytest.mark.parametrize(
    "patch, needle",
    [
        ({"classes": {"1": "a", "2": "b"}}, "classes"),
        ({"roi_size": [32, 32]}, "roi_size"),
        ({"typo_field": 1}, "typo_field"),
        ({"spacing_mm": [1.0, 1.0, 1.0]}, "spacing_mm"),
    ],
)
def test_bad_field_names_file_and_field(tmp_path: Path, patch: dict, needle: str) -> None:
    data = _card().to_json_dict()
    data.update(patch)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError) as err:
        ModelCard.load(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "model_card.json"
    path.write_text("{oops")
    with pytest.raises(ModelError, match="not a JSON model card"):
        ModelCard.load(tmp_path)


def test_card_warnings() -> None:
    card = _card()
    assert card_warnings(card, (2.0, 2.0, 2.05), "MRI") == []
    warns = card_warnings(card, (1.0, 1.0, 3.0), "CT")
    assert len(warns) == 2
    assert any("CT" in w for w in warns) and any("spacing" in w for w in warns)
