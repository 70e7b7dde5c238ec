"""Shared fixtures. Heavy artefacts (tiny corpora, tiny models) are built once per session."""

from __future__ import annotations

import os

import pytest

# Keep the 2-core CI machine responsive and runs deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(2)
    yield
