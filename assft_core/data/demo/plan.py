"""What a demo corpus contains: sites, splits, case counts per size and layout, case ids.

Kept free of torch/MONAI so `assft --help` and planning stay instant.
Source: ASSFT Studio DATA.md, issue 2.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from assft_core.data.records import Split
from assft_core.errors import DataError


class Site(str, enum.Enum):
    """The demo's sites; `SOURCE` for pre-training, A-D are the target domain."""

    SOURCE = "source"
    A = "A"
    B = "B"
    C = "C"
    D = "D"


TARGET_SITES = (Site.A, Site.B, Site.C, Site.D)


class DemoLayout(str, enum.Enum):
    """How the target pool is spread over sites A-D."""

    UNBALANCED = "unbalanced"  # archive-like: one dominant site, one rare
    BALANCED = "balanced"


class DemoSize(str, enum.Enum):
    """Corpus size: `full` (2 mm, the demo) or `tiny` (4 mm, a few cases, for tests)."""

    FULL = "full"
    TINY = "tiny"


@dataclass(frozen=True)
class CorpusPlan:
    """Case counts and grid of one corpus size.

    Attributes:
        voxel_mm: isotropic voxel size of the template grid, mm.
        source_train / source_test: source-site cases per split.
        pool: target pool cases per site (A, B, C, D), per layout.
        test_per_site: target test cases per site.
    """

    voxel_mm: float
    source_train: int
    source_test: int
    pool: dict[DemoLayout, tuple[int, int, int, int]]
    test_per_site: int


PLANS: dict[DemoSize, CorpusPlan] = {
    DemoSize.FULL: CorpusPlan(
        voxel_mm=2.0,
        source_train=16,
        source_test=4,
        pool={DemoLayout.UNBALANCED: (24, 10, 4, 2), DemoLayout.BALANCED: (10, 10, 10, 10)},
        test_per_site=3,
    ),
    DemoSize.TINY: CorpusPlan(
        voxel_mm=4.0,
        source_train=2,
        source_test=1,
        pool={DemoLayout.UNBALANCED: (3, 1, 1, 1), DemoLayout.BALANCED: (2, 2, 2, 2)},
        test_per_site=1,
    ),
}


@dataclass(frozen=True)
class DemoCase:
    """One planned case: its id, site, split and index within (site, split)."""

    case_id: str
    site: Site
    split: Split
    index: int


def plan_cases(
    layout: DemoLayout | str = DemoLayout.UNBALANCED, size: DemoSize | str = DemoSize.FULL
) -> list[DemoCase]:
    """Every case of a corpus, in build order (ids like `source_train_003`, `A_pool_012`, `D_test_001`).

    Raises:
        DataError: for an unknown layout or size.
    """
    layout, size = parse_layout(layout), parse_size(size)
    plan = PLANS[size]
    counts: list[tuple[Site, Split, int]] = [
        (Site.SOURCE, Split.SOURCE_TRAIN, plan.source_train),
        (Site.SOURCE, Split.SOURCE_TEST, plan.source_test),
    ]
    counts += [(s, Split.POOL, n) for s, n in zip(TARGET_SITES, plan.pool[layout])]
    counts += [(s, Split.TEST, plan.test_per_site) for s in TARGET_SITES]
    cases = []
    for site, split, n in counts:
        prefix = split.value if site is Site.SOURCE else f"{site.value}_{split.value}"
        cases += [DemoCase(f"{prefix}_{i:03d}", site, split, i) for i in range(n)]
    return cases


def parse_layout(value: DemoLayout | str) -> DemoLayout:
    """`value` as a DemoLayout.

    Raises:
        DataError: for an unknown layout.
    """
    try:
        return DemoLayout(value)
    except ValueError:
        raise DataError(f"unknown demo layout {value!r}; use one of {[m.value for m in DemoLayout]}.") from None


def parse_size(value: DemoSize | str) -> DemoSize:
    """`value` as a DemoSize.

    Raises:
        DataError: for an unknown size.
    """
    try:
        return DemoSize(value)
    except ValueError:
        raise DataError(f"unknown demo size {value!r}; use one of {[m.value for m in DemoSize]}.") from None
