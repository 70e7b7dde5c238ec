"""One round of fine-tuning with selective semi-supervised fine-tuning (ASSFT, METHOD.md §4).

    f_t ─ supervised phase (S steps on L) ─▶ f_t^sup ─ scoring pass over L ∪ U\\L ─▶ c, s, r,
        pseudo-labels ─ R (mode) ─▶ SSFT phase (S_u steps on L ∪ R) ─▶ f_{t+1}

Mode `none` stops at f_t^sup (no scoring pass, no SSFT steps); so does any mode given 0 SSFT
steps (S_u = 0: no R is selected for nothing). An empty R (or one whose every
pseudo-label is all-ignored) still runs the S_u SSFT steps, on L alone, and the report says so.

Layout of `run_dir` (each phase resumes from its folder; a killed run continues in the phase it
was in, and a finished phase is never recomputed):

    supervised/              trainer run of the supervised phase (config.json, checkpoint.pt)
    selection/scores/        score table of f_t^sup (c, z_t, maps) for the store and the viewer
    selection/pseudo/        <case_id>.npz pseudo-label of every unlabelled case (uint8, 255 = ignore)
    selection/reliability.json   the ReliabilityReport; written last, it marks the phase done
    ssft/                    trainer run of the SSFT phase
    spilled/                 R and the retention targets as memory-mapped .npy while training runs

The SSFT phase is a fresh `train` run (new AdamW state and cosine schedule over S_u steps)
seeded with `TrainConfig.seed + 1`, so its crops are not a replay of the supervised phase's.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from assft_core.config import FinetuneConfig, InferenceConfig, QueryConfig, Recipe, SSFTConfig, SSFTMode, TrainConfig
from assft_core.data.records import PreprocessedCase
from assft_core.data.stream import case_ids, case_lookup, case_sites, chain_cases
from assft_core.errors import DataError, ModelError, StateError
from assft_core.models.card import ModelCard
from assft_core.models.loaded import LoadedModel, wrap_network
from assft_core.models.outputs import ForwardOutputs
from assft_core.query.scoring import score_cases
from assft_core.train.checkpoint import CHECKPOINT_NAME
from assft_core.train.data import TrainData, TrainSample
from assft_core.train.pseudo import PseudoLabelStats, load_pseudo_label, make_pseudo_label, save_pseudo_label
from assft_core.train.reliability import ReliabilityReport, reliability_report, semantic_distance, trusted_words
from assft_core.train.retention import RETENTION_DIR, RoundRetention
from assft_core.train.spill import spill_samples
from assft_core.train.trainer import ProgressEvent, TrainResult, train

SUPERVISED_DIR = "supervised"
SPILL_DIR = "spilled"  # memory-mapped training copies of R and the retention targets; removed at the end
SELECTION_DIR = "selection"
SSFT_DIR = "ssft"
SCORES_DIR = "scores"
PSEUDO_DIR = "pseudo"
REPORT_NAME = "reliability.json"

PHASE_SUPERVISED = "supervised"
PHASE_SCORING = "scoring"
PHASE_SSFT = "ssft"

ReferenceFn = Callable[[str], "np.ndarray | None"]


@dataclass
class RoundProgress:
    """Progress of a whole round, for one progress bar over both training phases.

    Attributes:
        phase: "supervised", "scoring" or "ssft".
        fraction: optimiser steps done / (S + S_u) (S alone in mode `none`); it holds at
            S / (S + S_u) during the scoring pass.
        message: plain words ("supervised step 12/200", "scoring 3/40: case_007").
        event: the trainer's event for a training step; None during scoring.
    """

    phase: str
    fraction: float
    message: str
    event: ProgressEvent | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class SSFTResult:
    """Outcome of `run_round_training`.

    Attributes:
        network: the trained network (the object passed in): f_{t+1}, or the state reached when
            stopped.
        supervised: the supervised phase's TrainResult (f_t^sup is its checkpoint).
        ssft: the SSFT phase's TrainResult; None in mode `none` or when stopped before it.
        report: the reliability report; None when stopped before it was made.
        timings_s: wall time per phase in seconds ("supervised", "scoring", "ssft"), summed over
            resumptions.
        run_dir: the round's folder.
        stopped: True when `should_stop` ended the round early (call again to resume).
        retention: what the retention recipe did (METHOD.md §6): recipe, recalibration reports,
            retention targets, interpolation; {"recipe": "paper"} without one.
    """

    network: nn.Module
    supervised: TrainResult
    ssft: TrainResult | None
    report: ReliabilityReport | None
    timings_s: dict[str, float]
    run_dir: Path
    stopped: bool = False
    retention: dict[str, Any] = dataclasses.field(default_factory=dict)


class _ScoringStopped(Exception):
    """Raised inside the scoring pass's progress callback when the caller asks to stop."""


