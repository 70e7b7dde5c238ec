"""A scored tiny project WITH per-case maps, and plotly-JSON readers, for the Embedding and
Viewer page tests.

The conftest's `store_scores` stores scalar scores only; the viewer also needs each case's stored
argmax / entropy maps on the preprocessed grid. That grid is derived by hand here, not by calling
the preprocessing: the tiny cases are 8³ voxels of 2 mm at the origin (RAS), already at the
target spacing, with random intensities positive somewhere on every face (so the foreground crop
keeps all 8³); padding to a multiple of 16 adds 4 voxels before and after each axis. So the grid is
16³ with voxel (i, j, k) at world (2i − 8, 2j − 8, 2k − 8) mm, and native voxel v is grid voxel v + 4.
"""

from __future__ import annotations

import base64
import json

import numpy as np
from app_factories import CASES

from assft_core.fsutil import atomic_savez
from assft_core.query.table import Availability, CaseScores, ScoreTable
from assft_core.session import rounds
from assft_core.session.project import Project

GRID = (16, 16, 16)
PAD = 4
GRID_AFFINE = np.array([[2.0, 0, 0, -8.0], [0, 2.0, 0, -8.0], [0, 0, 2.0, -8.0], [0, 0, 0, 1.0]])
# The predicted cube of every case, in grid voxels (x, y, z): 3 × 4 × 2 voxels.
PRED_BOX = (slice(6, 9), slice(5, 9), slice(9, 11))
ENTROPY_IN_BOX = 0.75


def prediction() -> np.ndarray:
    """(16, 16, 16) uint8 argmax: class 1 inside `PRED_BOX`."""
    argmax = np.zeros(GRID, dtype=np.uint8)
    argmax[PRED_BOX] = 1
    return argmax


def store_scores_with_maps(project: Project, *, embedding: bool = True) -> ScoreTable:
    """Store a ScoreTable of every case of `CASES` with maps and mark round 0 scored.

    Scores: KL 0.1 + 0.2 i (one layer), ASD 0.1 + 0.05 ((3 i) mod 4), confidence 0.8, and
    embeddings at distinct angles (as the conftest's `store_scores`), so the order is definite.
    Maps: `prediction()`, entropy `ENTROPY_IN_BOX` inside the box and 0 elsewhere.
    """
    folder = project.artifact_path("scores", "round0")
    cases_dir = folder / "cases"
    cases_dir.mkdir(parents=True)
    entropy = np.where(prediction() > 0, ENTROPY_IN_BOX, 0.0).astype(np.float16)
    rows = []
    for i, (cid, site, _) in enumerate(CASES):
        z = np.array([np.cos(i), np.sin(i), 0.5 * i])
        rows.append(
            CaseScores(case_id=cid, site=site, cache_key=f"k{i}", kl=np.array([0.1 + 0.2 * i]),
                       embedding=z / np.linalg.norm(z) if embedding else None, asd=0.1 + 0.05 * ((i * 3) % 4),
                       class_entropy=np.array([0.2]), confidence=0.8, mean_entropy=0.1, fg_fraction=0.1)
        )
        atomic_savez(cases_dir / f"{cid}.npz", argmax=prediction(), entropy=entropy, affine=GRID_AFFINE)
    table = ScoreTable("f0", rows, ["enc.0.bn"], Availability(True, "file", True, embedding), cases_dir)
    table.save(folder)
    rounds.mark_scored(project, project.relative(folder))
    return table


def plotly_array(value: object) -> np.ndarray:
    """A plotly JSON array as numpy: a list, or a typed array {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return flat.reshape([int(n) for n in str(value.get("shape", flat.size)).split(",")])
    return np.asarray(value, dtype=object if any(isinstance(v, str) for v in np.ravel(value)) else float)


def chart_specs(at) -> dict[str, dict]:  # noqa: ANN001 - an AppTest
    """Every plotly chart of an AppTest run as JSON, by the chart's widget key."""
    return {chart.key: json.loads(chart.proto.spec) for chart in at.get("plotly_chart")}
