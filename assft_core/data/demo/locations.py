"""Where demo corpora are built by default: one folder per layout and size under `demo_data/`.

`assft demo project`, `assft demo run`, `assft pretrain` and `assft bench strategies` all read
these, so each corpus is built once and shared.
"""

from __future__ import annotations

from pathlib import Path

DEMO_DATA_ROOT = Path("demo_data")


def demo_corpus_dir(layout: str = "unbalanced", size: str = "full") -> Path:
    """Default folder of the demo corpus with this pool `layout` and `size` (relative to the cwd)."""
    return DEMO_DATA_ROOT / f"{layout}-{size}"