def run_round_training(
    network: nn.Module,
    card: ModelCard,
    labelled: Sequence[PreprocessedCase],
    unlabelled: Sequence[PreprocessedCase],
    *,
    train_cfg: TrainConfig,
    ssft_cfg: SSFTConfig,
    query_cfg: QueryConfig,
    infer_cfg: InferenceConfig,
    run_dir: Path,
    reference: ReferenceFn | None = None,
    on_progress: Callable[[RoundProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    train_fn: Callable[..., TrainResult] | None = None,
    finetune_cfg: FinetuneConfig | None = None,
    base: LoadedModel | None = None,
) -> SSFTResult:
    """Fine-tune f_t into f_{t+1}: supervised phase, selection of R, SSFT phase (METHOD.md §4).

    The network is trained in place (pass a copy to keep f_t). Calling again with the same
    `run_dir`, cases and settings resumes a killed or stopped round in the phase it was in.

    Args:
        network: f_t; maps (B, C, *patch) to logits (B, K, *patch).
        card: its model card (backbone, classes), for the scoring pass's hooks.
        labelled: L, preprocessed cases with their expert labels (1, D, H, W) uint8.
        unlabelled: U \\ L, preprocessed pool cases (never test cases), best a `LazyCases` stream:
            every pass over them reads one case at a time; their `label`, if any, is never read (a
            reference for measurement goes through `reference`).
        train_cfg: trainer settings; `steps` and `seed` are set per phase (S, S_u; seed, seed + 1).
        ssft_cfg: mode, S, S_u, ρ, c_min, τ_v.
        query_cfg: ASD ROI settings used for c (and the embedding stages of z_t).
        infer_cfg: sliding window, TTA and device of the scoring pass.
        run_dir: the round's folder (see the module docstring).
        reference: optional lookup case id -> reference label (1, D, H, W) on the preprocessed grid
            (demo / benchmark ground truth), used only to report the pseudo-labels' voxel accuracy.
        on_progress: called with a `RoundProgress` after every step and every scored case.
        should_stop: polled after every step and scored case; True stops the round (resumable).
        train_fn: runs one training phase with `train`'s signature; None: `train` in this process;
            `functools.partial(train_with_torchrun, card=..., nproc=N)` for DDP (docs/distributed.md).
        finetune_cfg: the retention recipe (METHOD.md §6); None: the paper's (no retention).
        base: f_0, frozen, when the recipe reads its weights (l2sp, retention, wise).

    Returns:
        The trained network, both TrainResults, the ReliabilityReport and timings per phase.

    Raises:
        DataError: a labelled case without a label, a case both labelled and unlabelled, or
            duplicate ids.
        ModelError: the model cannot be scored for SSFT (TorchScript, no embedding).
        StateError: `run_dir` holds a round made with other cases or settings.
        TrainingDiverged: the loss became NaN or infinite.
    """
    if int(ssft_cfg.ssft_steps) == 0 and SSFTMode(ssft_cfg.mode) is not SSFTMode.NONE:
        # No SSFT step to train: selecting R would cost a scoring pass of the pool for nothing.
        ssft_cfg = dataclasses.replace(ssft_cfg, mode=SSFTMode.NONE)
    mode = SSFTMode(ssft_cfg.mode)
    run_dir = Path(run_dir)
    try:
        _check_cases(labelled, unlabelled)
        if mode is not SSFTMode.NONE:
            _check_fine_tunable(card)  # before the supervised phase: fail fast, not after S steps
        n_sup = int(ssft_cfg.supervised_steps)
        n_ssft = 0 if mode is SSFTMode.NONE else int(ssft_cfg.ssft_steps)
        emit = _round_emitter(on_progress, n_sup + n_ssft)
        fit = train_fn or train
        retention = RoundRetention.build(finetune_cfg or FinetuneConfig(recipe=Recipe.PAPER), network, card.backbone, base)
        phase_cfg = retention.train_config(train_cfg)
        extra = retention.trainer_kwargs()
        pool_cases = chain_cases(labelled, unlabelled)  # lazy: U \ L is streamed, never listed
        labelled_samples = [_labelled_sample(c) for c in labelled]
        retained = retention.retention_targets(
            unlabelled, query_cfg=query_cfg, infer_cfg=infer_cfg, ignore_index=train_cfg.ignore_index,
            folder=run_dir / RETENTION_DIR, spill_dir=run_dir / SPILL_DIR / "retained",
        )
        sup_dir = run_dir / SUPERVISED_DIR
        sup = fit(
            dataclasses.replace(phase_cfg, steps=n_sup),
            network,
            TrainData(labelled_samples, retained=retained),
            run_dir=sup_dir,
            on_progress=lambda e: emit(PHASE_SUPERVISED, e.step, f"supervised step {e.step}/{n_sup}", e),
            should_stop=should_stop,
            resume_from=_existing_run(sup_dir),
            phase=PHASE_SUPERVISED,
            **extra,
        )
        timings = {PHASE_SUPERVISED: _elapsed(sup), PHASE_SCORING: 0.0, PHASE_SSFT: 0.0}
        result = SSFTResult(network, sup, None, None, timings, run_dir, retention=retention.log)
        if sup.stopped or (should_stop is not None and should_stop()):
            result.stopped = True
            return result

        selection_dir = run_dir / SELECTION_DIR
        report = _load_selection(selection_dir, ssft_cfg, labelled, unlabelled)
        if mode is SSFTMode.NONE:
            result.report = report if report is not None else _empty_selection(selection_dir, ssft_cfg, labelled)
            retention.finish(network, pool_cases, infer_cfg)
            return result

        ssft_dir = run_dir / SSFT_DIR
        if _existing_run(ssft_dir) is None:
            # f_t^sup's pseudo-labels and the SSFT phase start from the recalibrated model (a resumed
            # SSFT phase loads its own checkpoint instead).
            retention.recalibrate(network, pool_cases, infer_cfg, when="supervised")
        if report is None:
            try:
                report = _select(
                    network, card, labelled, unlabelled, ssft_cfg, train_cfg.ignore_index, query_cfg, infer_cfg,
                    selection_dir, reference, emit_scored=lambda msg: emit(PHASE_SCORING, n_sup, msg),
                    should_stop=should_stop,
                )
            except _ScoringStopped:
                result.stopped = True
                return result
        result.report = report
        timings[PHASE_SCORING] = report.scoring_s
        if report.trains_on_labelled_only:
            emit(PHASE_SCORING, n_sup, f"{trusted_words(0)}: the SSFT phase trains on the labelled cases alone")

        pseudo_samples = _pseudo_samples(report, unlabelled, selection_dir, run_dir / SPILL_DIR / "pseudo")
        ssft = fit(
            dataclasses.replace(phase_cfg, steps=n_ssft, seed=train_cfg.seed + 1),
            network,
            TrainData(labelled_samples, pseudo_samples, retained),
            run_dir=ssft_dir,
            on_progress=lambda e: emit(PHASE_SSFT, n_sup + e.step, f"SSFT step {e.step}/{n_ssft} ({trusted_words(len(pseudo_samples))})", e),
            should_stop=should_stop,
            resume_from=_existing_run(ssft_dir),
            phase=PHASE_SSFT,
            **extra,
        )
        result.ssft = ssft
        result.stopped = ssft.stopped
        timings[PHASE_SSFT] = _elapsed(ssft)
        if not ssft.stopped:
            retention.finish(network, pool_cases, infer_cfg)
        return result
    finally:  # the memory-mapped copies of R and of the retention targets (train.spill)
        shutil.rmtree(run_dir / SPILL_DIR, ignore_errors=True)


def _round_emitter(
    on_progress: Callable[[RoundProgress], None] | None, total: int
) -> Callable[..., None]:
    """`emit(phase, done, message, event=None)`: one `RoundProgress` with `done` of the round's
    `total` optimiser steps (1.0 when there are none), or nothing without `on_progress`."""

    def emit(phase: str, done: int, message: str, event: ProgressEvent | None = None) -> None:
        if on_progress is not None:
            on_progress(RoundProgress(phase, done / total if total else 1.0, message, event))

    return emit


def _empty_selection(selection_dir: Path, cfg: SSFTConfig, labelled: Sequence[PreprocessedCase]) -> ReliabilityReport:
    """The report of mode `none`, saved in `selection_dir`: no scoring pass, nothing selected (c
    and s would be computed for nothing)."""
    report = reliability_report([], np.zeros(0), np.zeros(0), cfg, labelled_ids=_ids(labelled))
    report.save(selection_dir / REPORT_NAME)
    return report


def _pseudo_samples(
    report: ReliabilityReport, unlabelled: Sequence[PreprocessedCase], selection_dir: Path, spill_dir: Path
) -> list[TrainSample]:
    """R as training samples: each admitted case's image with its stored pseudo-label, loaded one
    at a time (a streamed pool makes only the admitted cases) and kept memory-mapped in `spill_dir`."""
    by_id = case_lookup(unlabelled)
    return spill_samples(
        (TrainSample(cid, by_id(cid).image, load_pseudo_label(selection_dir / PSEUDO_DIR, cid).label)
         for cid in report.admitted_ids),
        spill_dir,
    )


def _select(
    network: nn.Module,
    card: ModelCard,
    labelled: Sequence[PreprocessedCase],
    unlabelled: Sequence[PreprocessedCase],
    cfg: SSFTConfig,
    ignore_index: int,
    query_cfg: QueryConfig,
    infer_cfg: InferenceConfig,
    selection_dir: Path,
    reference: ReferenceFn | None,
    *,
    emit_scored: Callable[[str], None],
    should_stop: Callable[[], bool] | None,
) -> ReliabilityReport:
    """Score f_t^sup over L and U \\ L once, write every pseudo-label, select R, save the report."""
    t0 = time.perf_counter()
    unlabelled_ids = set(_ids(unlabelled))
    pseudo_dir = selection_dir / PSEUDO_DIR
    stats: dict[str, PseudoLabelStats] = {}

    def on_case(case: PreprocessedCase, out: ForwardOutputs) -> None:
        if case.case_id not in unlabelled_ids:
            return  # labelled cases are scored for z_t only
        if out.probs is None:
            raise ModelError("the scoring pass gave no softmax, so no pseudo-label can be made.")
        ref = reference(case.case_id) if reference is not None else None
        pseudo = make_pseudo_label(out.probs, cfg.tau_v, ignore_index, case_id=case.case_id, reference=ref)
        save_pseudo_label(pseudo_dir, pseudo)
        stats[case.case_id] = pseudo.stats

    def on_scored(done: int, n: int | None, case_id: str) -> None:
        emit_scored(f"scoring {done}/{n}: {case_id}")
        if should_stop is not None and should_stop():
            raise _ScoringStopped

    cases = chain_cases(labelled, unlabelled) if len(unlabelled) else []
    table = score_cases(
        _scoring_model(network, card), cases, model_tag="f_t_sup", cfg=query_cfg, infer_cfg=infer_cfg,
        out_dir=selection_dir / SCORES_DIR, cache_key=None, on_progress=on_scored, on_case=on_case,
    )
    u_ids, l_ids = _ids(unlabelled), _ids(labelled)
    if len(unlabelled):
        z = table.embeddings
        if z is None:
            raise ModelError("the model yields no encoder embedding, so the semantic distance s cannot be computed.")
        confidence = table.column("confidence")[table.indices(u_ids)]
        distance, nearest = semantic_distance(z[table.indices(u_ids)], z[table.indices(l_ids)], l_ids)
    else:
        confidence, distance, nearest = np.zeros(0), np.zeros(0), []
    report = reliability_report(
        u_ids, confidence, distance, cfg, labelled_ids=l_ids, nearest_labelled=nearest,
        sites=case_sites(unlabelled), pseudo_labels=stats,
    )
    report.scoring_s = time.perf_counter() - t0
    report.save(selection_dir / REPORT_NAME)  # last: marks the phase done
    return report


def _load_selection(
    selection_dir: Path, cfg: SSFTConfig, labelled: Sequence[PreprocessedCase], unlabelled: Sequence[PreprocessedCase]
) -> ReliabilityReport | None:
    """The finished selection phase of a previous call, or None when there is none."""
    path = selection_dir / REPORT_NAME
    if not path.is_file():
        return None
    report = ReliabilityReport.load(path)
    mode = SSFTMode(cfg.mode)
    # Mode `none` lists no unlabelled case (it scores none), so U \ L cannot be compared there.
    unlabelled_ids = [] if mode is SSFTMode.NONE else _ids(unlabelled)
    saved = (report.mode, report.rho, report.c_min, report.tau_v, report.labelled_ids, report.unlabelled_ids)
    now = (mode, float(cfg.rho), cfg.c_min, float(cfg.tau_v), _ids(labelled), unlabelled_ids)
    if saved != now:
        raise StateError(
            f"{path}: this round folder was made with other cases or SSFT settings "
            f"(mode, ρ, c_min, τ_v, L, U \\ L). Fix: resume with the same ones, or use a fresh run folder."
        )
    return report


def _check_fine_tunable(card: ModelCard) -> None:
    if card.backbone == "torchscript":
        raise ModelError(
            "SSFT scores the fine-tuned network through its backbone's hooks, which a TorchScript model "
            "lacks. Fix: load the model from its state_dict with a registered backbone, or use SSFT mode 'none'."
        )


def _scoring_model(network: nn.Module, card: ModelCard) -> LoadedModel:
    """f_t^sup as a scoring model: the same network object, so it scores the weights trained here.

    Source statistics are dropped: the knowledge gap is not used by SSFT (c and z_t only).
    """
    _check_fine_tunable(card)
    return dataclasses.replace(wrap_network(network, card), source_stats=None, source_stats_origin="none")


def _check_cases(labelled: Sequence[PreprocessedCase], unlabelled: Sequence[PreprocessedCase]) -> None:
    l_ids, u_ids = _ids(labelled), _ids(unlabelled)
    for name, ids in (("labelled", l_ids), ("unlabelled", u_ids)):
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise DataError(f"{name} cases repeat ids {dup[:5]}. Fix: pass each case once.")
    both = sorted(set(l_ids) & set(u_ids))
    if both:
        raise DataError(
            f"cases {both[:5]} are given both as labelled and as unlabelled. Fix: unlabelled = pool minus labelled."
        )


def _labelled_sample(case: PreprocessedCase) -> TrainSample:
    if case.label is None:
        raise DataError(
            f"case {case.case_id} is in the labelled set but carries no label. Fix: label it first, or "
            "leave it out of L."
        )
    return TrainSample(case.case_id, case.image, np.asarray(case.label, dtype=np.uint8))


def _existing_run(folder: Path) -> Path | None:
    return folder if (folder / CHECKPOINT_NAME).is_file() else None


def _elapsed(result: TrainResult) -> float:
    return float(result.history[-1].elapsed_s) if result.history else 0.0


def _ids(cases: Sequence[PreprocessedCase]) -> list[str]:
    return case_ids(cases)  # a streamed pool gives its ids without loading a case
