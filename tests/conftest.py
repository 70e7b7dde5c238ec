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


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest leaves `sys.modules["__main__"]` pointing at the page it ran; a process
    spawned later (benchmark workers) would then re-run that page. Put the real one back."""
    import sys

    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def tiny_demo_corpus(tmp_path_factory):
    """The tiny demo corpus (4 mm, 13 cases, layout unbalanced, seed 0), built once per session.

    An nnU-Net v2 raw folder with cases.csv; treat it as read-only (other tests share it).
    """
    import torch

    from assft_core.data.demo.builder import build_demo_corpus

    torch.set_num_threads(2)
    return build_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", layout="unbalanced", seed=0, size="tiny")
