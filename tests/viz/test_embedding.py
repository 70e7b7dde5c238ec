"""embed_2d (PCA below 8 cases, cached UMAP from 8 up) and the embedding scatter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from plotly.colors import get_colorscale
import pytest

from assft_core.viz import embedding
from assft_core.viz.embedding import SEQUENTIAL_SCALE, STATUS_COLOURS, embed_2d, embedding_figure, expected_fit_seconds


def _pairwise(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a[:, None, :] - a[None, :, :], axis=-1)


def _planar_points(n: int, e: int, seed: int) -> np.ndarray:
    """n points lying in a random 2D plane of R^e: PCA to 2D must keep every distance."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(e, 2)))
    return rng.normal(size=(n, 2)) @ basis.T + rng.normal(size=e)


@pytest.mark.parametrize("n", [2, 3, 7])
def test_pca_path_keeps_distances_of_planar_points(n: int) -> None:
    z = _planar_points(n, 16, seed=n)
    coords = embed_2d(z)
    assert coords.shape == (n, 2)
    np.testing.assert_allclose(_pairwise(coords), _pairwise(z), atol=1e-4)


def test_single_case_maps_to_origin() -> None:
    np.testing.assert_array_equal(embed_2d(np.ones((1, 5))), np.zeros((1, 2)))


def test_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match="finite"):
        embed_2d(np.array([[0.0, np.nan]] * 3))


