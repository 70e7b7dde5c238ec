"""The session's `assft` commands end to end on a tiny corpus (in-process `cli.main`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assft_core.cli import main
from assft_core.query.table import Availability, CaseScores, ScoreTable
from assft_core.session import labels, rounds
from assft_core.session.project import open_project
from session_factories import label_map, make_dataset, write_nifti


def _scores(project_dir: Path) -> str:
    """Store a hand-made score table for round 0 (what the phase-2 scoring job writes)."""
    rng = np.random.default_rng(0)
    rows = []
    for i, cid in enumerate(["p0", "p1", "p2", "p3", "t0", "t1"]):
        z = rng.normal(size=4)
        rows.append(CaseScores(cid, "A", f"k{i}", kl=np.array([0.1 * (i + 1)]), embedding=z / np.linalg.norm(z),
                               asd=0.2 * i, class_entropy=np.array([0.1]), confidence=0.8, mean_entropy=0.1,
                               fg_fraction=0.1))
    table = ScoreTable("f0", rows, ["enc.bn1"], Availability(True, "file", True, True))
    table.save(project_dir / "artifacts" / "scores" / "round0")
    return "artifacts/scores/round0"


def test_cli_init_status_query_label(tmp_path: Path, capsys, monkeypatch) -> None:
    data = make_dataset(tmp_path / "data")
    model = tmp_path / "model.json"
    model.write_text("{}")
    proj = tmp_path / "proj"
    init = ["init", str(proj), "--dataset", str(data), "--model-config", str(model)]
    assert main([*init, "--oracle", "--budget", "2"]) == 0
    out = capsys.readouterr().out
    assert "created project" in out and "A                pool              2      2        0" in out

    assert main(init) == 1
    assert "already a project" in capsys.readouterr().err

    monkeypatch.setenv("ASSFT_PROJECT", str(proj))  # the default project of every later command
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "round 0: open" in out and "score the pool" in out and "total" in out

    assert main(["approve", "--all"]) == 1
    assert "round 0 is 'open'" in capsys.readouterr().err

    rounds.mark_scored(open_project(proj), _scores(proj))
    assert main(["query", "--strategy", "assft"]) == 0
    picks = [q.case_id for q in rounds.list_queries(open_project(proj))]
    assert len(picks) == 2 and not {"t0", "t1"} & set(picks)
    capsys.readouterr()

    assert main(["swap", picks[0]]) == 0
    live = [q.case_id for q in rounds.list_queries(open_project(proj)) if q.status.value == "proposed"]
    assert len(live) == 2 and picks[0] not in live and picks[1] in live
    assert main(["approve", "--all"]) == 0
    assert rounds.current_round(open_project(proj)).state is rounds.RoundState.APPROVED
    capsys.readouterr()

    bad = write_nifti(tmp_path / "up" / "bad.nii.gz", np.zeros((4, 4, 4), np.uint8))
    assert main(["label", live[0], str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: label") and "Traceback" not in err
    good = write_nifti(tmp_path / "up" / "good.nii.gz", label_map(0))
    assert main(["label", live[0], str(good)]) == 0
    assert main(["label", "--oracle"]) == 0
    assert "labelled" in capsys.readouterr().out

    assert main(["status", "--project", str(proj)]) == 0
    out = capsys.readouterr().out
    assert "round 0: labelled" in out and "labels by source: expert 1, oracle 1" in out
    # Each labelled pick reads `labelled`, not the `approved` it was stored with.
    pick_lines = [line for line in out.splitlines() if line.strip().startswith("#")]
    assert len(pick_lines) == 3 and sum(" labelled " in line for line in pick_lines) == 2  # + the swapped one
    assert not any(" approved " in line for line in pick_lines)
    # Asking for picks now names the round's state and its next step, not the picks.
    assert main(["query"]) == 1
    err = capsys.readouterr().err
    assert "round 0 is 'labelled'" in err and "assft train" in err and "live pick" not in err
    sources = {c: v.source for c, v in labels.current_labels(open_project(proj)).items()}
    assert sources == {live[0]: "expert", live[1]: "oracle"}

    assert main(["job", "list"]) == 0
    assert "no jobs" in capsys.readouterr().out


def test_cli_usage_errors_exit_2(capsys) -> None:
    for argv in (["approve"], ["job"], ["label", "--project"], ["init", "x"], ["label", "-p", "nowhere", "p0"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv
    with pytest.raises(SystemExit) as exc:
        main(["init", "--help"])
    assert exc.value.code == 0 and "--model-config" in capsys.readouterr().out


def test_cli_not_a_project(tmp_path: Path, capsys) -> None:
    assert main(["status", "-p", str(tmp_path)]) == 1
    assert "is not an ASSFT project" in capsys.readouterr().err


def test_cli_unusable_case_kept_with_report(tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "data")
    write_nifti(data / "labelsTr" / "p3.nii.gz", np.zeros((8, 8, 5), np.uint8))  # wrong shape
    model = tmp_path / "model.json"
    model.write_text("{}")
    proj = tmp_path / "proj"
    assert main(["init", str(proj), "--dataset", str(data), "--model-config", str(model), "--oracle"]) == 0
    assert main(["status", "-p", str(proj)]) == 0
    out = capsys.readouterr().out
    assert "B                pool              2      1        0" in out
    assert "unusable case p3:" in out and "ERROR: " in out and "p3.nii.gz" in out
    assert "p3" not in rounds.round_pool(open_project(proj)).pool_ids  # never proposed
    assert main(["import", "-p", str(proj), "--dataset", str(data)]) == 0
    assert "0 new, 6 updated, 1 unusable" in capsys.readouterr().out


def test_a_dot_dot_case_id_error_names_the_file(tmp_path: Path, capsys) -> None:
    import json

    data = make_dataset(tmp_path / "data")
    bad = write_nifti(data / "imagesTr" / "...nii.gz", np.zeros((8, 8, 8), dtype=np.float32))
    meta = json.loads((data / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/...nii.gz"})
    (data / "dataset.json").write_text(json.dumps(meta))
    model = tmp_path / "model.json"
    model.write_text('{"backbone": "unet"}')
    assert main(["init", str(tmp_path / "proj"), "--dataset", str(data), "--model-config", str(model)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "rename" in err.lower(), err


def test_output_into_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    """`assft ... | head` (issue 20): the reader goes away; no BrokenPipeError traceback."""
    import subprocess
    import sys

    image = write_nifti(tmp_path / "flat.nii.gz", np.zeros((8, 8, 8), dtype=np.float32))  # a warning to print
    proc = subprocess.Popen([sys.executable, "-m", "assft_core.cli", "validate", str(image)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # closed before the command writes anything
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141  # as a shell reports a command killed by SIGPIPE


def test_status_shows_hd95_with_the_missed_count(oracle_project, capsys, monkeypatch) -> None:
    """A missed structure leaves the mean HD95 (it is inf) and so flatters it: the count goes beside it."""
    import json

    from assft_core.session import round_change, store

    monkeypatch.setattr(round_change, "baseline_metrics", lambda project: None)  # f_0 not evaluated (no real model here)
    metrics = {"overall": {"mean_dice": 0.4, "mean_hd95_mm": 0.0, "missed_total": 1, "per_site": {}},
               "per_site": {}, "mean_dice": 0.4, "mean_hd95_mm": 0.0, "evaluated_on": "test", "labelled": 2}
    with store.transaction(oracle_project.db) as conn:
        conn.execute("UPDATE rounds SET state = 'evaluated', metrics = ? WHERE idx = 0", (json.dumps(metrics),))
    assert main(["status", "-p", str(oracle_project.folder)]) == 0
    assert "HD95 0.0 mm (1 structure missed, not in the mean)" in capsys.readouterr().out


def test_hd95_text() -> None:
    from assft_core.session.evaluation import hd95_text

    assert hd95_text({"mean_hd95_mm": 13.04, "missed_total": 0}) == "HD95 13.0 mm (0 structures missed, not in the mean)"
    assert hd95_text({"mean_hd95_mm": None, "missed_total": 3}) == "HD95 n/a (3 structures missed, not in the mean)"
    assert hd95_text({}) == "HD95 n/a"
