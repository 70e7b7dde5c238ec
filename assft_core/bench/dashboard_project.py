"""A synthetic scored project for the dashboard benchmark (`assft bench dashboard`): N pool cases
with a score table and per-case maps, so the Query, Embedding and Viewer pages have real content.
Nothing is downloaded and no network runs.

Dataset (MSD layout + cases.csv, `write_dataset`): N pool and `n_test` test cases on `SITES`, each
a noisy MRI-like volume (2 mm voxels) with one bright ellipsoid "organ" whose label is class 1.
Every `LABELLED_EVERY`-th pool case and every test case comes with its label, so the project
(expert mode) starts with a few labelled cases. Model folder (`write_model_dir`): a card and
placeholder weights (the pages hash the checkpoint, never load it).

Scores (`store_synthetic_scores`): each case is preprocessed through the project's cache exactly
as the scoring job does (so the stored maps sit on the viewer's grid, and the cache is warm as
after a real pass); the "prediction" thresholds the bright organ, the entropy is high at its rim.
KL, ASD, confidence and the embedding (one cluster per site plus noise) are drawn from the seed.
Then the `assft` strategy proposes the project's budget: the round is PROPOSED, the state the
pages are busiest in.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from assft_core.config import ProjectConfig
from assft_core.fsutil import atomic_savez, building_folder
from assft_core.models.card import ModelCard
from assft_core.query.table import Availability, CaseScores, ScoreTable
from assft_core.session import rounds, workspace
from assft_core.session.project import Project, create_project, list_cases
from assft_core.session.query import propose_round

SITES = ("A", "B", "C", "D")
LABELLED_EVERY = 25  # pool cases 0, 25, 50, ... come labelled (8 of 200)
SPACING_MM = 2.0
EMBEDDING_DIM = 64
KL_LAYERS = [f"enc.{i}.bn" for i in range(4)]
ORGAN_INTENSITY = 400.0  # background noise is ~100 ± 15: the organ stands out


@dataclass(frozen=True)
class SyntheticCase:
    """One case of the synthetic dataset: id, site, split ("pool" or "test"), whether it is labelled."""

    case_id: str
    site: str
    split: str
    labelled: bool


def synthetic_cases(n_pool: int, n_test: int) -> list[SyntheticCase]:
    """The cases of a dataset of `n_pool` pool and `n_test` test cases, sites in turn."""
    pool = [SyntheticCase(f"pool_{i:04d}", SITES[i % len(SITES)], "pool", i % LABELLED_EVERY == 0) for i in range(n_pool)]
    test = [SyntheticCase(f"test_{i:03d}", SITES[i % len(SITES)], "test", True) for i in range(n_test)]
    return pool + test


def organ(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """(X, Y, Z) bool ellipsoid, semi-axes 15–30 % of each side, centred in the middle third."""
    size = np.array(shape, dtype=float)
    centre = size * rng.uniform(1 / 3, 2 / 3, size=3)
    radii = size * rng.uniform(0.15, 0.3, size=3)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def write_dataset(out: Path, cases: list[SyntheticCase], shape: tuple[int, int, int], *, seed: int = 0) -> Path:
    """Write an MSD dataset folder of `cases` (`shape` voxels of 2 mm; labels only where `labelled`)
    and its cases.csv (site, split). Built in a temporary sibling and renamed when complete.

    Raises:
        OSError: `out` exists and is not empty, or is not writable.
    """
    affine = np.diag([SPACING_MM, SPACING_MM, SPACING_MM, 1.0])
    rng = np.random.default_rng(seed)
    with building_folder(out) as tmp:
        for sub in ("imagesTr", "labelsTr"):
            (tmp / sub).mkdir()
        training = []
        for case in cases:
            mask = organ(shape, rng)
            image = rng.normal(100.0, 15.0, size=shape).astype(np.float32)
            image[mask] += ORGAN_INTENSITY
            # Positive everywhere: the foreground crop keeps the whole volume, so the grid is `shape`.
            nib.save(nib.Nifti1Image(np.clip(image, 1.0, None), affine), str(tmp / "imagesTr" / f"{case.case_id}.nii.gz"))
            entry = {"image": f"./imagesTr/{case.case_id}.nii.gz"}
            if case.labelled:
                nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(tmp / "labelsTr" / f"{case.case_id}.nii.gz"))
                entry["label"] = f"./labelsTr/{case.case_id}.nii.gz"
            training.append(entry)
        meta = {"name": "dashboard-bench", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "organ"},
                "training": training, "test": []}
        (tmp / "dataset.json").write_text(json.dumps(meta))
        with open(tmp / "cases.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["case_id", "site", "split"])
            writer.writerows((c.case_id, c.site, c.split) for c in cases)
    return out


def write_model_dir(out: Path) -> Path:
    """A model folder: a card (UNet, background + organ, ROI 48³, the default 2 mm MRI
    preprocessing) and placeholder weights (bytes only: the pages hash the checkpoint to find
    f_0's stored evaluation, nothing here loads a network)."""
    card = ModelCard(backbone="unet", in_channels=1, classes={0: "background", 1: "organ"}, roi_size=(48, 48, 48))
    with building_folder(out) as tmp:
        (tmp / card.checkpoint).write_bytes(b"placeholder weights: the dashboard benchmark runs no network")
        card.save(tmp)
    return out


def case_maps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stand-in prediction of a preprocessed (X, Y, Z) image: (uint8 argmax, float16 entropy).

    The organ is the bright part (above the midpoint of the intensity range); the normalised
    entropy is 1 at that threshold and falls off with the distance from it, so it is high on the
    organ's rim, as a real model's is.
    """
    lo, hi = float(image.min()), float(image.max())
    threshold = (lo + hi) / 2
    argmax = (image > threshold).astype(np.uint8)
    width = max(hi - lo, 1e-6) / 8
    entropy = np.exp(-(((image - threshold) / width) ** 2)).astype(np.float16)
    return argmax, entropy


def store_synthetic_scores(project: Project, *, seed: int = 0) -> ScoreTable:
    """Store a score table of every pool and test case of `project`, with maps, and mark round 0 scored.

    Each case is preprocessed through the project's cache (the scoring job's preprocessing), so
    its maps are on the grid the Viewer loads. Scores: KL per layer ~ site shift + noise, ASD and
    confidence uniform, the embedding a site cluster plus noise (L2-normalised).

    Returns:
        The stored table.

    Raises:
        StateError: when the round is past the state scores may be stored in.
    """
    from assft_core.data.case_cache import load_case

    rng = np.random.default_rng(seed)
    folder = project.artifact_path("scores", "round0")
    cases_dir = folder / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    settings = workspace.preprocess_settings(project)
    cache = workspace.preprocess_cache(project)
    centres = {site: rng.normal(size=EMBEDDING_DIM) for site in SITES}
    rows = []
    for i, case in enumerate(list_cases(project)):
        pre = load_case(workspace.case_record(case), settings, cache_dir=cache)
        argmax, entropy = case_maps(pre.image[0])
        atomic_savez(cases_dir / f"{case.case_id}.npz", argmax=argmax, entropy=entropy, affine=pre.affine)
        site_shift = SITES.index(case.site) if case.site in SITES else 0
        z = centres.get(case.site, centres[SITES[0]]) + 0.6 * rng.normal(size=EMBEDDING_DIM)
        fg = argmax > 0
        rows.append(CaseScores(
            case_id=case.case_id, site=case.site, cache_key=f"dashboard-bench-{i}",
            kl=0.05 + 0.1 * site_shift + rng.gamma(2.0, 0.02, size=len(KL_LAYERS)),
            embedding=z / np.linalg.norm(z), asd=float(rng.uniform(0.05, 0.5)),
            class_entropy=np.array([float(entropy[fg].astype(np.float32).mean()) if fg.any() else np.nan]),
            confidence=float(rng.uniform(0.6, 0.95)), mean_entropy=float(entropy.astype(np.float32).mean()),
            fg_fraction=float(fg.mean()), used_fallback=not fg.any(),
        ))
    table = ScoreTable("f0", rows, KL_LAYERS, Availability(True, "file", True, True), cases_dir)
    table.save(folder)
    rounds.mark_scored(project, project.relative(folder))
    return table


def scored_project(work: Path, n_cases: int, *, n_test: int = 8, shape: tuple[int, int, int] = (48, 48, 48),
                   budget: int = 5, seed: int = 0) -> Project:
    """A project in `work/project` over `n_cases` synthetic pool cases (plus `n_test` test cases),
    scored, with the `assft` strategy's `budget` picks proposed (round 0, state PROPOSED).

    Args:
        work: an absent or empty folder; the dataset goes to `work/data`, the model to
            `work/model`, the project to `work/project`.
        n_cases: N, pool cases.
        n_test: test cases (sites in turn, all labelled).
        shape: (X, Y, Z) voxels of every case (2 mm).
        budget: picks proposed.
        seed: seed of the volumes and the scores.

    Raises:
        StateError: when `work/project` already holds files.
        OSError: when `work/data` or `work/model` exist and are not empty.
    """
    work = Path(work)
    cases = synthetic_cases(n_cases, n_test)
    data = write_dataset(work / "data", cases, shape, seed=seed)
    model = write_model_dir(work / "model")
    # No more picks than unlabelled pool cases (a tiny project), at least one.
    budget = max(1, min(budget, sum(1 for c in cases if c.split == "pool" and not c.labelled)))
    project = create_project(work / "project", data, model, config=ProjectConfig(budget=budget))
    store_synthetic_scores(project, seed=seed)
    propose_round(project, "assft", budget)
    return project
