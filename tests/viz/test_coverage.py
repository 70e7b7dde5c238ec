"""Coverage by DIV: distances to the nearest labelled case, the pick-by-pick curve, site shares."""

from __future__ import annotations

import numpy as np
import pytest
from plotly.colors import get_colorscale

from assft_core.viz.coverage import (
    DIV_COLOUR_TITLE,
    coverage_curve,
    coverage_curve_figure,
    coverage_figure,
    distance_to_labelled,
    site_coverage_figure,
)
from assft_core.viz.embedding import SEQUENTIAL_SCALE, TEST_OPACITY

# Unit vectors at known angles: 1 − cos(angle difference) is computed by hand below.
ANGLES_DEG = np.array([0.0, 60.0, 90.0, 180.0, 270.0])
Z = np.stack([np.cos(np.radians(ANGLES_DEG)), np.sin(np.radians(ANGLES_DEG))], axis=1)


def test_distance_to_labelled_by_hand() -> None:
    np.testing.assert_allclose(distance_to_labelled(Z, [0]), [0.0, 0.5, 1.0, 2.0, 1.0], atol=1e-12)
    # Nearest of 0° and 180°: 90° and 270° are 1 away from both; 60° is 0.5 from 0°.
    np.testing.assert_allclose(distance_to_labelled(3.0 * Z, [0, 3]), [0.0, 0.5, 1.0, 0.0, 1.0], atol=1e-12)
    assert np.isnan(distance_to_labelled(Z, [])).all()
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        distance_to_labelled(Z, [5])
    with pytest.raises(ValueError, match="all-zero row"):
        distance_to_labelled(np.zeros((2, 3)), [0])


def test_coverage_curve_by_hand_and_non_increasing() -> None:
    pool = [1, 2, 3, 4]
    curve = coverage_curve(Z, pool, [3, 2], labelled_idx=[0])
    # Before picks (S = {0°}): pool distances 0.5, 1, 2, 1.
    # After 180°: 0.5, 1, 0, 1.  After 90°: 1 − cos 30° (60° is nearer 90° now), 0, 0, 1
    # (270° is 2 from 90°, 1 from 0° and 180°).
    np.testing.assert_array_equal(curve["n_picks"], [0, 1, 2])
    after_90 = (1 - np.cos(np.radians(30)) + 1.0) / 4
    np.testing.assert_allclose(curve["mean"], [4.5 / 4, 2.5 / 4, after_90], atol=1e-12)
    np.testing.assert_allclose(curve["max"], [2.0, 1.0, 1.0], atol=1e-12)

    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 6))
    picks = rng.permutation(np.arange(1, 40))[:12]
    long = coverage_curve(z, np.arange(40), picks, labelled_idx=[0])
    assert np.all(np.diff(long["mean"]) <= 1e-12) and np.all(np.diff(long["max"]) <= 1e-12)
    assert np.diff(long["mean"]).min() < 0  # the picks do cover something
    # The incremental update agrees with the direct computation over S = labelled ∪ picks.
    for p in (0, 5, 12):
        direct = distance_to_labelled(z, np.concatenate([[0], picks[:p]]))
        assert long["mean"][p] == pytest.approx(direct.mean())
        assert long["max"][p] == pytest.approx(direct.max())


def test_coverage_curve_without_labelled_starts_undefined() -> None:
    curve = coverage_curve(Z, [1, 2, 3, 4], [1])
    assert np.isnan(curve["mean"][0]) and np.isnan(curve["max"][0])
    np.testing.assert_allclose(curve["mean"][1], (0.0 + (1 - np.cos(np.radians(30))) + 1.5 + (1 - np.cos(np.radians(210)))) / 4)


def test_coverage_figures() -> None:
    d = distance_to_labelled(Z, [0])
    ids = [f"c{i}" for i in range(5)]
    fig = coverage_figure(np.asarray(Z), d, ids, labelled_idx=[0], proposed_idx=[3])
    assert [row[0] for row in fig.data[0].customdata] == ids
    np.testing.assert_allclose(fig.data[0].marker.color, d)
    assert [t.name for t in fig.data[1:]] == ["labelled", "proposed"]
    assert fig.data[2].customdata[0][0] == "c3"
    assert fig.layout.coloraxis.colorbar.title.text == DIV_COLOUR_TITLE  # says exactly what the colour is
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (0.0, 2.0)
    assert [c for _, c in fig.layout.coloraxis.colorscale] == [c for _, c in get_colorscale(SEQUENTIAL_SCALE)]
    assert fig.layout.title.text.startswith("DIV")
    empty = coverage_figure(np.asarray(Z), distance_to_labelled(Z, []), ids)
    assert "no labelled case yet" in empty.layout.title.text
    assert empty.data[0].marker.color == "#bdbdbd" and empty.layout.coloraxis.colorbar.title.text is None
    with pytest.raises(ValueError, match="all finite, or all NaN"):
        coverage_figure(np.asarray(Z), np.array([0.0, np.nan, 1.0, 1.0, 1.0]), ids)
    curve = coverage_curve(Z, [1, 2, 3, 4], [3, 2], labelled_idx=[0])
    curve_fig = coverage_curve_figure(curve, pick_ids=["c3", "c2"])
    np.testing.assert_allclose(curve_fig.data[0].y, curve["mean"])
    with pytest.raises(ValueError, match="1 pick ids for 2 picks"):
        coverage_curve_figure(curve, pick_ids=["c3"])


def test_test_cases_are_faint_under_the_pool_on_the_coverage_map() -> None:
    d = distance_to_labelled(Z, [0])
    fig = coverage_figure(np.asarray(Z), d, [f"c{i}" for i in range(5)], labelled_idx=[0], test_idx=[2, 4])
    cases, test, labelled = fig.data
    assert [row[0] for row in cases.customdata] == ["c0", "c1", "c3"]
    assert [row[0] for row in test.customdata] == ["c2", "c4"]
    np.testing.assert_allclose(test.marker.color, d[[2, 4]])  # same scale, same colour axis
    assert test.marker.coloraxis == cases.marker.coloraxis == "coloraxis"
    assert test.marker.opacity == TEST_OPACITY and cases.marker.opacity is None
    assert test.zorder < cases.zorder < labelled.zorder


def test_site_coverage_shares_by_hand() -> None:
    fig = site_coverage_figure(["A"] * 6 + ["B"] * 3 + ["C"], ["C", "B", "B", "A"])
    pool, picks = fig.data
    assert list(pool.x) == ["A", "B", "C"]
    np.testing.assert_allclose(pool.y, [60.0, 30.0, 10.0])
    np.testing.assert_allclose(picks.y, [25.0, 50.0, 25.0])
    np.testing.assert_array_equal(picks.customdata, [1, 2, 1])
    fig = site_coverage_figure(["A", "B"], ["A"])
    np.testing.assert_allclose(fig.data[1].y, [100.0, 0.0])  # unpicked site shown at 0
