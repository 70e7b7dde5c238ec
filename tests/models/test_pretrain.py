"""`assft pretrain` end to end on the tiny demo corpus (4 mm, 1-2 steps at 32³), and its refusals."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from assft_core.cli import main
from assft_core.config import InferenceConfig, PreprocessConfig, TrainConfig
from assft_core.data.importers import import_dataset
from assft_core.data.preprocess import invert_label, preprocess_case
from assft_core.data.records import Split
from assft_core.errors import DataError, ModelError
from assft_core.models import pretrain as pretrain_mod
from assft_core.models.card import ModelCard
from assft_core.models.fingerprint import files_hash
from assft_core.models.loaded import load_model
from assft_core.models.pretrain import EVALUATION_FILE, NOTICE_FILE, demo_model_dir, pretrain
from assft_core.models.source_stats import load_source_stats

PRE = PreprocessConfig(spacing_mm=(4.0, 4.0, 4.0))


def _cfg(seed: int = 0) -> TrainConfig:
    return TrainConfig(steps=1, batch_size=1, patch_size=(32, 32, 32), checkpoint_every=100, seed=seed, device="cpu")


def _rows(corpus: Path) -> list[dict[str, str]]:
    with open(corpus / "cases.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def pretrained(tiny_demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One 1-step pre-training on the tiny corpus; returns (model folder, ids the trainer saw)."""
    seen: list[str] = []
    real_train = pretrain_mod.train

    def spy(cfg, network, data, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(data.case_ids()["labelled"] + data.case_ids()["pseudo"])
        return real_train(cfg, network, data, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(pretrain_mod, "train", spy)
    try:
        out = tmp_path_factory.mktemp("pretrain") / "model"
        shutil.copytree(demo_model_dir(), out)  # an older model: --force must replace it whole
        pretrain(tiny_demo_corpus, out, train_cfg=_cfg(seed=1), preprocess=PRE, force=True)
    finally:
        mp.undo()
    return out, seen


def test_trains_on_source_train_only_and_writes_a_loadable_model(pretrained, tiny_demo_corpus: Path) -> None:
    out, seen = pretrained
    source_ids = [r["case_id"] for r in _rows(tiny_demo_corpus) if r["split"] == "source_train"]
    assert seen == source_ids and len(source_ids) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.pt", "model_card.json", "source_stats.pt", EVALUATION_FILE, NOTICE_FILE]
    )
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no temporary folder left behind
    loaded = load_model(out, device="cpu")
    assert loaded.has_head and loaded.source_stats_origin == "file"
    assert loaded.card.classes == {0: "background", 1: "CSF", 2: "grey_matter", 3: "white_matter"}
    assert loaded.report.missing == [] and loaded.report.reinitialised == []
    assert "Copyright (C) 1993-2009 Louis Collins" in (out / NOTICE_FILE).read_text()


def test_source_stats_pool_every_source_train_voxel(pretrained, tiny_demo_corpus: Path) -> None:
    """μ, σ² in the file = Σx/n and Σx²/n − μ² summed by hand over the source_train scoring passes."""
    out, _ = pretrained
    loaded = load_model(out, device="cpu")
    cfg = InferenceConfig(roi_size=loaded.card.roi_size, device="cpu")
    records = [c for c in import_dataset(tiny_demo_corpus).cases if c.split is Split.SOURCE_TRAIN]
    passes = [loaded.scoring_pass(torch.from_numpy(preprocess_case(r, PRE).image), cfg).norm_moments for r in records]
    stats = load_source_stats(out / "source_stats.pt")
    assert set(stats) == set(loaded.encoder_norm_layers()) and len(stats) > 4
    for layer, (mean, var) in stats.items():
        n = sum(p[layer].n for p in passes)
        mu = sum(p[layer].sum for p in passes) / n
        expected_var = sum(p[layer].sumsq for p in passes) / n - mu * mu
        torch.testing.assert_close(mean, mu, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(var, expected_var.clamp_min(0), rtol=1e-6, atol=1e-9)


def test_evaluation_per_site_matches_a_hand_computed_dice(pretrained, tiny_demo_corpus: Path) -> None:
    out, _ = pretrained
    evaluation = json.loads((out / EVALUATION_FILE).read_text())
    assert set(evaluation["source_test"]["per_site"]) == {"source"}
    assert set(evaluation["target_test"]["per_site"]) == {"A", "B", "C", "D"}
    case = evaluation["target_test"]["cases"][0]
    record = next(c for c in import_dataset(tiny_demo_corpus).cases if c.case_id == case["case_id"])
    loaded = load_model(out, device="cpu")
    pre = preprocess_case(record, PRE)
    probs = loaded.infer(torch.from_numpy(pre.image), InferenceConfig(roi_size=loaded.card.roi_size, device="cpu"))
    pred = invert_label(probs.argmax(0).numpy().astype(np.uint8), pre)
    ref = np.asarray(nib.load(record.label_path).dataobj)
    for k in (1, 2, 3):
        a, b = pred == k, ref == k
        dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
        assert case["classes"][str(k)]["dice"] == pytest.approx(dice, abs=1e-6)
    assert "source_test source" in ModelCard.load(out).notes


def test_fingerprint_records_corpus_data_and_settings(pretrained, tiny_demo_corpus: Path) -> None:
    out, _ = pretrained
    fp = ModelCard.load(out).fingerprint
    used = [r["case_id"] for r in _rows(tiny_demo_corpus) if r["split"] in ("source_train", "source_test", "test")]
    files = [tiny_demo_corpus / "imagesTr" / f"{c}_0000.nii.gz" for c in used]
    files += [tiny_demo_corpus / "labelsTr" / f"{c}.nii.gz" for c in used]
    assert fp["data"] == files_hash(files, tiny_demo_corpus) and fp["data_cases"] == len(used) == 7
    assert fp["corpus"]["size"] == "tiny" and fp["corpus"]["seed"] == 0
    assert fp["train"]["steps"] == 1 and fp["preprocess"]["spacing_mm"] == [4.0, 4.0, 4.0]
    assert fp["network"]["kwargs"]["norm"] == "batch"


def test_refresh_fingerprint_rewrites_the_code_only_when_the_inputs_are_bit_identical(
    pretrained, tiny_demo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = pretrained
    model = tmp_path / "model"
    shutil.copytree(out, model)
    fp = ModelCard.load(model).fingerprint
    used = [c for c in import_dataset(tiny_demo_corpus).cases if c.split.value in ("source_train", "source_test", "test")]
    assert fp["inputs"] == {"hash": pretrain_mod.preprocessed_inputs_hash(used, PRE), "data": fp["data"]}
    assert pretrain_mod.refresh_demo_fingerprint(model, tiny_demo_corpus) == []
    # Edited data code with the same outputs: the code entries are rewritten, the weights kept.
    weights = (model / "model.pt").read_bytes()
    monkeypatch.setattr(pretrain_mod, "DEMO_DATA_CODE", (*pretrain_mod.DEMO_DATA_CODE, "assft_core.errors"))
    assert main(["pretrain", "--refresh-fingerprint", "--corpus", str(tiny_demo_corpus), "--out", str(model)]) == 0
    assert "rewritten: code, code_modules" in capsys.readouterr().out
    refreshed = ModelCard.load(model).fingerprint
    assert refreshed["code"] != fp["code"] and refreshed["code_modules"][-1] == "assft_core.errors"
    assert {k: v for k, v in refreshed.items() if k not in ("code", "code_modules")} == {
        k: v for k, v in fp.items() if k not in ("code", "code_modules")}
    assert (model / "model.pt").read_bytes() == weights
    # Code that changes one voxel of one case: refused, the card untouched.
    real = pretrain_mod.preprocess_case

    def nudged(record, cfg, **kwargs):  # type: ignore[no-untyped-def]
        case = real(record, cfg, **kwargs)
        if record.case_id == used[-1].case_id:
            case.image.flat[0] += 1e-6
        return case

    monkeypatch.setattr(pretrain_mod, "preprocess_case", nudged)
    monkeypatch.setattr(pretrain_mod, "DEMO_DATA_CODE", pretrain_mod.DEMO_DATA_CODE[:-1])
    with pytest.raises(ModelError, match="other arrays.*--force"):
        pretrain_mod.refresh_demo_fingerprint(model, tiny_demo_corpus)
    assert ModelCard.load(model).fingerprint == refreshed
    # A model of another corpus build is not the code's to refresh.
    card = ModelCard.load(model)
    card.fingerprint["corpus"]["seed"] = 7
    card.save(model)
    with pytest.raises(ModelError, match=r"\['corpus'\].*--force"):
        pretrain_mod.refresh_demo_fingerprint(model, tiny_demo_corpus)


def test_force_replaced_an_old_model_and_refuses_otherwise(pretrained, tiny_demo_corpus: Path, tmp_path: Path) -> None:
    out, _ = pretrained
    fp = ModelCard.load(out).fingerprint
    assert fp["corpus"]["size"] == "tiny" and fp["train"]["seed"] == 1  # the shipped model was replaced
    assert (out / "model.pt").read_bytes() != (demo_model_dir() / "model.pt").read_bytes()
    before = (out / "model.pt").read_bytes()
    with pytest.raises(ModelError, match="already exists.*--force"):
        pretrain(tiny_demo_corpus, out, train_cfg=_cfg(), preprocess=PRE)
    assert (out / "model.pt").read_bytes() == before
    foreign = tmp_path / "mydata"
    foreign.mkdir()
    (foreign / "scan.nii.gz").write_bytes(b"precious")
    with pytest.raises(ModelError, match="no model_card.json"):
        pretrain(tiny_demo_corpus, foreign, train_cfg=_cfg(), preprocess=PRE, force=True)
    assert (foreign / "scan.nii.gz").read_bytes() == b"precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        pretrain(tiny_demo_corpus, tmp_path / "file", train_cfg=_cfg(), preprocess=PRE, force=True)


def test_cli_errors_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain", "--steps", "0", "--out", str(tmp_path / "m")]) == 1
    assert "--steps 0" in capsys.readouterr().err
    assert main(["pretrain", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 1
    assert "corpus folder not found" in capsys.readouterr().err


def test_refuses_a_dataset_without_classes_or_source_cases(tmp_path: Path, tiny_demo_corpus: Path) -> None:
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    nib.save(img, pairs / "a.nii.gz")
    with pytest.raises(DataError, match="names no classes"):
        pretrain(pairs, tmp_path / "m1", train_cfg=_cfg(), preprocess=PRE)
    no_source = tmp_path / "no_source"
    shutil.copytree(tiny_demo_corpus, no_source)
    rows = [r for r in _rows(no_source) if r["split"] != "source_train"]
    with open(no_source / "cases.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["case_id", "site", "split"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match="found 0"):
        pretrain(no_source, tmp_path / "m2", train_cfg=_cfg(), preprocess=PRE)
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()
