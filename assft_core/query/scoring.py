"""The scoring pass over a set of cases: one forward per case, every metric from it (METHOD.md §0).

Cases are streamed (one volume in memory at a time, memory stays flat as the pool grows). Each
case's scalar scores and maps are written to `<out_dir>/cases/<case_id>.npz` (temp-then-rename)
together with the key they were computed from, so a case scored before with the same model,
preprocessing and content is read back instead of recomputed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from assft_core.config import InferenceConfig, QueryConfig
from assft_core.data.records import PreprocessedCase
from assft_core.errors import ModelError
from assft_core.models.inference import resolve_device
from assft_core.models.outputs import ForwardOutputs
from assft_core.query.metrics import METRICS_VERSION, layer_kl, roi_uncertainty
from assft_core.query.table import (
    CASES_DIR,
    Availability,
    CaseScores,
    ScoreTable,
    atomic_savez,
    case_file,
)

ProgressFn = Callable[[int, "int | None", str], None]
CaseOutputsFn = Callable[[PreprocessedCase, ForwardOutputs], None]


class ScoringModel(Protocol):
    """What the scoring pass needs of a model (satisfied by `assft_core.models.loaded.LoadedModel`)."""

    source_stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None
    source_stats_origin: str
    has_head: bool
    has_embedding: bool

    def scoring_pass(
        self, image: torch.Tensor, cfg: InferenceConfig, embedding_stages: str = "deepest"
    ) -> ForwardOutputs:
        """One forward pass over a (C, D, H, W) image with hooks (see ForwardOutputs)."""
        ...


def score_cases(
    model: ScoringModel,
    cases: Iterable[PreprocessedCase],
    *,
    model_tag: str,
    cfg: QueryConfig,
    infer_cfg: InferenceConfig,
    out_dir: Path,
    cache_key: str | None,
    on_progress: ProgressFn | None = None,
    on_case: CaseOutputsFn | None = None,
) -> ScoreTable:
    """Score every case with one scoring pass and save the table (ASSFT, METHOD.md §0–§2).

    Per case: KL_s per layer against the model's (floored) source statistics, z, ASD, per-class
    entropies, confidence c, whole-volume entropy, foreground fraction; and on the preprocessed
    grid a uint8 argmax and a float16 entropy map with the affine.

    Args:
        model: the model (a `LoadedModel`); `scoring_pass` is called once per uncached case.
        cases: preprocessed cases, consumed one at a time (a generator keeps memory flat).
        model_tag: the table's name for this model ("f0", "round3", ...).
        cfg: query settings (floors, ROI radius, fallback fraction).
        infer_cfg: sliding window, TTA and device for the pass.
        out_dir: where the table and `cases/<case_id>.npz` go (created if missing).
        cache_key: identifies checkpoint + preprocessing (e.g. a checkpoint hash); combined with
            each case's content hash. None disables the cache (every case is recomputed).
        on_progress: called as `on_progress(done, total_or_None, case_id)` after each case.
        on_case: called as `on_case(case, outputs)` with the raw `ForwardOutputs` (softmax on the
            model's device) of every case this call runs a forward pass for, before its scores are
            written; e.g. SSFT makes pseudo-labels from the same pass (METHOD.md §0, §4). Cases read
            from the cache are not passed: use `cache_key=None` to see every case.

    Returns:
        The saved `ScoreTable` (KG is computed from it with the pool ids: `knowledge_gap`).

    Raises:
        ModelError: when the model's source statistics and its hooked layers do not match.
    """
    out_dir = Path(out_dir)
    arrays_dir = out_dir / CASES_DIR
    arrays_dir.mkdir(parents=True, exist_ok=True)
    source = _source_stats(model)
    layers = sorted(source) if source is not None else []
    total = len(cases) if hasattr(cases, "__len__") else None  # type: ignore[arg-type]
    rows: list[CaseScores] = []
    for done, case in enumerate(cases, start=1):
        key = _case_key(cache_key, case.content_hash, cfg)
        row = _read_cached(arrays_dir, case.case_id, key, layers) if cache_key is not None else None
        if row is None:
            row = _score_one(model, case, key, layers, source, cfg, infer_cfg, arrays_dir, on_case)
        rows.append(row)
        if on_progress is not None:
            on_progress(done, total, case.case_id)
    availability = Availability(
        source_stats=source is not None,
        source_stats_origin=getattr(model, "source_stats_origin", "none") if source is not None else "none",
        head=bool(model.has_head),
        embedding=bool(model.has_embedding),
    )
    table = ScoreTable(model_tag, rows, layers, availability, arrays_dir)
    table.save(out_dir)
    return table


def _source_stats(model: ScoringModel) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    stats = model.source_stats
    if not stats:
        return None
    return {
        name: (torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64))
        for name, (mu, var) in stats.items()
    }


def _case_key(cache_key: str | None, content_hash: str, cfg: QueryConfig) -> str:
    """Key of one case's scores: model + preprocessing, case content, the query settings used and
    the version of the metric code (`metrics.METRICS_VERSION`)."""
    settings = (
        METRICS_VERSION,
        cfg.var_floor_abs, cfg.var_floor_rel, cfg.roi_dilation_voxels, cfg.fallback_top_fraction, cfg.embedding_stages
    )
    raw = f"{cache_key}|{content_hash}|{settings}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _score_one(
    model: ScoringModel,
    case: PreprocessedCase,
    key: str,
    layers: list[str],
    source: dict[str, tuple[torch.Tensor, torch.Tensor]] | None,
    cfg: QueryConfig,
    infer_cfg: InferenceConfig,
    arrays_dir: Path,
    on_case: CaseOutputsFn | None = None,
) -> CaseScores:
    image = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))
    with torch.no_grad():
        out = model.scoring_pass(image, infer_cfg, embedding_stages=cfg.embedding_stages)
        if on_case is not None:
            on_case(case, out)
    kl = np.zeros(len(layers))
    if source is not None:
        missing = [name for name in layers if name not in out.norm_moments]
        if missing:
            raise ModelError(
                f"the scoring pass yielded no moments for source-statistics layer(s) {missing}; "
                f"hooked layers: {sorted(out.norm_moments)}. Recompute the statistics file for this "
                "backbone (`assft stats`) or load the matching checkpoint"
            )
        kl = np.array([layer_kl(out.norm_moments[n], *source[n], cfg) for n in layers])
    emb = out.embedding.detach().cpu().to(torch.float32).numpy() if out.embedding is not None else None
    row = CaseScores(case_id=case.case_id, site=case.site, cache_key=key, kl=kl, embedding=emb)
    maps: dict[str, np.ndarray] = {"affine": np.asarray(case.affine, dtype=np.float64)}
    if out.probs is not None:
        # Metrics run where the model runs (dilation and entropy on the GPU when there is one).
        roi = roi_uncertainty(out.probs.to(resolve_device(infer_cfg.device)), cfg)
        row.asd, row.class_entropy, row.confidence = roi.asd, roi.class_entropy, roi.confidence
        row.mean_entropy, row.fg_fraction, row.used_fallback = roi.mean_entropy, roi.fg_fraction, roi.used_fallback
        maps["argmax"], maps["entropy"] = roi.argmax, roi.entropy
    del out
    _write_case(arrays_dir, row, maps)
    return row


def _write_case(arrays_dir: Path, row: CaseScores, maps: dict[str, np.ndarray]) -> None:
    scalars = np.array([row.asd, row.confidence, row.mean_entropy, row.fg_fraction, float(row.used_fallback)])
    extra = {"embedding": row.embedding} if row.embedding is not None else {}
    atomic_savez(
        case_file(arrays_dir, row.case_id),
        cache_key=np.array(row.cache_key),
        site=np.array(row.site),
        kl=row.kl,
        class_entropy=row.class_entropy,
        scalars=scalars,
        **extra,
        **maps,
    )


def _read_cached(arrays_dir: Path, case_id: str, key: str, layers: list[str]) -> CaseScores | None:
    path = case_file(arrays_dir, case_id)
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            if str(data["cache_key"]) != key or len(data["kl"]) != len(layers):
                return None
            asd, conf, ment, fgf, fb = data["scalars"].tolist()
            return CaseScores(
                case_id=case_id,
                site=str(data["site"]),
                cache_key=key,
                kl=data["kl"],
                embedding=data["embedding"] if "embedding" in data else None,
                asd=asd,
                class_entropy=data["class_entropy"],
                confidence=conf,
                mean_entropy=ment,
                fg_fraction=fgf,
                used_fallback=bool(fb),
            )
    except (OSError, ValueError, KeyError):
        return None  # unreadable cache entry: recompute it
