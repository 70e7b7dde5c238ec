"""`assft bench scale`: the synthetic CT generator, the nearest-HU classifier, one measured child
and the report's table (tiny sizes; the real-size numbers belong in benchmarks/scale/)."""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from assft_core.bench import commands
from assft_core.bench.scale import (
    _ct_preprocess,
    _growth,
    markdown_table,
    measure_child,
    nearest_hu_network,
    run_phase,
    write_synthetic_ct,
)
from assft_core.data.io import spacing_from_affine


def test_synthetic_ct_and_the_nearest_hu_network(tmp_path: Path) -> None:
    image_path, label_path = write_synthetic_ct(tmp_path, "c", (40, 36, 20), 6, (0.8, 0.8, 1.5), "LPS", seed=3)
    img, lab = nib.load(str(image_path)), nib.load(str(label_path))
    assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert np.allclose(spacing_from_affine(img.affine), (0.8, 0.8, 1.5))
    hu, label = np.asarray(img.dataobj), np.asarray(lab.dataobj)
    assert set(np.unique(label)) <= set(range(6)) and len(np.unique(label)) >= 3
    # The 1×1×1 classifier segments the scan exactly on its own grid (no resampling).
    cfg = _ct_preprocess((1.5, 1.5, 1.5))
    lo, hi = cfg.ct_window
    x = torch.from_numpy(((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32))[None, None]
    with torch.no_grad():
        pred = nearest_hu_network(6, cfg)(x).argmax(1)[0].numpy()
    np.testing.assert_array_equal(pred, label)


def test_a_phase_runs_in_a_child_with_its_peak_rss(tmp_path: Path) -> None:
    image, label = write_synthetic_ct(tmp_path, "c", (24, 24, 16), 4, (1.5, 1.5, 1.5))
    row = measure_child({"phase": "metrics", "work": str(tmp_path), "image": str(image), "label": str(label),
                         "n_classes": 4, "model_spacing_mm": [1.5] * 3, "roi": [16] * 3})
    assert row["peak_rss_mib"] > 50 and row["wall_s"] >= 0 and 0 <= row["mean_dice"] <= 1


def test_the_import_train_step_and_predict_phases(tmp_path: Path) -> None:
    # In this process (`run_phase` is what each child runs; the child itself is tested above).
    image, label = write_synthetic_ct(tmp_path / "ct", "c", (24, 24, 16), 4, (1.5, 1.5, 1.5))
    spec = {"work": str(tmp_path / "work"), "image": str(image), "label": str(label), "n_classes": 4,
            "model_spacing_mm": [1.5] * 3, "roi": [16] * 3, "threads": torch.get_num_threads()}
    imported = run_phase({**spec, "phase": "import"})
    assert (imported["cases"], imported["usable"]) == (1, 1)
    assert np.isfinite(run_phase({**spec, "phase": "train_step"})["loss"])
    assert run_phase({**spec, "phase": "predict"})["written_mib"] > 0


def test_growth_and_table() -> None:
    rows = [
        {"phase": "score", "n_cases": 4, "shape": [8, 8, 8], "n_classes": 3, "wall_s": 1.0, "peak_rss_mib": 600.0,
         "above_baseline_mib": 50.0},
        {"phase": "score", "n_cases": 64, "shape": [8, 8, 8], "n_classes": 3, "wall_s": 16.0, "peak_rss_mib": 606.0,
         "above_baseline_mib": 56.0},
    ]
    growth = _growth(rows)
    assert growth["score"]["n"] == [4, 64] and abs(growth["score"]["peak_rss_ratio"] - 1.01) < 1e-9
    report = {"command": ["assft", "bench", "scale"], "created_utc": "now", "machine": {"cpu_count": 2},
              "note": "idle", "rows": rows, "growth": growth}
    table = markdown_table(report)
    assert "| score | 64 | 8×8×8 | 3 | 16.0 | 606 | 56 |" in table and "N 4 → 64" in table


def test_the_cli_knows_the_scale_benchmark() -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "scale", "--out", "x.json", "--pool-sizes", "2", "3",
                              "--more-shapes", "128", "128", "128"])
    assert args.pool_sizes == [2, 3] and args.shape == [512, 512, 240] and args.classes == 15
    assert args.more_shapes == [[128, 128, 128]]