def test_umap_from_eight_cases_with_capped_neighbours(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    class FakeUMAP:
        def __init__(self, **kwargs) -> None:
            seen.update(kwargs)

        def fit_transform(self, z: np.ndarray) -> np.ndarray:
            return np.zeros((len(z), 2))

    import umap

    monkeypatch.setattr(umap, "UMAP", FakeUMAP)
    embed_2d(np.random.default_rng(0).normal(size=(8, 4)), random_state=3)
    assert seen["n_neighbors"] == 7 and seen["random_state"] == 3 and seen["metric"] == "cosine"


def test_umap_30_cases_separates_clusters_and_cache_skips_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8)[[0, 5]]  # two orthogonal directions: cosine distance 1 between clusters
    z = np.repeat(centres, 15, axis=0) + 0.05 * rng.normal(size=(30, 8))
    coords = embed_2d(z, cache_dir=tmp_path)
    assert coords.shape == (30, 2)
    d = _pairwise(coords)
    same = np.equal.outer(np.arange(30) // 15, np.arange(30) // 15)
    assert d[same].max() < d[~same].min()  # the two clusters stay apart in the map
    assert len(list(tmp_path.glob("embed2d_*.npy"))) == 1

    def no_fit(*args, **kwargs):
        raise AssertionError("UMAP refitted despite the cache")

    monkeypatch.setattr(embedding, "_fit_umap", no_fit)
    np.testing.assert_array_equal(embed_2d(z, cache_dir=tmp_path), coords)
    with pytest.raises(AssertionError, match="refitted"):  # a changed embedding is a new key
        embed_2d(z + 1e-3, cache_dir=tmp_path)


def test_corrupt_cache_is_recomputed(tmp_path: Path) -> None:
    z = _planar_points(5, 4, seed=1)
    first = embed_2d(z, cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("embed2d_*.npy")
    cache_file.write_bytes(b"not numpy")
    np.testing.assert_allclose(embed_2d(z, cache_dir=tmp_path), first)
    assert np.load(cache_file).shape == (5, 2)


def test_expected_fit_time_from_recorded_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z = np.random.default_rng(0).normal(size=(40, 4))
    monkeypatch.setattr(embedding, "_umap_fitted_in_process", False)
    # Nothing recorded: the defaults, the first fit of the process paying the import and compilation.
    first = embedding.DEFAULT_FIRST_FIT_S + 40 * embedding.DEFAULT_PER_CASE_S
    assert expected_fit_seconds(z, cache_dir=tmp_path) == pytest.approx(first)
    assert expected_fit_seconds(z[:5], cache_dir=tmp_path) == 0.0  # PCA
    # The fit itself (faked) records its wall time as this folder's first fit, then caches the map.
    monkeypatch.setattr(embedding, "_fit_umap", lambda z, random_state: np.zeros((len(z), 2)))
    embed_2d(z, cache_dir=tmp_path)
    recorded = json.loads((tmp_path / embedding.FIT_TIMES_FILE).read_text())
    assert recorded["first"]["n"] == 40 and recorded["first"]["seconds"] >= 0 and "later" not in recorded
    assert embedding._umap_fitted_in_process
    assert expected_fit_seconds(z, cache_dir=tmp_path) == 0.0  # cached
    # Recorded times: 0.01 s per case from the later fit; the first fit's overhead = 12 − 0.01 × 200.
    (tmp_path / embedding.FIT_TIMES_FILE).write_text(
        json.dumps({"first": {"n": 200, "seconds": 12.0}, "later": {"n": 100, "seconds": 1.0}}))
    assert expected_fit_seconds(z + 1.0, cache_dir=tmp_path) == pytest.approx(0.4)  # a new z, process warm
    monkeypatch.setattr(embedding, "_umap_fitted_in_process", False)
    assert expected_fit_seconds(z + 1.0, cache_dir=tmp_path) == pytest.approx(10.0 + 0.4)
    (tmp_path / embedding.FIT_TIMES_FILE).write_text("{broken")  # an unreadable record: the defaults
    assert expected_fit_seconds(z + 1.0, cache_dir=tmp_path) == pytest.approx(first)


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case_id": ["a", "b", "c", "d", "e"],
            "status": ["labelled", "pool", "proposed", "pool", "test"],
            "site": ["S1", "S2", "S1", "S2", "S1"],
            "KG": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )


def test_status_colouring_and_customdata_ids() -> None:
    coords = np.arange(10, dtype=float).reshape(5, 2)
    fig = embedding_figure(coords, _table(), "status")
    by_name = {t.name: t for t in fig.data}
    assert list(by_name) == ["labelled", "proposed", "pool", "test"]
    pool = by_name["pool"]
    assert [row[0] for row in pool.customdata] == ["b", "d"]
    np.testing.assert_array_equal(pool.x, coords[[1, 3], 0])
    assert pool.marker.color == STATUS_COLOURS["pool"]
    assert "KG" in pool.hovertemplate


def test_score_colouring_uses_values_and_colour_bar() -> None:
    fig = embedding_figure(np.zeros((5, 2)), _table(), "KG")
    values = {row[0]: c for t in fig.data for row, c in zip(t.customdata, t.marker.color)}
    assert values == {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4, "e": 0.5}
    assert fig.layout.coloraxis.colorbar.title.text == "KG"
    titled = embedding_figure(np.zeros((5, 2)), _table(), "KG", colour_title="KG (knowledge gap)")
    assert titled.layout.coloraxis.colorbar.title.text == "KG (knowledge gap)"
    assert "colour: KG (knowledge gap)" in titled.layout.title.text
    # The one sequential scale of every score map (the DIV coverage map's too).
    assert [c for _, c in titled.layout.coloraxis.colorscale] == [c for _, c in get_colorscale(SEQUENTIAL_SCALE)]


@pytest.mark.parametrize("colour", ["status", "site", "KG"])
def test_test_cases_are_faint_and_drawn_under_the_pool(colour: str) -> None:
    fig = embedding_figure(np.zeros((5, 2)), _table(), colour)
    test = [t for t in fig.data if [row[0] for row in t.customdata] == ["e"]]
    assert len(test) == 1  # the test case has a trace of its own, whatever the colour
    (test,) = test
    others = [t for t in fig.data if t is not test]
    assert test.marker.opacity == embedding.TEST_OPACITY
    assert all(t.marker.opacity is None for t in others)
    assert test.zorder < min(t.zorder for t in others)
    top = next(t for t in others if "a" in [row[0] for row in t.customdata])
    assert top.zorder == max(t.zorder for t in fig.data)  # the labelled case lies on top
    if colour == "site":  # one legend entry per site: the test part toggles with its site
        assert (test.name, test.legendgroup, test.showlegend) == ("S1 (test)", "S1", False)


def test_site_colouring_and_errors() -> None:
    fig = embedding_figure(np.zeros((5, 2)), _table(), "site")
    assert sorted(t.name for t in fig.data if t.showlegend) == ["S1", "S2"]
    with pytest.raises(ValueError, match="no column 'ASD'"):
        embedding_figure(np.zeros((5, 2)), _table(), "ASD")
    with pytest.raises(ValueError, match=r"\(4, 2\)"):
        embedding_figure(np.zeros((4, 2)), _table(), "site")
