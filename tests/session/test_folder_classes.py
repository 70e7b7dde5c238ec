"""A plain-folder dataset takes its classes from the model card (or `--classes`): a case whose
label lacks one structure is usable with a warning, not refused as "not consecutive" (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from assft_core.errors import StateError
from assft_core.session.commands import parse_classes
from assft_core.session.project import create_project, list_cases

from session_factories import write_nifti

CARD = {"backbone": "unet", "in_channels": 1, "classes": {"0": "background", "1": "liver", "2": "spleen"}}


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cid, present in (("both", (1, 2)), ("no_spleen", (1,))):
        write_nifti(root / f"{cid}.nii.gz", rng.normal(size=(8, 8, 8)).astype(np.float32))
        lab = np.zeros((8, 8, 8), np.uint8)
        for k in present:
            lab[1 + 3 * (k - 1) : 3 + 3 * (k - 1), 2:6, 2:6] = k
        write_nifti(root / f"{cid}_seg.nii.gz", lab)
    return root


def test_card_classes_make_an_absent_structure_a_warning(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    card = tmp_path / "card.json"
    card.write_text(json.dumps(CARD))
    project = create_project(tmp_path / "proj", data, card)
    assert project.classes == {0: "background", 1: "liver", 2: "spleen"}
    cases = {c.case_id: c for c in list_cases(project, usable_only=False)}
    assert cases["no_spleen"].usable and cases["both"].usable
    warnings = [p.message for p in cases["no_spleen"].problems]
    assert any("absent" in m and "2 spleen" in m for m in warnings), warnings
    assert not cases["both"].problems


def test_without_declared_classes_the_gap_is_still_an_error(tmp_path: Path) -> None:
    data = _folder(tmp_path / "data")
    (data / "no_spleen_seg.nii.gz").unlink()
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:4, 2:4, 2:4] = 2  # class 1 missing, nothing declared
    write_nifti(data / "no_spleen_seg.nii.gz", lab)
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"backbone": "unet"}))  # unreadable as a card: no classes to take
    project = create_project(tmp_path / "proj", data, card)
    case = next(c for c in list_cases(project, usable_only=False) if c.case_id == "no_spleen")
    assert not case.usable and "not consecutive" in case.problems[0].message
    # --classes declares them instead of the card.
    fixed = create_project(tmp_path / "proj2", data, card, classes=parse_classes(["3"]))
    assert next(c for c in list_cases(fixed, usable_only=False) if c.case_id == "no_spleen").usable


def test_parse_classes() -> None:
    assert parse_classes(["3"]) == {0: "background", 1: "class_1", 2: "class_2"}
    assert parse_classes(["bg", "liver"]) == {0: "bg", 1: "liver"}
    with pytest.raises(StateError):
        parse_classes(["1"])


def test_init_prints_the_warning_and_validate_takes_classes_for_a_folder(tmp_path: Path, capsys) -> None:
    from assft_core.cli import main

    data = _folder(tmp_path / "data")
    card = tmp_path / "card.json"
    card.write_text(json.dumps(CARD))
    assert main(["init", str(tmp_path / "proj"), "--dataset", str(data), "--model", str(card)]) == 0
    out = capsys.readouterr().out
    assert "1 warning(s) on usable cases" in out and "[no_spleen]" in out and "2 spleen" in out
    # `validate --dataset` of the folder checks against --classes when the folder declares none.
    assert main(["validate", "--dataset", str(data)]) == 0
    assert "0 warning(s)" in capsys.readouterr().out
    assert main(["validate", "--dataset", str(data), "--classes", "3"]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "absent" in out and "0 error(s), 1 warning(s)" in out
