"""The scoring pass sharded by case over the ranks of a `torchrun` job, gathered into one table.

Case i goes to rank i % N. Each rank runs the ordinary `score_cases` over its share, writing each
case's `<out_dir>/cases/<case_id>.npz` itself (so the per-case cache works as in one process); the
rows are then gathered over the process group and rank 0 saves one `ScoreTable` in the original
case order. Every case is scored by the same code as in a single process, so the table equals the
single-process one (bit for bit on the same device type; ASSFT, METHOD.md §0; docs/distributed.md).

With several nodes, `out_dir` must be on storage every node sees (the project folder), since each
rank writes the maps of its own cases there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from assft_core.config import InferenceConfig, QueryConfig
from assft_core.data.records import PreprocessedCase
from assft_core.query.scoring import CaseOutputsFn, ProgressFn, ScoringModel, score_cases
from assft_core.query.table import CASES_DIR, CaseScores, ScoreTable
from assft_core.train import distributed as ddp

T = TypeVar("T")

# Per-rank working folders under out_dir; each holds a `cases` link to out_dir/cases.
SHARDS_DIR = ".shards"


class LazyCases(Generic[T]):
    """A sized, single-pass view that loads each case only when the scoring pass reaches it.

    Keeps memory flat (one volume at a time) and lets `score_cases` report a total.

    Args:
        items: what identifies each case (e.g. `CaseRecord`s, or `PreprocessedCase`s).
        load: maps an item to its `PreprocessedCase` (e.g. `case_cache.load_case` with a cache).
    """

    def __init__(self, items: Sequence[T], load: Callable[[T], PreprocessedCase]) -> None:
        self.items = list(items)
        self.load = load

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[PreprocessedCase]:
        return (self.load(item) for item in self.items)


def _as_case(item: object) -> PreprocessedCase:
    if not isinstance(item, PreprocessedCase):
        raise TypeError(f"got {type(item).__name__}; pass `load_case` to turn items into PreprocessedCase")
    return item


def score_cases_sharded(
    model: ScoringModel,
    cases: Sequence[T],
    *,
    load_case: Callable[[T], PreprocessedCase] | None = None,
    model_tag: str,
    cfg: QueryConfig,
    infer_cfg: InferenceConfig,
    out_dir: Path,
    cache_key: str | None,
    on_progress: ProgressFn | None = None,
    on_case: CaseOutputsFn | None = None,
) -> ScoreTable:
    """Score `cases` over all ranks of the process group; one process without a launcher.

    Call it on every rank with the same `cases` in the same order. Rank r loads and scores the
    cases i with i % N == r (`ddp.shard_indices`), so each volume is read by one rank only.

    Args:
        model: the model on this rank's device (a `LoadedModel`).
        cases: every case, in table order: `PreprocessedCase`s, or cheap handles such as
            `CaseRecord`s together with `load_case`.
        load_case: turns an item of `cases` into a `PreprocessedCase`; None when the items are
            already `PreprocessedCase`s.
        model_tag, cfg, infer_cfg, cache_key, on_case: as for `score_cases`.
        out_dir: the table's folder (shared by all nodes); per-case maps go to `out_dir/cases`.
        on_progress: called on each rank as `on_progress(done, shard_total, case_id)` for its
            own share (rank 0's share is ⌈n / N⌉ cases: a fair progress bar for the whole pass).

    Returns:
        The full table in the order of `cases`, on every rank; rank 0 has saved it to `out_dir`
        before any rank returns.

    Raises:
        ModelError: as `score_cases` (on the rank that meets it; torchrun then stops the job).
        ValueError: duplicate case ids.
    """
    load: Callable[[T], PreprocessedCase] = load_case if load_case is not None else _as_case  # type: ignore[assignment]
    out_dir = Path(out_dir)
    rank, world = ddp.get_rank(), ddp.get_world_size()
    if world == 1:
        return score_cases(
            model, LazyCases(cases, load), model_tag=model_tag, cfg=cfg, infer_cfg=infer_cfg, out_dir=out_dir,
            cache_key=cache_key, on_progress=on_progress, on_case=on_case,
        )
    mine = ddp.shard_indices(len(cases), rank, world)
    shard_dir = _shard_dir(out_dir, rank)
    part = score_cases(
        model, LazyCases([cases[i] for i in mine], load), model_tag=model_tag, cfg=cfg, infer_cfg=infer_cfg,
        out_dir=shard_dir, cache_key=cache_key, on_progress=on_progress, on_case=on_case,
    )
    gathered = ddp.all_gather_objects((mine, part.rows))
    by_index: dict[int, CaseScores] = {}
    for indices, shard_rows in gathered:
        by_index.update(zip(indices, shard_rows))
    # Every rank holds the same model, so rank 0's layers and availability describe the table.
    layers, availability = ddp.broadcast_object((part.layers, part.availability))
    rows = [by_index[i] for i in range(len(cases))]
    table = ScoreTable(model_tag, rows, layers, availability, out_dir / CASES_DIR)
    if rank == 0:
        table.save(out_dir)
    shutil.rmtree(shard_dir)
    ddp.barrier()
    if rank == 0:
        _remove_if_empty(out_dir / SHARDS_DIR)
    return table


def _shard_dir(out_dir: Path, rank: int) -> Path:
    """A fresh working folder for `rank` whose `cases` links to `out_dir/cases`.

    `score_cases` then writes (and reads cached) per-case maps straight into the shared folder,
    while the partial table it saves stays out of `out_dir`, where a reader could take it for
    the whole table.
    """
    shared = out_dir / CASES_DIR
    shared.mkdir(parents=True, exist_ok=True)
    shard = out_dir / SHARDS_DIR / f"rank-{rank}"
    if shard.exists():
        shutil.rmtree(shard)  # left by a killed pass; holds nothing but a partial table and a link
    shard.mkdir(parents=True)
    # Relative, so nodes that mount the project at different paths all resolve it.
    os.symlink(Path("..") / ".." / CASES_DIR, shard / CASES_DIR, target_is_directory=True)
    return shard


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # another pass's shard is still there, or the folder is already gone
