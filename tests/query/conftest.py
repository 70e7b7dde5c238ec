"""Tiny hand-made score tables for strategy tests."""

from __future__ import annotations

import numpy as np
import pytest

from assft_core.query.table import Availability, CaseScores, ScoreTable


def build_table(
    ids: list[str],
    *,
    kl: list[float] | None = None,
    z: np.ndarray | None = None,
    asd: list[float] | None = None,
    mean_entropy: list[float] | None = None,
    class_entropy: np.ndarray | None = None,
) -> ScoreTable:
    """A ScoreTable with one KL layer; a term left as None is unavailable for the model."""
    n = len(ids)
    ce = class_entropy if class_entropy is not None else np.zeros((n, 0))
    rows = [
        CaseScores(
            case_id=cid,
            site="s",
            cache_key="k",
            kl=np.array([kl[i]]) if kl is not None else np.zeros(0),
            embedding=None if z is None else np.asarray(z[i], dtype=float),
            asd=asd[i] if asd is not None else float("nan"),
            class_entropy=ce[i],
            confidence=float("nan"),
            mean_entropy=mean_entropy[i] if mean_entropy is not None else float("nan"),
            fg_fraction=float("nan"),
        )
        for i, cid in enumerate(ids)
    ]
    avail = Availability(
        source_stats=kl is not None,
        source_stats_origin="file" if kl is not None else "none",
        head=asd is not None,
        embedding=z is not None,
    )
    return ScoreTable("f0", rows, ["enc.0"] if kl is not None else [], avail)


def angles(deg: list[float]) -> np.ndarray:
    """Unit 2D embeddings at the given angles in degrees."""
    r = np.deg2rad(np.asarray(deg, dtype=float))
    return np.stack([np.cos(r), np.sin(r)], axis=1)


@pytest.fixture
def full_table() -> ScoreTable:
    """Six cases with every term available and three foreground classes."""
    ids = [f"c{i}" for i in range(6)]
    rng = np.random.default_rng(1)
    return build_table(
        ids,
        kl=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        z=angles([0, 20, 45, 90, 135, 180]),
        asd=[0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
        mean_entropy=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        class_entropy=rng.random((6, 3)) + 0.1,
    )
