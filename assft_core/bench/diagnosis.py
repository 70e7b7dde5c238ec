"""`assft bench diagnose`: why a round on a few scans hurts the other sites (METHOD.md §6).

Controlled runs: the same labelled picks, one training round each (`run_round_training`, SSFT
mode `none` unless a variant says otherwise), varying one thing at a time (BatchNorm mode, learning
rate, steps, retention recipe), each evaluated on the test split per site against f_0. Engine-level
(no project store), so a variant costs one training run and one test evaluation. One JSON file per
variant in the output folder: a rerun skips the finished ones (resumable, `--only` pieces).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assft_core.config import FinetuneConfig, InferenceConfig, QueryConfig, SSFTConfig, SSFTMode, TrainConfig, from_dict
from assft_core.data.records import Split
from assft_core.errors import AssftError
from assft_core.fsutil import atomic_write_json

Log = Callable[[str], None]
F0_FILE = "f0.json"


@dataclass(frozen=True)
class Variant:
    """One controlled run.

    Attributes:
        name: file-safe name ("bn-frozen", "lr-1e-4", ...).
        train: TrainConfig overrides (e.g. {"bn_mode": "frozen", "lr": 1e-4}).
        finetune: FinetuneConfig overrides (e.g. {"recipe": "adabn"}).
        steps: supervised steps S.
        ssft_steps: SSFT steps S_u (0: mode `none`).
    """

    name: str
    train: Mapping[str, Any] = field(default_factory=dict)
    finetune: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 100
    ssft_steps: int = 0


# The settings every variant starts from: the paper's round (no retention) with the retention knobs
# at their first values (λ_r 0.5, 1 patch a step, τ_r alone), so a variant names what it changes and
# the table stays reproducible when the project defaults move.
_BASE_TRAIN: dict[str, Any] = {"retention_weight": 0.5, "retention_batch_size": 1, "retention_loss": "ce",
                               "retention_draw": "case"}
_BASE_FINETUNE: dict[str, Any] = {"recipe": "paper", "retention_class_quantile": None}


def _v(
    name: str, steps: int = 100, finetune: Mapping[str, Any] | None = None, ssft_steps: int = 0, **train: Any
) -> Variant:
    return Variant(name, {**_BASE_TRAIN, **train}, {**_BASE_FINETUNE, **(finetune or {})}, steps, ssft_steps)


# The diagnosis of issue #15: BatchNorm statistics vs weight drift vs learning rate and steps, then
# each retention recipe (METHOD.md §6) at the same picks and steps.
DEFAULT_VARIANTS: tuple[Variant, ...] = (
    _v("bn-train"),
    _v("bn-frozen", bn_mode="frozen"),
    _v("bn-train+adabn", finetune={"recipe": "adabn"}),
    _v("lr-1e-4", lr=1e-4),
    _v("lr-1e-4+adabn", lr=1e-4, finetune={"recipe": "adabn"}),
    _v("steps-50", steps=50),
    _v("steps-200", steps=200),
    _v("steps-200+adabn", steps=200, finetune={"recipe": "adabn"}),
    _v("l2sp", finetune={"recipe": "l2sp"}),
    _v("l2sp+adabn", finetune={"recipe": "l2sp+adabn"}),
    _v("retention", finetune={"recipe": "retention"}),
    _v("retention+adabn", finetune={"recipe": "retention+adabn"}),
    _v("decoder", finetune={"recipe": "decoder"}),
    _v("decoder+adabn", finetune={"recipe": "decoder+adabn"}),
    _v("lora", finetune={"recipe": "lora"}),
    _v("lora+adabn", finetune={"recipe": "lora+adabn"}),
    _v("wise", finetune={"recipe": "wise"}),
    _v("wise+adabn", finetune={"recipe": "wise+adabn"}),
    # Second look, after the first: a stronger L2-SP, BatchNorm frozen with each recipe, WiSE-FT's α.
    _v("l2sp-1", l2sp_alpha=1.0, finetune={"recipe": "l2sp"}),
    _v("l2sp-10", l2sp_alpha=10.0, finetune={"recipe": "l2sp"}),
    _v("bn-frozen+lr-1e-4", bn_mode="frozen", lr=1e-4),
    _v("bn-frozen+retention", bn_mode="frozen", finetune={"recipe": "retention"}),
    _v("bn-frozen+wise", bn_mode="frozen", finetune={"recipe": "wise"}),
    _v("bn-frozen+decoder", bn_mode="frozen", finetune={"recipe": "decoder"}),
    _v("retention+wise", finetune={"recipe": "retention+wise"}),
    _v("retention-q50", finetune={"recipe": "retention", "retention_class_quantile": 0.5}),
    _v("bn-frozen+retention-q50-strong", bn_mode="frozen", retention_weight=1.0, retention_batch_size=2,
       finetune={"recipe": "retention", "retention_class_quantile": 0.5}),
    _v("bn-frozen+retention+wise", bn_mode="frozen", finetune={"recipe": "retention+wise"}),
    _v("bn-frozen+retention-strong", bn_mode="frozen", retention_weight=1.0, retention_batch_size=2,
       finetune={"recipe": "retention"}),
    _v("bn-frozen+retention-strong+wise", bn_mode="frozen", retention_weight=1.0, retention_batch_size=2,
       finetune={"recipe": "retention+wise"}),
    _v("wise-0.3", finetune={"recipe": "wise", "wise_alpha": 0.3}),
    _v("frozen_bn+retention-q50-strong+lr-1e-4", retention_weight=1.0, retention_batch_size=2,
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5, "lr": 1e-4}),
    _v("frozen_bn+retention-q50-strong+lr-1e-4+wise-0.7", retention_weight=1.0, retention_batch_size=2,
       finetune={"recipe": "frozen_bn+retention+wise", "retention_class_quantile": 0.5, "lr": 1e-4, "wise_alpha": 0.7}),
    _v("frozen_bn+lr-1e-4+wise-0.7", finetune={"recipe": "frozen_bn+wise", "lr": 1e-4, "wise_alpha": 0.7}),
    # Third look, at the default recipe's remaining drop on A and C: more weight on f_0's targets
    # (λ_r 3; 4 patches a step) and targets on every unlabelled case, not only the surest half.
    # λ_r 3 is the project default since this look (config.DEFAULT_RECIPE, TrainConfig.retention_weight).
    _v("frozen_bn+retention-q50-w3", retention_weight=3.0, retention_batch_size=2,
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5}),
    _v("frozen_bn+retention-q50-w6", retention_weight=6.0, retention_batch_size=2,
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5}),
    _v("frozen_bn+retention-q50-b4", retention_weight=1.0, retention_batch_size=4,
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5}),
    _v("frozen_bn+retention-q50-strong+all-cases", retention_weight=1.0, retention_batch_size=2,
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5, "retention_fraction": 1.0}),
    # Fourth look, at the drop left on C and A, which is CSF (their other classes within 0.03 of f_0):
    # cross-entropy lets the large structures dominate f_0's targets; the labelled loss (Dice + CE)
    # weighs CSF like the others.
    _v("frozen_bn+retention-q50-w3-dicece", retention_weight=3.0, retention_batch_size=2, retention_loss="dice_ce",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5}),
    _v("frozen_bn+retention-q50-w1-dicece", retention_weight=1.0, retention_batch_size=2, retention_loss="dice_ce",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5}),
    # ... and C (4 of 19 retention cases) drawn as often as A (15): retention patches even over sites.
    _v("frozen_bn+retention-q50-w1-dicece-by-site", retention_weight=1.0, retention_batch_size=2,
       retention_loss="dice_ce", retention_draw="site",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5}),
    # Fifth look, at C (thick slices, blurred) after two sharp scans of B and D: nnU-Net's intensity
    # augmentations (noise, blur, contrast, simulated low resolution, gamma) on every patch.
    _v("frozen_bn+retention-q50-w1-dicece+aug-nnunet", retention_weight=1.0, retention_batch_size=2,
       retention_loss="dice_ce", intensity_augment="nnunet",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5}),
    _v("bn-train+aug-nnunet", intensity_augment="nnunet"),
    # ... and f_0's less sure voxels kept as targets too (C's CSF is mostly partial volume), or
    # targets on every unlabelled case.
    _v("frozen_bn+retention-q20-w1-dicece", retention_weight=1.0, retention_batch_size=2, retention_loss="dice_ce",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.2}),
    _v("frozen_bn+retention-q0-w1-dicece", retention_weight=1.0, retention_batch_size=2, retention_loss="dice_ce",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.0}),
    _v("frozen_bn+retention-q20-w1-dicece+all-cases", retention_weight=1.0, retention_batch_size=2,
       retention_loss="dice_ce",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.2, "retention_fraction": 1.0}),
    _v("frozen_bn+retention-q20-w2-dicece", retention_weight=2.0, retention_batch_size=2, retention_loss="dice_ce",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.2}),
    _v("frozen_bn+retention-q20-w1-dicece-b4", retention_weight=1.0, retention_batch_size=4, retention_loss="dice_ce",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.2}),
    _v("frozen_bn+retention-q50-w1-dicece+all-cases", retention_weight=1.0, retention_batch_size=2,
       retention_loss="dice_ce",
       finetune={"recipe": "frozen_bn+retention", "retention_class_quantile": 0.5, "retention_fraction": 1.0}),
    # SSFT (selective, 100 + 50 steps): pseudo-label voxel accuracy per site against the oracle.
    _v("ssft-selective", ssft_steps=50),
    _v("bn-frozen+ssft-selective", bn_mode="frozen", ssft_steps=50),
)


def run_diagnosis(
    dataset: Path,
    model_dir: Path,
    picks: Sequence[str],
    out: Path,
    *,
    variants: Sequence[Variant] = DEFAULT_VARIANTS,
    only: Sequence[str] = (),
    seed: int = 0,
    device: str = "auto",
    base_train: TrainConfig | None = None,
    log: Log | None = None,
) -> list[dict[str, Any]]:
    """Run (or continue) the controlled runs into `out`; returns every variant's result present.

    Args:
        dataset: nnU-Net v2 folder with cases.csv (pool and labelled test cases).
        model_dir: f_0's model folder.
        picks: pool case ids labelled in every variant.
        out: result folder (`f0.json`, `<variant>.json`, `summary.md`); created if missing.
        variants: the runs.
        only: shell patterns of variant names to compute now (empty: all).
        seed: training seed.
        device: "auto", "cpu" or "cuda[:i]".
        base_train: training settings every variant starts from (default `TrainConfig()`).
        log: progress lines.

    Raises:
        AssftError: an unknown pick, or a variant setting the configs reject.
    """
    from assft_core.bench.views import read_benchmark_dataset
    from assft_core.data.case_cache import load_case
    from assft_core.models.loaded import load_model
    from assft_core.data.stream import LazyCases
    from assft_core.train.evaluate import EvalCaseStream, evaluate
    from assft_core.train.ssft import run_round_training

    say = log or (lambda msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_benchmark_dataset(Path(dataset))
    f0 = load_model(Path(model_dir), device=device)
    pre_cfg = f0.card.preprocess
    cache = out / "cache"
    pool = [c for c in manifest.cases if c.split is Split.POOL]
    known = {c.case_id for c in pool}
    unknown = [p for p in picks if p not in known]
    if unknown or not picks:
        raise AssftError(f"picks {unknown or list(picks)} are not pool cases of {dataset}. Fix: name pool case ids.")
    infer_cfg = dataclasses.replace(InferenceConfig(), roi_size=tuple(f0.card.roi_size), device=device)
    test = EvalCaseStream([c for c in manifest.cases if c.split is Split.TEST and c.label_path], pre_cfg, cache)
    k = f0.card.out_channels

    def site_means(report: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "mean_dice": report["overall"]["mean_dice"],
            "per_site": {s: v["mean_dice"] for s, v in report["per_site"].items()},
            "per_class": report["overall"]["dice_per_class"],
            "per_site_class": {s: v["dice_per_class"] for s, v in report["per_site"].items()},
        }

    f0_path = out / F0_FILE
    if not f0_path.is_file():
        atomic_write_json(f0_path, site_means(evaluate(f0.network, test, num_classes=k, cfg=infer_cfg).to_dict()))
    baseline = json.loads(f0_path.read_text(encoding="utf-8"))
    labelled = [load_case(c, pre_cfg, cache_dir=cache) for c in pool if c.case_id in picks]
    by_id = {c.case_id: c for c in pool}

    def reference(case_id: str) -> Any:
        # The oracle's label on the preprocessed grid: only to measure pseudo-label accuracy.
        return load_case(by_id[case_id], pre_cfg, cache_dir=cache).label
    unlabelled = LazyCases([dataclasses.replace(c, label_path=None) for c in pool if c.case_id not in picks], pre_cfg, cache)
    base_cfg = base_train or TrainConfig()
    for variant in variants:
        path = out / f"{variant.name}.json"
        if path.is_file() or (only and not any(fnmatch.fnmatch(variant.name, p) for p in only)):
            continue
        try:
            train_cfg = from_dict(TrainConfig, {**_plain(base_cfg), "seed": seed, "device": device, **variant.train})
            finetune = from_dict(FinetuneConfig, dict(variant.finetune))
        except ValueError as exc:
            raise AssftError(f"variant {variant.name}: {exc}") from None
        mode = SSFTMode.SELECTIVE if variant.ssft_steps else SSFTMode.NONE
        ssft_cfg = SSFTConfig(mode=mode, supervised_steps=variant.steps, ssft_steps=variant.ssft_steps)
        say(f"{variant.name}: training {variant.steps} steps on {list(picks)} (recipe {finetune.label})")
        t0 = time.perf_counter()
        model = load_model(Path(model_dir), device=device)
        base = load_model(Path(model_dir), device=device)
        result = run_round_training(
            model.network, model.card, labelled, unlabelled, train_cfg=train_cfg, ssft_cfg=ssft_cfg,
            query_cfg=QueryConfig(), infer_cfg=infer_cfg, run_dir=out / "runs" / variant.name,
            finetune_cfg=finetune, base=base, reference=reference,
        )
        train_s = time.perf_counter() - t0
        scores = site_means(evaluate(result.network, test, num_classes=k, cfg=infer_cfg).to_dict())
        record = {
            "variant": variant.name,
            "picks": list(picks),
            "seed": seed,
            "train": dict(variant.train),
            "finetune": {**dict(variant.finetune), "recipe": finetune.label},
            "steps": variant.steps,
            "ssft_steps": variant.ssft_steps,
            **scores,
            "delta_vs_f0": {s: v - baseline["per_site"][s] for s, v in scores["per_site"].items()},
            "delta_mean_vs_f0": scores["mean_dice"] - baseline["mean_dice"],
            "retention": result.retention,
            "pseudo_labels": _pseudo_per_site(result.report) if variant.ssft_steps else None,
            "wall_s": {"round": train_s, "total": time.perf_counter() - t0},
        }
        atomic_write_json(path, record)
        say(f"{variant.name}: mean Dice {scores['mean_dice']:.3f} (f_0 {baseline['mean_dice']:.3f}) "
            + " ".join(f"{s} {d:+.3f}" for s, d in sorted(record["delta_vs_f0"].items())))
    results = [json.loads((out / f"{v.name}.json").read_text(encoding="utf-8")) for v in variants if (out / f"{v.name}.json").is_file()]
    (out / "summary.md").write_text(summary_table(baseline, results), encoding="utf-8")
    return results


def summary_table(baseline: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table: mean and per-site test Dice of each variant, change against f_0."""
    sites = sorted(baseline["per_site"])
    head = "| variant | mean Dice | Δ mean | " + " | ".join(f"Δ {s}" for s in sites) + " | s |\n"
    head += "|---|---|---|" + "---|" * len(sites) + "---|\n"
    rows = [f"| f_0 | {baseline['mean_dice']:.3f} | | " + " | ".join(f"{baseline['per_site'][s]:.3f}" for s in sites) + " | |"]
    for r in results:
        deltas = " | ".join(f"{r['delta_vs_f0'].get(s, float('nan')):+.3f}" for s in sites)
        rows.append(f"| {r['variant']} | {r['mean_dice']:.3f} | {r['delta_mean_vs_f0']:+.3f} | {deltas} | {r['wall_s']['total']:.0f} |")
    return head + "\n".join(rows) + "\n"


def _pseudo_per_site(report: Any) -> dict[str, Any] | None:
    """Admitted cases and pseudo-label voxel accuracy per site, from an SSFT reliability report."""
    if report is None:
        return None
    data = report.to_dict()
    return {"admitted_ids": report.admitted_ids, "per_site": data["pseudo_per_site"], "overall": data["pseudo_summary"]}


def _plain(cfg: TrainConfig) -> dict[str, Any]:
    from assft_core.config import to_dict

    return to_dict(cfg)
