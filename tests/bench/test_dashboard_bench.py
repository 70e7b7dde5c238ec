"""`assft bench dashboard`: the synthetic scored project and the report of every page (N = 3, 16³)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from assft_core.bench.dashboard import dashboard_pages, slice_indices
from assft_core.bench.dashboard_project import case_maps, scored_project
from assft_core.cli import main
from assft_core.session import rounds
from assft_core.session.rounds import RoundState
from assft_core.session.views import latest_scores, load_case_view


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("dashboard") / "dashboard.json"
    work = out.parent / "work"
    argv = ["bench", "dashboard", "--cases", "3", "--test-cases", "1", "--shape", "16", "16", "16",
            "--repeats", "1", "--moves", "2", "--work", str(work), "--out", str(out)]
    assert main(argv) == 0
    assert main(argv) == 1  # never over an existing file
    return {"json": json.loads(out.read_text()), "md": out.with_suffix(".md").read_text(), "work": work}


def test_report_times_every_page_and_the_slice_moves(report) -> None:
    data = report["json"]
    assert set(data["pages"]) == {p.stem for p in dashboard_pages()}
    for name, page in data["pages"].items():
        assert page["exceptions"] == [], name
        assert len(page["times_s"]) == 1 and page["first_s"] > 0 and page["max_s"] >= page["median_s"] > 0
        assert page["wall"]["median_s"] >= page["median_s"]  # the wall clock holds the script run
    move = data["slice_move"]
    assert len(move["times_s"]) == len(move["cpu"]["times_s"]) == len(move["wall"]["times_s"]) == 2 and len(set(move["indices"])) == 2
    assert data["apptest_floor"]["median_s"] > 0
    assert data["project"] == {"pool_cases": 3, "built_s": data["project"]["built_s"], "synthetic": True}
    assert "load average" in data["note"] and data["command"] and data["machine"]["cpu_count"] >= 1
    assert all(f"| {name} |" in report["md"] for name in data["pages"])


def test_synthetic_project_is_scored_with_maps_on_the_viewer_grid(report) -> None:
    from assft_core.session.project import open_project

    project = open_project(report["work"] / "project")
    assert rounds.current_round(project).state is RoundState.PROPOSED
    scored = latest_scores(project)
    assert len(scored.table) == 4  # 3 pool + 1 test
    view = load_case_view(project, scored, "pool_0001")  # raises when the maps are off the grid
    assert view.prediction.shape == view.image.shape[1:] == (16, 16, 16)
    assert view.prediction.any() and view.roi is not None


def test_case_maps_segment_the_bright_part() -> None:
    image = np.zeros((8, 8, 8), dtype=np.float32)
    image[2:5, 2:5, 2:5] = 1.0
    argmax, entropy = case_maps(image)
    assert argmax.sum() == 27 and argmax[3, 3, 3] == 1 and argmax[0, 0, 0] == 0
    assert entropy.dtype == np.float16 and float(entropy.max()) < 0.01  # far from the threshold: sure


def test_slice_indices_step_one_and_turn_at_the_end() -> None:
    assert slice_indices(3, 4, 3) == [4, 3, 2]
    assert slice_indices(0, 0, 2) == [0, 0]  # a one-slice volume cannot move
    assert slice_indices(1, 5, 2) == [2, 3]


def test_scored_project_refuses_a_used_folder(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("a user's file")
    with pytest.raises(OSError):
        scored_project(tmp_path, 2, n_test=1, shape=(16, 16, 16))
    assert (tmp_path / "data" / "keep.txt").read_text() == "a user's file"
