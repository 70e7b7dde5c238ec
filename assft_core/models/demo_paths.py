"""Where the shipped demo model and its corpus live, and how they were made.

Constants only (no torch), so the CLI can name them in `--help` without importing the engine.
"""

from __future__ import annotations

from pathlib import Path

from assft_core.data.demo.locations import demo_corpus_dir
from assft_core.data.demo.plan import DemoLayout, DemoSize

DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo_model"
# Where `assft demo project` keeps the default (unbalanced, full, seed 0) corpus: one copy for both.
DEFAULT_CORPUS_DIR = demo_corpus_dir(DemoLayout.UNBALANCED.value, DemoSize.FULL.value)
# DATA.md: 600 steps of batch 2 x 64³ reached source held-out Dice 0.77 in ~210 s on 2 CPU cores.
DEFAULT_STEPS = 600
# The corpus the shipped model is trained on: `build_demo_corpus`'s defaults, spelled out so the
# build and the staleness check cannot drift apart.
DEMO_CORPUS = {"layout": DemoLayout.UNBALANCED.value, "seed": 0, "size": DemoSize.FULL.value}
