"""`assft init` warns when the dataset's spacing or modality differ from the model card; the
training request carries the DDP process count to the round's trainer."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from engine_factories import run_cli

from assft_core.errors import StateError
from assft_core.models.card import ModelCard
from assft_core.session.project import Project
from assft_core.session.training_round import TrainRequest, _train_fn
from assft_core.session.workspace import model_fit_warnings
from assft_core.train.torchrun_train import train_with_torchrun


def test_no_warning_when_the_card_fits(fresh_project: Project) -> None:
    # the tiny corpus is MRI at 4 mm (site C 4×4×12 mm, a minority: the median is 4 mm), as the card
    assert model_fit_warnings(fresh_project) == []


def test_init_warns_on_spacing_and_modality(tmp_path: Path, tiny_demo_corpus: Path, tiny_model_dir: Path) -> None:
    card = ModelCard.load(tiny_model_dir)
    card.preprocess.spacing_mm = (1.0, 1.0, 1.0)
    card.spacing_mm = None
    card.preprocess.modality = type(card.preprocess.modality)("CT")
    card.checkpoint = str((tiny_model_dir / card.checkpoint).resolve())
    card_file = card.save(tmp_path / "ct_card.json")
    run = run_cli("init", tmp_path / "proj", "--dataset", tiny_demo_corpus, "--model-config", card_file, "--oracle")
    assert run.code == 0, run.err
    warnings = [line for line in run.out.splitlines() if line.startswith("warning:")]
    assert len(warnings) >= 2, run.out
    assert any("CT" in w for w in warnings) and any("spacing" in w for w in warnings)


def test_train_request_carries_nproc(fresh_project: Project) -> None:
    request = TrainRequest.from_params(fresh_project, {"nproc": 2})
    assert request.nproc == 2 and request.to_params()["nproc"] == 2
    assert TrainRequest.from_params(fresh_project, {}).nproc == 1
    with pytest.raises(StateError, match="nproc"):
        TrainRequest.from_params(fresh_project, {"nproc": -1})
    card = ModelCard.load(Path(fresh_project.model["path"]))
    assert _train_fn(card, 1) is None  # the plain trainer in this process
    ddp = _train_fn(card, 2)
    assert isinstance(ddp, functools.partial) and ddp.func is train_with_torchrun and ddp.keywords["nproc"] == 2
