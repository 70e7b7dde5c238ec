"""`assft bench scale`: time and peak memory (RSS) of each phase at real size and as the pool grows.

A synthetic CT generator writes NIfTI cases (int16 HU image, uint8 label with `n_classes - 1`
ellipsoid structures inside a body, any voxel size, LPS or RAS axes). Each phase runs in its own
child process (`python -m assft_core.bench.scale SPEC`), and its peak resident set is what the
kernel reports for that child (`os.wait4` rusage, `ru_maxrss`): the whole process, imports
included, so a `baseline` child (imports only) is measured too. Phases:

    baseline   import the engine and torch, nothing else (the floor under every other number)
    import     the case's folder read as a dataset and checked (`import_dataset` + `check_dataset`:
               headers, label values, geometry)
    preprocess one real-size case, cold cache (`load_case`: written float16)
    metrics    Dice/HD95 of a real-size label against a shifted copy (`score_classes` alone)
    train_step two optimiser steps of a tiny UNet on the real-size case (warm cache, ROI patches)
    evaluate   one real-size case end to end (`EvalCaseStream` + `evaluate`, warm cache), with a
               1×1×1 convolution that classifies intensities by their nearest structure HU
    predict    `predict` with that convolution: preprocessing, sliding window, the label written
               on the scan's own grid
    score      the scoring pass over a pool of N small cases (`LazyCases` + `score_cases`)
    ssft       an SSFT round over 2 labelled + N unlabelled small cases (1 + 1 steps, the default
               recipe): f_0's retention targets, the scoring pass of f_t^sup, pseudo-labels, R and
               the SSFT phase

The real-size phases run at `--shape` and again at each `--more-shapes`. The JSON holds one row
per (phase, shape, N) with wall seconds and peak RSS in MiB, plus the machine,
the exact command and the load at start; a Markdown table is written beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCALE_VERSION = 1
ORIENTATIONS = ("LPS", "RAS")
PHASES = ("baseline", "import", "preprocess", "metrics", "train_step", "evaluate", "predict", "score", "ssft")
REAL_SIZE_PHASES = ("import", "preprocess", "metrics", "train_step", "evaluate", "predict")
POOL_PHASES = ("score", "ssft")


def synthetic_ct_affine(spacing_mm: Sequence[float], orientation: str) -> np.ndarray:
    """(4, 4) voxel -> world (RAS, mm) affine of a scan with `spacing_mm` and `orientation` axes.

    Raises:
        ValueError: an orientation other than "LPS" or "RAS".
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation {orientation!r}: use one of {ORIENTATIONS}.")
    signs = (-1.0, -1.0, 1.0) if orientation == "LPS" else (1.0, 1.0, 1.0)
    affine = np.diag([*(s * float(v) for s, v in zip(signs, spacing_mm)), 1.0])
    affine[:3, 3] = (100.0, 120.0, -300.0)
    return affine


def structure_hu(k: int, n_classes: int) -> float:
    """The HU of structure `k` (1..K-1): evenly spaced in 100..800 HU (body is 0, air -1000)."""
    return 100.0 + 700.0 * (k - 1) / max(1, n_classes - 2)


