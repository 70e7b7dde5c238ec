"""Measure SSFT modes on a labelled corpus: test Dice after the same rounds, and pseudo-label quality.

Every mode sees the same labelled sets (a seeded random order of the pool, `--labels-per-round`
more cases each round), the same seeds and the same step counts, so the modes differ only in the
SSFT phase (ASSFT, METHOD.md §4). The corpus's pool labels serve as the labelling oracle and as
the reference for the pseudo-labels' voxel accuracy (never trained on for unlabelled cases).
The arm `labelled_only` (mode `selective` with ρ = 0) trains S + S_u steps on L alone: it tells
the effect of the pseudo-labels apart from the effect of S_u more steps.

Example (demo corpus, a model from `assft pretrain` or any model folder with a card):

    assft demo build /tmp/corpus
    .venv/bin/python scripts/measure_ssft.py --corpus /tmp/corpus --model MODEL_DIR \\
        --out /tmp/ssft.json --rounds 2 --labels-per-round 2 --modes selective none labelled_only

Writes one JSON file (never over an existing one) and prints a summary table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assft_core.config import InferenceConfig, QueryConfig, SSFTConfig, SSFTMode, TrainConfig
from assft_core.data.importers import import_dataset
from assft_core.data.preprocess import preprocess_case
from assft_core.data.records import PreprocessedCase, Split
from assft_core.errors import AssftError
from assft_core.models.loaded import load_model
from assft_core.train.evaluate import EvalCase, evaluate, load_eval_case
from assft_core.train.ssft import run_round_training

LABELLED_ONLY = "labelled_only"  # selective with ρ = 0: S + S_u steps on L alone


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="dataset folder with pool and test splits (cases.csv)")
    p.add_argument("--model", type=Path, required=True, help="model folder (model_card.json + weights): f_0")
    p.add_argument("--out", type=Path, required=True, help="result JSON (must not exist)")
    p.add_argument("--work", type=Path, default=None, help="run folders (default: beside --out)")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessing cache (reused across invocations)")
    p.add_argument("--modes", nargs="+", default=["selective", "none", LABELLED_ONLY],
                   help=f"SSFT modes to compare ({', '.join(m.value for m in SSFTMode)}, {LABELLED_ONLY})")
    p.add_argument("--max-pool", type=int, default=None,
                   help="use only the first N pool cases of the seeded order as U (cheaper scoring passes)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--labels-per-round", type=int, default=2)
    p.add_argument("--supervised-steps", type=int, default=SSFTConfig.supervised_steps)
    p.add_argument("--ssft-steps", type=int, default=SSFTConfig.ssft_steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--infer-roi", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
                   help="sliding-window ROI of scoring and evaluation (default: the card's ROI); one window "
                   "covering a whole volume is cheapest on a CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def _arm(mode: str) -> SSFTConfig:
    if mode == LABELLED_ONLY:
        return SSFTConfig(mode=SSFTMode.SELECTIVE, rho=0.0)
    return SSFTConfig(mode=SSFTMode(mode))


def _dice(report: Any) -> dict[str, Any]:
    return {
        "mean_dice": report.overall.mean_dice,
        "dice_per_class": report.overall.to_dict()["dice_per_class"],
        "per_site": {s: v.mean_dice for s, v in report.per_site.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.out.exists():
        print(f"error: {args.out} exists; choose another --out.", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    work = args.work or args.out.with_suffix("")
    f0 = load_model(args.model, device=args.device)
    card = f0.card
    manifest = import_dataset(args.corpus)
    records = [r for r in manifest.cases if r.split is Split.POOL]
    # One seeded order: U is its first --max-pool cases, and L grows along it in every mode.
    records = [records[i] for i in np.random.default_rng(args.seed).permutation(len(records))][: args.max_pool]
    pool: list[PreprocessedCase] = [preprocess_case(r, card.preprocess, cache_dir=args.cache_dir) for r in records]
    tests: list[EvalCase] = [
        load_eval_case(r, card.preprocess, cache_dir=args.cache_dir) for r in manifest.cases if r.split is Split.TEST
    ]
    by_id = {c.case_id: c for c in pool}
    order = [c.case_id for c in pool]
    infer = InferenceConfig(roi_size=tuple(args.infer_roi or card.roi_size), device=args.device)
    train_cfg = TrainConfig(batch_size=args.batch_size, unlabelled_batch_size=args.batch_size, patch_size=card.roi_size,
                            seed=args.seed, device=args.device)
    k = card.out_channels
    f0_dice = _dice(evaluate(f0.network, tests, num_classes=k, cfg=infer))
    print(f"f_0: test mean Dice {f0_dice['mean_dice']:.3f}", flush=True)

    results: dict[str, list[dict[str, Any]]] = {}
    for mode in args.modes:
        arm = dataclasses.replace(_arm(mode), supervised_steps=args.supervised_steps, ssft_steps=args.ssft_steps)
        network = copy.deepcopy(f0.network)
        rows = []
        for t in range(args.rounds):
            labelled_ids = order[: args.labels_per_round * (t + 1)]
            labelled = [by_id[c] for c in labelled_ids]
            # Unlabelled cases travel without their label: the reference goes only to the report.
            unlabelled = [dataclasses.replace(c, label=None) for c in pool if c.case_id not in labelled_ids]
            t0 = time.perf_counter()
            res = run_round_training(
                network, card, labelled, unlabelled, train_cfg=train_cfg, ssft_cfg=arm, query_cfg=QueryConfig(),
                infer_cfg=infer, run_dir=work / mode / f"round{t}", reference=lambda cid: by_id[cid].label,
            )
            dice = _dice(evaluate(network, tests, num_classes=k, cfg=infer))
            rep = res.report
            row = {
                "round": t,
                "labelled": labelled_ids,
                "test": dice,
                "admitted": rep.admitted_ids if rep else [],
                "pseudo_admitted": rep.pseudo_summary(True) if rep else None,
                "pseudo_all_unlabelled": rep.pseudo_summary(False) if rep else None,
                "distributions": rep.to_dict()["distributions"] if rep else None,
                "warnings": rep.warnings if rep else [],
                "timings_s": res.timings_s,
                "wall_s": time.perf_counter() - t0,
            }
            rows.append(row)
            ps = row["pseudo_admitted"] or {}
            print(
                f"{mode:>15} round {t}: |L|={len(labelled_ids)} |R|={len(row['admitted'])} "
                f"test Dice {dice['mean_dice']:.3f}  kept {ps.get('kept_fraction')}  acc {ps.get('kept_accuracy')}  "
                f"({row['wall_s']:.0f} s)",
                flush=True,
            )
        results[mode] = rows

    out = {
        "command": [sys.executable, *sys.argv],
        "corpus": str(args.corpus),
        "model": str(args.model),
        "settings": {k2: (str(v) if isinstance(v, Path) else v) for k2, v in vars(args).items()},
        "f0": f0_dice,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
