"""The scoring step of a round: score every usable case with f_0 and f_t, store the query table.

ASSFT, METHOD.md §0–§2: one scoring pass per case and model. f_0 scores every pool and test case
once for the whole project (its table is keyed by f_0's bytes and reused every round, per-case
entries by content and preprocessing too); from round 1 on f_t, the latest fine-tuned model,
scores them again. The strategies then read one table per round: KG and z from f_0, ASD,
entropies and confidence from f_t (`query_table`). Test cases are scored for display only: the
strategies are given pool ids, and KG's medians are over pool cases alone; a project whose
`score_test_cases` is off (a benchmark's) leaves them out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from assft_core.data.records import Split
from assft_core.errors import StateError
from assft_core.query.table import ScoreTable, query_table
from assft_core.session import rounds, workspace
from assft_core.session.progress import CaseProgress, Echo, ProgressSink
from assft_core.session.project import Project, list_cases
from assft_core.session.rounds import RoundState


@dataclass
class ScoringSummary:
    """What a scoring step did.

    Attributes:
        round: round t.
        n_pool / n_test: usable pool and test cases scored.
        models: tag -> folder of the score table each model wrote ("f0", and "round<t>" for t > 0).
        table: project-relative folder of the round's query table (what `mark_scored` stored).
        unavailable: plain-words notes on method terms the models cannot compute.
        wall_s: seconds per model's scoring pass, and "total".
    """

    round: int
    n_pool: int
    n_test: int
    models: dict[str, str]
    table: str
    unavailable: list[str] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=dict)

    def to_metrics(self) -> dict[str, Any]:
        """JSON-ready job metrics."""
        return {
            "round": self.round,
            "n_pool": self.n_pool,
            "n_test": self.n_test,
            "models": self.models,
            "table": self.table,
            "unavailable": self.unavailable,
            "wall_s": self.wall_s,
        }


def score_round(project: Project, sink: ProgressSink, *, device: str = "auto", echo: Echo | None = None) -> ScoringSummary:
    """Score the current round's cases and mark the round scored (ASSFT, METHOD.md §0–§2).

    Args:
        project: the open project.
        sink: progress (fraction, message) and the stop flag; a stop raises `JobCancelled`
            between cases (cases scored so far stay cached).
        device: "auto", "cpu" or "cuda[:i]".
        echo: prints progress lines for people (None: silent).

    Returns:
        The summary; the round is `scored` with the query table.

    Raises:
        StateError: when the round is not `open` or `scored`, or the project has no usable pool case.
        ModelError / DataError: from loading the models or reading the cases.
    """
    from assft_core.models.loaded import load_model
    from assft_core.query.scoring import score_cases

    t0 = time.perf_counter()
    info = rounds.current_round(project)
    if info.state not in (RoundState.OPEN, RoundState.SCORED):
        raise StateError(
            f"cannot score: round {info.idx} is '{info.state.value}'; allowed next step: {rounds.NEXT_STEP[info.state]}."
        )
    pool = list_cases(project, Split.POOL)
    test = list_cases(project, Split.TEST) if project.config.score_test_cases else []
    if not pool:
        raise StateError(f"{project.folder} has no usable pool case to score; `assft status` lists the problems.")
    pre_cfg = workspace.preprocess_settings(project)
    cases = workspace.CaseStream(
        [workspace.case_record(c) for c in [*pool, *test]],
        pre_cfg,
        workspace.preprocess_cache(project),
        sink.should_stop,
        limit_bytes=workspace.cache_limit_bytes(project),
    )
    refs = [workspace.base_model(project)]
    current = workspace.model_for_round(project, info.idx)
    if current.tag != workspace.BASE_TAG:
        refs.append(current)

    tables: list[ScoreTable] = []
    models: dict[str, str] = {}
    wall: dict[str, float] = {}
    for m, ref in enumerate(refs):
        start = time.perf_counter()
        key = workspace.model_key(ref)
        model = load_model(ref.path, device=device)
        out_dir = project.artifact_path(workspace.SCORES_DIR, f"{ref.tag}-{key[:16]}")

        step = CaseProgress(sink, f"score:{ref.tag}", f"scoring with {ref.tag}", len(cases),
                            (m / len(refs), (m + 1) / len(refs)), echo, later=len(cases) * (len(refs) - m - 1))

        def on_case(done: int, total: int | None, case_id: str, step: CaseProgress = step) -> None:
            step.total = total or len(cases)
            step(done, case_id)

        tables.append(
            score_cases(
                model,
                cases,
                model_tag=ref.tag,
                cfg=project.config.query,
                infer_cfg=workspace.inference_settings(project, model.card, device),
                out_dir=out_dir,
                cache_key=key,
                on_progress=on_case,
            )
        )
        models[ref.tag] = project.relative(out_dir)
        wall[ref.tag] = time.perf_counter() - start
        del model

    table = query_table(tables[0], tables[-1], model_tag=f"round{info.idx}-query")
    table_dir = workspace.round_dir(project, info.idx) / "query_table"
    table.save(table_dir)
    relative = project.relative(table_dir)
    rounds.mark_scored(project, relative)
    wall["total"] = time.perf_counter() - t0
    sink.progress(1.0, f"round {info.idx} scored: {len(pool)} pool and {len(test)} test cases")
    return ScoringSummary(
        round=info.idx,
        n_pool=len(pool),
        n_test=len(test),
        models=models,
        table=relative,
        unavailable=table.unavailable_terms(),
        wall_s=wall,
    )
