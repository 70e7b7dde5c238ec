"""Benchmark result schema: the fixture validates, broken copies are caught, summary is mean ± sd."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from assft_core.bench.schema import (
    load_results,
    result_to_dict,
    summarise,
    summarise_references,
    validate_result,
    write_result,
)
from assft_core.errors import DataError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bench_result.json"


@pytest.fixture()
def raw() -> dict:
    return json.loads(FIXTURE.read_text())


def test_fixture_is_valid_and_marked(raw: dict) -> None:
    assert validate_result(raw) == []
    assert "FIXTURE" in raw["note"]
    result = load_results(FIXTURE)
    assert len(result.records) == len(raw["records"]) and len(result.references) == len(raw["references"])
    assert {r.pool for r in result.records} == {"balanced", "unbalanced"}


def test_broken_copy_lists_every_problem_with_its_path(raw: dict) -> None:
    broken = copy.deepcopy(raw)
    broken["version"] = 2
    broken["records"][0]["mean_dice"] = 1.3
    del broken["records"][1]["seed"]
    broken["records"][2]["pool"] = "medium"
    broken["records"][3]["per_site_dice"]["A"] = "high"
    broken["records"][4]["hd95_mm"] = -1.0
    broken["records"].append(copy.deepcopy(broken["records"][5]))
    broken["references"][0]["kind"] = "roof"
    broken["records"][6]["extra"] = 1
    errors = validate_result(broken)
    expected_prefixes = [
        "version:",
        "records[0].mean_dice:",
        "records[1]: missing key(s) ['seed']",
        "records[2].pool:",
        "records[3].per_site_dice.A:",
        "records[4].hd95_mm:",
        f"records[{len(broken['records']) - 1}]: duplicate",
        "references[0].kind:",
        "records[6]: unknown key(s) ['extra']",
    ]
    for prefix in expected_prefixes:
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert len(errors) == len(expected_prefixes)


def test_load_names_the_file_on_bad_input(raw: dict, tmp_path: Path) -> None:
    raw["records"][0]["mean_dice"] = 1.3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"bad\.json.*\n.*records\[0\]\.mean_dice"):
        load_results(bad)
    not_json = tmp_path / "truncated.json"
    not_json.write_text('{"version": 1,\n "records": [')
    with pytest.raises(DataError, match=r"truncated\.json: not valid JSON \(line 2"):
        load_results(not_json)
    with pytest.raises(DataError, match="missing.json"):
        load_results(tmp_path / "missing.json")
    with pytest.raises(DataError, match="top level"):
        bad.write_text("[1, 2]")
        load_results(bad)


def test_summarise_matches_hand_computation(raw: dict) -> None:
    summary = summarise(load_results(FIXTURE))
    # 2 pools x 3 strategies x 4 budgets in the fixture.
    assert len(summary) == 2 * 3 * 4
    for pool, strategy, count in (("unbalanced", "assft", 4), ("balanced", "random", 0)):
        recs = [
            r for r in raw["records"] if (r["pool"], r["strategy"], r["labelled_count"]) == (pool, strategy, count)
        ]
        row = summary[(summary.pool == pool) & (summary.strategy == strategy) & (summary.labelled_count == count)]
        assert row.n_seeds.item() == 3
        assert row.dice_mean.item() == pytest.approx(statistics.mean(r["mean_dice"] for r in recs))
        assert row.dice_sd.item() == pytest.approx(statistics.stdev(r["mean_dice"] for r in recs))
        found = [r["hd95_mm"] for r in recs if r["hd95_mm"] is not None]
        assert row.hd95_mean_mm.item() == pytest.approx(statistics.mean(found))
        assert row.hd95_missed.item() == sum(r["hd95_missed_count"] for r in recs)
        if strategy == "random":  # this group holds a null HD95 (every case missed): left out, not 0
            assert len(found) == len(recs) - 1
    refs = summarise_references(load_results(FIXTURE))
    ceiling = [r["mean_dice"] for r in raw["references"] if (r["pool"], r["kind"]) == ("balanced", "ceiling")]
    row = refs[(refs.pool == "balanced") & (refs.kind == "ceiling")]
    assert row.dice_mean.item() == pytest.approx(statistics.mean(ceiling))


def test_write_roundtrip_never_overwrites(tmp_path: Path) -> None:
    result = load_results(FIXTURE)
    out = write_result(result, tmp_path / "run.json")
    assert load_results(out) == result
    assert result_to_dict(load_results(out)) == json.loads(FIXTURE.read_text())
    with pytest.raises(DataError, match="never overwritten"):
        write_result(result, out)


def test_annotation_effort_is_optional_checked_and_kept(raw: dict, tmp_path: Path) -> None:
    with_effort = copy.deepcopy(raw)
    with_effort["records"][0]["annotation_effort"] = {"changed_voxels": 120, "changed_slices": 7, "preannotation_dice": 0.8}
    assert validate_result(with_effort) == []
    path = tmp_path / "effort.json"
    path.write_text(json.dumps(with_effort))
    result = load_results(path)
    assert result.records[0].annotation_effort == with_effort["records"][0]["annotation_effort"]
    assert result.records[1].annotation_effort is None
    assert result_to_dict(result) == with_effort  # runs without effort keep no key for it

    with_effort["records"][0]["annotation_effort"] = {"changed_voxels": -1, "changed_slices": 7, "preannotation_dice": 1.5}
    errors = validate_result(with_effort)
    assert any("records[0].annotation_effort.changed_voxels" in e for e in errors)
    assert any("records[0].annotation_effort.preannotation_dice" in e for e in errors)
