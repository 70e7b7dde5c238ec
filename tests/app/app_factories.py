"""Tiny projects for the dashboard tests, made in the test (never shipped data).

A MSD-style dataset (pool p0..p3 on sites A, A, B, B; test t0, t1; 8³ voxels, one foreground
class), a model folder with a card and placeholder weights (nothing here loads a network), a hand-made `ScoreTable` stored through the engine, and a driver that takes round 0 of
an oracle project to any state through the engine's own functions.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from assft_core.models.card import ModelCard
from assft_core.query.table import Availability, CaseScores, ScoreTable
from assft_core.session import rounds
from assft_core.session.evaluation import baseline_path
from assft_core.session.labels import label_with_oracle
from assft_core.session.project import Project
from assft_core.session.query import propose_round
from assft_core.session.rounds import RoundState
from assft_core.session.workspace import base_model

ROOT = Path(__file__).resolve().parents[2]  # the repository
PAGE_TIMEOUT_S = 60  # first page run imports torch (query metrics): slow on a busy 2-core machine

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (8, 8, 8)
CASES = [("p0", "A", "pool"), ("p1", "A", "pool"), ("p2", "B", "pool"), ("p3", "B", "pool"),
         ("t0", "A", "test"), ("t1", "B", "test")]


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Save `data` as NIfTI at `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def blob_label(seed: int) -> np.ndarray:
    """(8, 8, 8) uint8 label: a 4×4×4 foreground block whose position depends on `seed`."""
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lo = 1 + seed % 3
    lab[lo : lo + 4, 2:6, 2:6] = 1
    return lab


def make_dataset(root: Path, unlabelled: tuple[str, ...] = ()) -> Path:
    """An MSD dataset folder with `CASES` and a cases.csv of site and split.

    Every case has a label file except the pool cases named in `unlabelled`.
    """
    rng = np.random.default_rng(0)
    training = []
    for i, (cid, _, _) in enumerate(CASES):
        write_nifti(root / "imagesTr" / f"{cid}.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
        entry = {"image": f"./imagesTr/{cid}.nii.gz"}
        if cid not in unlabelled:
            write_nifti(root / "labelsTr" / f"{cid}.nii.gz", blob_label(i))
            entry["label"] = f"./labelsTr/{cid}.nii.gz"
        training.append(entry)
    meta = {"name": "tiny-app", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "blob"},
            "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta))
    with open(root / "cases.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "site", "split"])
        writer.writerows(CASES)
    return root


def make_model_dir(root: Path) -> Path:
    """A model folder with a card (backbone unet, 2 classes, ROI 32³, 2 mm) and placeholder weights
    (bytes only: the pages hash the checkpoint to find f_0's stored evaluation, never load it)."""
    card = ModelCard(backbone="unet", in_channels=1, classes={0: "background", 1: "blob"}, roi_size=(32, 32, 32))
    root.mkdir(parents=True)
    (root / card.checkpoint).write_bytes(b"placeholder weights")
    card.save(root)
    return root


def store_scores(project: Project, availability: Availability | None = None) -> None:
    """Store a hand-made ScoreTable for the pool and test cases and mark the round scored.

    KL, ASD and embeddings differ per case, so the `assft` strategy has a definite order.
    `availability` defaults to every term available, source statistics from a file.
    """
    rows = []
    for i, (cid, site, _) in enumerate(CASES):
        z = np.array([np.cos(i), np.sin(i), 0.5 * i], dtype=np.float64)
        rows.append(CaseScores(case_id=cid, site=site, cache_key=f"k{i}", kl=np.array([0.1 + 0.2 * i]),
                               embedding=z / np.linalg.norm(z), asd=0.1 + 0.05 * ((i * 3) % 4),
                               class_entropy=np.array([0.2]), confidence=0.8, mean_entropy=0.1, fg_fraction=0.1))
    table = ScoreTable("f0", rows, ["enc.0.bn"], availability or Availability(True, "file", True, True))
    folder = project.artifact_path("scores", "round0")
    table.save(folder)
    rounds.mark_scored(project, project.relative(folder))


EVAL_METRICS = {"overall": {"mean_dice": 0.6}, "per_site": {"A": {"mean_dice": 0.7}, "B": {"mean_dice": 0.5}},
                "mean_dice": 0.6, "labelled": 2, "evaluated_on": "test"}


def store_baseline(project: Project, mean: float, sites: dict[str, float]) -> None:
    """f_0's stored test evaluation, as `evaluate_baseline` would write it."""
    baseline = {"overall": {"mean_dice": mean}, "per_site": {s: {"mean_dice": v} for s, v in sites.items()},
                "evaluated_on": "test"}
    path = baseline_path(project, base_model(project))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(baseline))


def drive_oracle_round(project: Project, until: RoundState) -> list[str]:
    """Take round 0 of an oracle project to `until` through the engine; returns the approved ids.

    Steps: scores stored, 2 picks proposed by `assft`, all approved, oracle labels, a trained
    checkpoint path recorded, `EVAL_METRICS` recorded.
    """
    order = list(RoundState)
    store_scores(project)
    approved: list[str] = []
    if order.index(until) >= order.index(RoundState.PROPOSED):
        propose_round(project, "assft", 2)
    if order.index(until) >= order.index(RoundState.APPROVED):
        approved = [q.case_id for q in rounds.approve(project)]
    if order.index(until) >= order.index(RoundState.LABELLED):
        label_with_oracle(project)
    if order.index(until) >= order.index(RoundState.TRAINED):
        rounds.mark_trained(project, "artifacts/models/round0")
    if order.index(until) >= order.index(RoundState.EVALUATED):
        rounds.mark_evaluated(project, EVAL_METRICS)
    assert rounds.current_round(project).state is until
    return approved
