"""The demo corpus builder at tiny size (issue 2): counts, labels, site effects, determinism, safety."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from assft_core.cli import main
from assft_core.data.demo.builder import MANIFEST, build_demo_corpus
from assft_core.errors import DataError

TINY = {"layout": "unbalanced", "seed": 0, "size": "tiny"}


def _cases(root: Path) -> list[dict[str, str]]:
    with open(root / "cases.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _load(root: Path, case_id: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    img = nib.load(root / "imagesTr" / f"{case_id}_0000.nii.gz")
    lab = nib.load(root / "labelsTr" / f"{case_id}.nii.gz")
    assert np.allclose(img.affine, lab.affine) and img.shape == lab.shape
    return np.asanyarray(img.dataobj), np.asanyarray(lab.dataobj), img


def _counts(rows: list[dict[str, str]]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        out[(r["site"], r["split"])] = out.get((r["site"], r["split"]), 0) + 1
    return out


def test_splits_sites_and_files(tiny_demo_corpus: Path) -> None:
    rows = _cases(tiny_demo_corpus)
    assert list(rows[0]) == ["case_id", "site", "split"]
    assert _counts(rows) == {
        ("source", "source_train"): 2,
        ("source", "source_test"): 1,
        ("A", "pool"): 3,
        ("B", "pool"): 1,
        ("C", "pool"): 1,
        ("D", "pool"): 1,
        ("A", "test"): 1,
        ("B", "test"): 1,
        ("C", "test"): 1,
        ("D", "test"): 1,
    }
    ids = sorted(r["case_id"] for r in rows)
    assert len(set(ids)) == len(ids)
    assert sorted(p.name[: -len("_0000.nii.gz")] for p in (tiny_demo_corpus / "imagesTr").iterdir()) == ids
    assert sorted(p.name[: -len(".nii.gz")] for p in (tiny_demo_corpus / "labelsTr").iterdir()) == ids
    meta = json.loads((tiny_demo_corpus / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "CSF": 1, "grey_matter": 2, "white_matter": 3}
    assert meta["channel_names"] == {"0": "T1"} and meta["numTraining"] == len(ids)
    assert "McGill University" in (tiny_demo_corpus / "README.txt").read_text()
    assert (tiny_demo_corpus / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_in_range_every_class_present_and_real_affines(tiny_demo_corpus: Path) -> None:
    for row in _cases(tiny_demo_corpus):
        image, label, img = _load(tiny_demo_corpus, row["case_id"])
        assert label.dtype == np.uint8 and image.dtype == np.int16
        assert set(np.unique(label)) == {0, 1, 2, 3}, row["case_id"]
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
        assert np.all(np.diag(img.affine)[:3] > 0)  # RAS
        expected = (4.0, 4.0, 12.0) if row["site"] == "C" else (4.0, 4.0, 4.0)
        assert np.allclose(img.header.get_zooms(), expected), row["case_id"]


def test_site_contrasts(tiny_demo_corpus: Path) -> None:
    """T1 sites keep WM > GM > CSF; site B (T2-like) inverts it to CSF > GM > WM."""
    for row in _cases(tiny_demo_corpus):
        image, label, _ = _load(tiny_demo_corpus, row["case_id"])
        csf, gm, wm = (float(image[label == k].mean()) for k in (1, 2, 3))
        if row["site"] == "B":
            assert csf > gm > wm, row["case_id"]
        else:
            assert wm > gm > csf, row["case_id"]


def test_site_c_is_thick_sliced_over_the_same_field_of_view(tiny_demo_corpus: Path) -> None:
    _, _, thin = _load(tiny_demo_corpus, "A_pool_000")
    _, _, thick = _load(tiny_demo_corpus, "C_pool_000")
    assert thick.shape[:2] == thin.shape[:2] and thick.shape[2] == -(-thin.shape[2] // 3)
    # First thick slice is centred on the second thin slice (the first slab's centre).
    assert np.isclose(thick.affine[2, 3], thin.affine[2, 3] + thin.affine[2, 2])


def test_deterministic_rebuild_is_byte_identical(tiny_demo_corpus: Path, tmp_path: Path) -> None:
    again = build_demo_corpus(tmp_path / "again", **TINY)
    names = sorted(p.relative_to(tiny_demo_corpus) for p in tiny_demo_corpus.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in names:
        assert (tiny_demo_corpus / name).read_bytes() == (again / name).read_bytes(), name


def test_layout_changes_pool_counts_only() -> None:
    """The builder writes exactly `plan_cases` (checked on the built corpus above); here the plans."""
    from assft_core.data.demo.plan import plan_cases

    def pool(layout: str, size: str) -> list[int]:
        cases = plan_cases(layout, size)
        return [sum(c.site.value == s and c.split.value == "pool" for c in cases) for s in "ABCD"]

    assert pool("unbalanced", "tiny") == [3, 1, 1, 1] and pool("balanced", "tiny") == [2, 2, 2, 2]
    assert pool("unbalanced", "full") == [24, 10, 4, 2] and pool("balanced", "full") == [10, 10, 10, 10]
    full = plan_cases("unbalanced", "full")
    assert sum(c.split.value == "source_train" for c in full) >= 12
    assert sum(c.split.value == "source_test" for c in full) >= 4
    assert [sum(c.site.value == s and c.split.value == "test" for c in full) for s in "ABCD"] == [3, 3, 3, 3]
    # Shared cases keep their ids (and, from (seed, site, split, index), their content) across layouts.
    unbalanced_ids = {c.case_id for c in plan_cases("unbalanced", "tiny")}
    assert {c.case_id for c in plan_cases("balanced", "tiny") if c.split.value == "test"} <= unbalanced_ids


def test_built_corpus_matches_its_plan(tiny_demo_corpus: Path) -> None:
    from assft_core.data.demo.plan import plan_cases

    expected = [[c.case_id, c.site.value, c.split.value] for c in plan_cases("unbalanced", "tiny")]
    assert [[r["case_id"], r["site"], r["split"]] for r in _cases(tiny_demo_corpus)] == expected


def test_seed_changes_the_subjects(tmp_path: Path) -> None:
    from assft_core.data.demo.anatomy import load_template_anatomy
    from assft_core.data.demo.builder import _make_case
    from assft_core.data.demo.plan import plan_cases

    template = load_template_anatomy(4.0)
    case = plan_cases("unbalanced", "tiny")[0]
    a0, l0, _ = _make_case(template, case, 0)
    a1, l1, _ = _make_case(template, case, 1)
    assert not np.array_equal(l0, l1) and not np.array_equal(a0, a1)


def test_idempotent_and_refuses_to_overwrite(tiny_demo_corpus: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_demo_corpus.rglob("*")}
    assert build_demo_corpus(tiny_demo_corpus, **TINY) == tiny_demo_corpus
    with pytest.raises(DataError, match="seed=0"):
        build_demo_corpus(tiny_demo_corpus, layout="unbalanced", seed=1, size="tiny")
    assert {p: p.stat().st_mtime_ns for p in tiny_demo_corpus.rglob("*")} == before
    assert [p.name for p in tiny_demo_corpus.parent.iterdir() if ".tmp-" in p.name] == []

    user = tmp_path / "mine"
    user.mkdir()
    (user / "scan.nii.gz").write_bytes(b"precious")
    with pytest.raises(DataError, match="not a demo corpus"):
        build_demo_corpus(user, **TINY)
    assert (user / "scan.nii.gz").read_bytes() == b"precious" and len(list(user.iterdir())) == 1
    with pytest.raises(DataError, match="is a file"):
        build_demo_corpus(user / "scan.nii.gz", **TINY)
    with pytest.raises(DataError, match="layout"):
        build_demo_corpus(tmp_path / "x", layout="skewed", seed=0, size="tiny")
    assert json.loads((tiny_demo_corpus / MANIFEST).read_text())["seed"] == 0


def test_cli_build_exit_codes(tiny_demo_corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "build", str(tiny_demo_corpus), "--size", "tiny"]) == 0
    assert main(["demo", "build", str(tiny_demo_corpus), "--size", "tiny", "--seed", "7"]) == 1
    err = capsys.readouterr().err
    assert "seed=7" in err and "Traceback" not in err