def write_synthetic_ct(
    folder: Path,
    case_id: str,
    shape: Sequence[int],
    n_classes: int,
    spacing_mm: Sequence[float],
    orientation: str = "LPS",
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write one synthetic CT case as uncompressed NIfTI: `<case_id>_0000.nii`, `<case_id>.nii`.

    Image: int16 HU, air -1000, an elliptic body cylinder at 0 HU, and `n_classes - 1` ellipsoid
    structures (HU from `structure_hu`, later ones drawn over earlier ones, each made inside its own
    box so memory stays at one volume). Label: uint8, structure k = class k. No noise (a noisy
    512² × 240 volume would take more time to draw than the phases it feeds).

    Args:
        folder: where the two files go (created).
        case_id: file name stem.
        shape: (X, Y, Z) voxels.
        n_classes: K, background included (2..255).
        spacing_mm: voxel size in mm along X, Y, Z.
        orientation: "LPS" (DICOM-like, as CT arrives) or "RAS".
        seed: places and sizes of the structures.

    Returns:
        (image path, label path).

    Raises:
        ValueError: K outside 2..255, or a bad orientation.
    """
    import nibabel as nib

    if not 2 <= n_classes <= 255:
        raise ValueError(f"n_classes={n_classes}: use 2..255 (uint8 labels).")
    rng = np.random.default_rng(seed)
    nx, ny, nz = (int(s) for s in shape)
    image = np.full((nx, ny, nz), -1000, np.int16)
    label = np.zeros((nx, ny, nz), np.uint8)
    gx, gy = np.ogrid[:nx, :ny]
    body = ((gx - nx / 2) / (0.45 * nx)) ** 2 + ((gy - ny / 2) / (0.35 * ny)) ** 2 <= 1.0
    image[body] = 0
    for k in range(1, n_classes):
        radius = np.maximum(2, (rng.uniform(0.04, 0.09) * np.array([nx, ny, nz]))).astype(int)
        centre = [int(rng.uniform(0.35, 0.65) * n) for n in (nx, ny, nz)]
        lo = [max(0, c - r) for c, r in zip(centre, radius)]
        hi = [min(n, c + r + 1) for c, r, n in zip(centre, radius, (nx, ny, nz))]
        ax, ay, az = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        inside = (
            ((ax - centre[0]) / radius[0]) ** 2 + ((ay - centre[1]) / radius[1]) ** 2 + ((az - centre[2]) / radius[2]) ** 2
        ) <= 1.0
        box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        image[box][inside] = int(structure_hu(k, n_classes))
        label[box][inside] = k
    affine = synthetic_ct_affine(spacing_mm, orientation)
    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / f"{case_id}_0000.nii", folder / f"{case_id}.nii"
    nib.save(nib.Nifti1Image(image, affine), str(image_path))
    nib.save(nib.Nifti1Image(label, affine), str(label_path))
    return image_path, label_path


def _ct_preprocess(spacing_mm: Sequence[float]) -> Any:
    from assft_core.config import Modality, PreprocessConfig

    return PreprocessConfig(spacing_mm=tuple(float(s) for s in spacing_mm), modality=Modality.CT)


def nearest_hu_network(n_classes: int, cfg: Any) -> Any:
    """A 1×1×1 convolution whose argmax is the class whose HU is nearest a voxel's intensity.

    logit_k = 2 c_k x − c_k² (c_k: class k's HU after the CT window; background at 0 HU), so
    argmax_k = argmin_k (x − c_k)²: it segments `write_synthetic_ct` scans up to resampling.
    """
    import torch
    from torch import nn

    lo, hi = cfg.ct_window
    centres = [0.0] + [structure_hu(k, n_classes) for k in range(1, n_classes)]
    c = torch.tensor([(v - lo) / (hi - lo) for v in centres], dtype=torch.float32)
    conv = nn.Conv3d(1, n_classes, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_((2 * c).view(n_classes, 1, 1, 1, 1))
        conv.bias.copy_(-(c**2))
    return conv.eval()


# ---------------------------------------------------------------- child side: one phase


def run_phase(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one phase in this process (the child); returns its details (wall time in seconds).

    Raises:
        ValueError: an unknown phase.
    """
    import torch

    from assft_core.data.records import CaseRecord

    # Every phase imports the same modules before its clock starts (the baseline phase stops here).
    import assft_core.bench.cost  # noqa: F401
    import assft_core.data.preprocess  # noqa: F401
    import assft_core.query.scoring  # noqa: F401
    import assft_core.train.evaluate  # noqa: F401
    import assft_core.train.ssft  # noqa: F401

    torch.set_num_threads(int(spec.get("threads", 1)))
    phase = spec["phase"]
    work = Path(spec["work"])
    t0 = time.perf_counter()
    details: dict[str, Any] = {}
    if phase == "baseline":
        pass
    elif phase in REAL_SIZE_PHASES:
        from assft_core.data.io import load_label, spacing_from_affine

        cfg = _ct_preprocess(spec["model_spacing_mm"])
        record = CaseRecord("ct000", (Path(spec["image"]),), Path(spec["label"]), site="synthetic")
        if phase == "import":
            from assft_core.data.importers import import_dataset
            from assft_core.data.integrity import check_dataset

            manifest = import_dataset(_as_nnunet_dataset(record, int(spec["n_classes"]), work))
            reports = check_dataset(manifest, cfg=cfg)
            details["cases"] = len(manifest.cases)
            details["usable"] = sum(not r.errors for r in reports)
        elif phase == "train_step":
            details.update(_train_step(spec, record, cfg, work))
        elif phase == "predict":
            from assft_core.config import InferenceConfig
            from assft_core.train.predict import predict

            icfg = InferenceConfig(roi_size=tuple(spec["roi"]), device="cpu", sw_batch_size=1)
            out = work / f"predicted-{time.time_ns()}"
            (written,) = predict(nearest_hu_network(spec["n_classes"], cfg), [Path(spec["image"])], out,
                                 preprocess_cfg=cfg, infer_cfg=icfg)
            details["written_mib"] = written.stat().st_size / 2**20
        elif phase == "preprocess":
            from assft_core.data.case_cache import load_case

            case = load_case(record, cfg, cache_dir=work / "cache")
            details["preprocessed_shape"] = list(case.image.shape)
        elif phase == "metrics":
            from assft_core.train.evaluate import score_classes

            lab = load_label(record.label_path)
            ref = lab.array[0]
            pred = np.roll(ref, 2, axis=0)
            scores = score_classes(pred, ref, spec["n_classes"], spacing_from_affine(lab.affine))
            details["mean_dice"] = float(np.mean([s.dice for s in scores.values() if s.dice is not None]))
        else:
            from assft_core.config import InferenceConfig
            from assft_core.train.evaluate import EvalCaseStream, evaluate

            net = nearest_hu_network(spec["n_classes"], cfg)
            icfg = InferenceConfig(roi_size=tuple(spec["roi"]), device="cpu", sw_batch_size=1)
            report = evaluate(net, EvalCaseStream([record], cfg, work / "cache"), num_classes=spec["n_classes"], cfg=icfg)
            assert report.overall is not None
            details.update(mean_dice=report.overall.mean_dice, mean_hd95_mm=report.overall.mean_hd95_mm,
                           missed=sum(report.overall.missed_per_class.values()))
    elif phase in POOL_PHASES:
        details.update(_pool_phase(spec, work))
    else:
        raise ValueError(f"unknown scale phase {phase!r}; use one of {PHASES}.")
    details["wall_s"] = time.perf_counter() - t0
    return details


def _as_nnunet_dataset(record: Any, n_classes: int, work: Path) -> Path:
    """An nnU-Net v2 dataset folder holding the case (symbolic links) and its dataset.json."""
    root = work / f"dataset-{time.time_ns()}"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "imagesTr" / "ct000_0000.nii").symlink_to(Path(record.image_paths[0]).resolve())
    (root / "labelsTr" / "ct000.nii").symlink_to(Path(record.label_path).resolve())
    labels = {"background": 0, **{f"structure_{k}": k for k in range(1, n_classes)}}
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii"}
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


def _train_step(spec: dict[str, Any], record: Any, cfg: Any, work: Path) -> dict[str, Any]:
    """Two optimiser steps of the tiny UNet on the real-size case (cached preprocessing), its
    patch sources prepared as a round prepares them: what one labelled case costs in training."""
    from assft_core.bench.cost import tiny_model
    from assft_core.config import TrainConfig
    from assft_core.data.case_cache import load_case
    from assft_core.train.data import TrainData, TrainSample
    from assft_core.train.trainer import train

    case = load_case(record, cfg, cache_dir=work / "cache")
    model = tiny_model(n_classes=int(spec["n_classes"]), seed=0)
    sample = TrainSample(case.case_id, case.image, np.asarray(case.label, dtype=np.uint8))
    del case
    result = train(TrainConfig(steps=2, batch_size=2, patch_size=tuple(spec["roi"]), checkpoint_every=100,
                               device="cpu"), model.network, TrainData([sample]), run_dir=work / f"train-{time.time_ns()}")
    return {"loss": float(result.loss)}


def _pool_phase(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    from assft_core.bench.cost import tiny_model
    from assft_core.config import InferenceConfig, QueryConfig, SSFTConfig, SSFTMode, TrainConfig
    from assft_core.data.records import CaseRecord
    from assft_core.data.stream import LazyCases

    n = int(spec["n"])
    pool_dir = Path(spec["pool_dir"])
    cfg = _ct_preprocess(spec["pool_spacing_mm"])
    model = tiny_model(n_classes=int(spec["pool_classes"]), seed=0)
    records = [
        CaseRecord(f"p{i:03d}", (pool_dir / f"p{i:03d}_0000.nii",), None, site="AB"[i % 2]) for i in range(n)
    ]
    infer = InferenceConfig(roi_size=tuple(model.card.roi_size), device="cpu")
    cache = work / f"cache-{spec['phase']}-{n}"
    if spec["phase"] == "score":
        from assft_core.query.scoring import score_cases

        table = score_cases(
            model, LazyCases(records, cfg, cache), model_tag="scale", cfg=QueryConfig(), infer_cfg=infer,
            out_dir=work / f"scores-{n}", cache_key=None,
        )
        return {"scored": len(table.case_ids)}
    from assft_core.config import FinetuneConfig
    from assft_core.train.ssft import run_round_training

    labelled = [
        LazyCases([CaseRecord(f"l{i}", (pool_dir / f"l{i}_0000.nii",), pool_dir / f"l{i}.nii", site="A")], cfg, cache)[0]
        for i in range(2)
    ]
    result = run_round_training(
        model.network, model.card, labelled, LazyCases(records, cfg, cache),
        train_cfg=TrainConfig(batch_size=1, unlabelled_batch_size=1, patch_size=tuple(model.card.roi_size),
                              augment=False, device="cpu"),
        ssft_cfg=SSFTConfig(mode=SSFTMode.SELECTIVE, supervised_steps=1, ssft_steps=1),
        query_cfg=QueryConfig(), infer_cfg=infer, run_dir=work / f"ssft-{n}",
        # The project's default recipe, so f_0's retention targets over U \ L are measured too.
        finetune_cfg=FinetuneConfig(), base=tiny_model(n_classes=int(spec["pool_classes"]), seed=0),
    )
    assert result.report is not None
    return {"admitted": len(result.report.admitted_ids)}


# ---------------------------------------------------------------- parent side


def measure_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run `spec` in a child process; its details plus "peak_rss_mib" (the child's `ru_maxrss`).

    Raises:
        RuntimeError: the child failed (its stderr's tail is in the message).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "assft_core.bench.scale", json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"scale phase {spec['phase']} failed (exit {proc.returncode}): {err[-2000:]}")
    details = json.loads(out.strip().splitlines()[-1])
    details["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    return details


def run_scale(args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    """Generate the synthetic cases, measure every asked phase in a child, return the report.

    Raises:
        RuntimeError: a phase failed.
    """
    from assft_core.bench.report import command_line, load_note, machine_info, utc_stamp

    phases = [p for p in PHASES if p in set(args.phases)]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="assft-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    base = {"work": str(work), "threads": args.threads, "n_classes": args.classes,
            "model_spacing_mm": list(args.model_spacing), "roi": list(args.roi)}

    def measure(spec: dict[str, Any], **row: Any) -> None:
        details = measure_child({**base, **spec})
        peak = details.pop("peak_rss_mib")
        floor = rows[0]["peak_rss_mib"] if rows and rows[0]["phase"] == "baseline" else None
        rows.append({"phase": spec["phase"], **row, "wall_s": details.pop("wall_s"), "peak_rss_mib": peak,
                     "above_baseline_mib": None if floor is None else peak - floor, "details": details})
        r = rows[-1]
        log(f"{r['phase']:<10} {str(row.get('n_cases', '')):>4} {r['wall_s']:8.1f} s  peak RSS {peak:7.0f} MiB")

    if "baseline" in phases:
        measure({"phase": "baseline"}, n_cases=0)
    big = [p for p in phases if p in REAL_SIZE_PHASES]
    for shape in [args.shape, *(args.more_shapes or [])] if big else []:
        t = time.perf_counter()
        name = "x".join(map(str, shape))
        image, label = write_synthetic_ct(work / f"ct-{name}", "ct000", shape, args.classes, args.spacing, args.orientation)
        log(f"wrote a {'×'.join(map(str, shape))} CT with {args.classes} classes in {time.perf_counter() - t:.0f} s")
        spec = {"image": str(image), "label": str(label), "work": str(work / f"phases-{name}")}
        for phase in REAL_SIZE_PHASES:
            if phase in big:
                measure({**spec, "phase": phase}, n_cases=1, shape=list(shape), n_classes=args.classes)
    pool = [p for p in phases if p in POOL_PHASES]
    if pool:
        pool_dir = work / "pool"
        n_max = max(args.pool_sizes)
        for i in range(n_max):
            write_synthetic_ct(pool_dir, f"p{i:03d}", args.pool_shape, args.pool_classes, args.pool_spacing, args.orientation, seed=i)
        for i in range(2):
            write_synthetic_ct(pool_dir, f"l{i}", args.pool_shape, args.pool_classes, args.pool_spacing, args.orientation, seed=1000 + i)
        spec = {"pool_dir": str(pool_dir), "pool_spacing_mm": list(args.pool_spacing), "pool_classes": args.pool_classes}
        for phase in pool:
            for n in sorted(args.pool_sizes):
                measure({**spec, "phase": phase, "n": n}, n_cases=n, shape=list(args.pool_shape), n_classes=args.pool_classes)
    return {
        "version": SCALE_VERSION,
        "created_utc": utc_stamp(),
        "machine": {**machine_info("cpu").__dict__, "memory_gib": _memory_gib()},
        "note": load_note() + "; peak RSS per phase = the child process's ru_maxrss (imports included; see baseline)",
        "command": command_line(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("func", "work")},
        "rows": rows,
        "growth": _growth(rows),
    }


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pool phase: peak RSS and wall time at the largest N over the smallest N."""
    out: dict[str, Any] = {}
    for phase in POOL_PHASES:
        mine = sorted((r for r in rows if r["phase"] == phase), key=lambda r: r["n_cases"])
        if len(mine) >= 2:
            lo, hi = mine[0], mine[-1]
            out[phase] = {
                "n": [lo["n_cases"], hi["n_cases"]],
                "peak_rss_ratio": hi["peak_rss_mib"] / lo["peak_rss_mib"],
                "peak_rss_added_mib": hi["peak_rss_mib"] - lo["peak_rss_mib"],
                "wall_ratio": hi["wall_s"] / lo["wall_s"],
            }
    return out


def markdown_table(report: dict[str, Any]) -> str:
    """The report's rows as a Markdown table (phase, cases, shape, classes, seconds, peak RSS)."""
    lines = [
        f"`{' '.join(report['command'])}` — {report['created_utc']}, {report['machine']['cpu_count']} CPU(s), "
        f"{report['note']}",
        "",
        "| phase | cases | shape | classes | wall s | peak RSS MiB | above baseline MiB |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        shape = "×".join(map(str, r.get("shape", []))) or "-"
        above = "-" if r.get("above_baseline_mib") is None else f"{r['above_baseline_mib']:.0f}"
        lines.append(
            f"| {r['phase']} | {r.get('n_cases', '')} | {shape} | {r.get('n_classes', '-')} | {r['wall_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {above} |"
        )
    for phase, g in report["growth"].items():
        lines.append("")
        lines.append(
            f"{phase}: N {g['n'][0]} → {g['n'][1]}: peak RSS × {g['peak_rss_ratio']:.2f} "
            f"({g['peak_rss_added_mib']:+.0f} MiB), wall time × {g['wall_ratio']:.1f}"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: run the phase whose JSON spec is the only argument; print its details."""
    argv = list(sys.argv[1:] if argv is None else argv)
    print(json.dumps(run_phase(json.loads(argv[0])), default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
