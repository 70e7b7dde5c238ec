"""The committed demo model: it loads, it is small, and it is not stale (else: rerun `assft pretrain`)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from assft_core.config import IntensityAugment, PreprocessConfig
from assft_core.data.demo import builder as demo_builder
from assft_core.errors import ModelError
from assft_core.models import pretrain as pretrain_mod
from assft_core.models.card import ModelCard
from assft_core.models.loaded import load_model
from assft_core.models.pretrain import (
    EVALUATION_FILE,
    STALE_MESSAGE,
    check_demo_model,
    demo_corpus_identity,
    demo_fingerprint,
    demo_model_dir,
    pretrain_train_config,
    stale_demo_fields,
)


def test_shipped_demo_model_is_current() -> None:
    """Fails when the corpus builder, preprocessing code/settings or pre-training settings changed."""
    check_demo_model()


def test_shipped_demo_model_loads_with_head_and_source_stats_file() -> None:
    loaded = load_model(demo_model_dir(), device="cpu")
    assert loaded.card.backbone == "unet" and loaded.card.in_channels == 1
    assert loaded.card.classes == {0: "background", 1: "CSF", 2: "grey_matter", 3: "white_matter"}
    assert loaded.has_head and loaded.card.out_channels == 4
    assert loaded.source_stats_origin == "file"
    assert set(loaded.source_stats or {}) == set(loaded.encoder_norm_layers())
    assert loaded.report.missing == [] and loaded.report.unexpected == [] and loaded.report.reinitialised == []


def test_shipped_demo_model_is_small_and_documented() -> None:
    folder = demo_model_dir()
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5 * 2**20
    evaluation = json.loads((folder / EVALUATION_FILE).read_text())
    assert set(evaluation["source_test"]["per_site"]) == {"source"}
    assert set(evaluation["target_test"]["per_site"]) == {"A", "B", "C", "D"}
    assert "Louis Collins" in (folder / "NOTICE").read_text()
    assert ModelCard.load(folder).fingerprint["train"]["steps"] == pretrain_mod.DEFAULT_STEPS


def test_staleness_check_fails_when_the_builder_version_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_builder, "BUILDER_VERSION", demo_builder.BUILDER_VERSION + 1)
    with pytest.raises(ModelError, match=r"the shipped demo model is stale: rerun `assft pretrain --force` \(.*corpus"):
        check_demo_model()


def test_staleness_check_fails_when_the_fingerprinted_code_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrain_mod, "DEMO_DATA_CODE", (*pretrain_mod.DEMO_DATA_CODE, "assft_core.errors"))
    assert stale_demo_fields() == ["code"]


def test_staleness_check_reads_the_recorded_fingerprint(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(demo_model_dir(), copy)
    card = ModelCard.load(copy)
    card.fingerprint = {**card.fingerprint, "code": "0" * 64, "train": {**card.fingerprint["train"], "steps": 20}}
    card.save(copy)
    assert stale_demo_fields(copy) == ["code", "train"]
    with pytest.raises(ModelError, match=re.escape(STALE_MESSAGE)):
        check_demo_model(copy)


def test_fingerprint_tracks_preprocessing_settings() -> None:
    base = demo_fingerprint(demo_corpus_identity(), PreprocessConfig(), pretrain_train_config())
    other = demo_fingerprint(demo_corpus_identity(), PreprocessConfig(spacing_mm=(1.5, 1.5, 1.5)), pretrain_train_config())
    assert base["preprocess"] != other["preprocess"]
    assert {k for k in base if base[k] != other[k]} == {"preprocess"}


def test_a_setting_added_later_is_fingerprinted_only_away_from_its_earlier_behaviour() -> None:
    jitter = demo_fingerprint(demo_corpus_identity(), PreprocessConfig(), pretrain_train_config())
    nnunet_cfg = dataclasses.replace(pretrain_train_config(), intensity_augment=IntensityAugment.NNUNET)
    nnunet = demo_fingerprint(demo_corpus_identity(), PreprocessConfig(), nnunet_cfg)
    assert "intensity_augment" not in jitter["train"]
    assert nnunet["train"]["intensity_augment"] == "nnunet"
    # Pre-training pins the earlier behaviour whatever the fine-tuning default is.
    assert pretrain_train_config().intensity_augment is IntensityAugment.JITTER
