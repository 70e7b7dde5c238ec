"""The scoring pass over cases: per-case values, stored maps, cache, save/load, a real tiny model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from assft_core.bench.cost import synthetic_cases, tiny_model
from assft_core.config import InferenceConfig, QueryConfig
from assft_core.data.records import PreprocessedCase
from assft_core.errors import ModelError
from assft_core.models.outputs import ForwardOutputs, NormMoments
from assft_core.query import PoolState, ScoreTable, get_strategy, score_cases

from digital_ball import ball_kernel

CFG = QueryConfig()
INFER = InferenceConfig(roi_size=(16, 16, 16), device="cpu")


@dataclass
class StandIn:
    """Returns fixed outputs: layer 'enc' with μ=(1, 0), σ²=(4, 1); source μ=0, σ²=1."""

    has_head: bool = True
    has_embedding: bool = True
    source_stats: dict | None = field(
        default_factory=lambda: {"enc": (torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64))}
    )
    source_stats_origin: str = "file"
    calls: int = 0

    def scoring_pass(self, image: torch.Tensor, cfg: InferenceConfig, embedding_stages: str = "deepest") -> ForwardOutputs:
        self.calls += 1
        d, h, w = image.shape[1:]
        p0 = torch.full((d, h, w), 0.99)
        c = (d // 2, h // 2, w // 2)
        region = p0[c[0] - 2 : c[0] + 3, c[1] - 2 : c[1] + 3, c[2] - 2 : c[2] + 3]
        region[ball_kernel(2) > 0] = 0.55
        p0[c] = 0.4
        # values {-1, 3} → μ=1, σ²=4 ; {-1, 1} → μ=0, σ²=1
        x = torch.tensor([[-1.0, 3.0], [-1.0, 1.0]], dtype=torch.float64)
        return ForwardOutputs(
            probs=torch.stack([p0, 1 - p0]) if self.has_head else None,
            embedding=torch.tensor([0.6, 0.8]) if self.has_embedding else None,
            norm_moments={"enc": NormMoments(sum=x.sum(1), sumsq=(x * x).sum(1), n=2)},
        )


def make_case(cid: str, content: str = "h", shape=(12, 12, 12)) -> PreprocessedCase:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    return PreprocessedCase(cid, np.zeros((1, *shape), np.float32), None, aff, (2.0, 2.0, 2.0), shape, aff, content, "siteA")


def h2(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2)


def test_scores_maps_and_reload(tmp_path):
    model = StandIn()
    progress = []
    table = score_cases(
        model, (make_case(c) for c in ("a", "b")), model_tag="f0", cfg=CFG, infer_cfg=INFER,
        out_dir=tmp_path, cache_key="ckpt1", on_progress=lambda i, n, c: progress.append((i, n, c)),
    )
    assert progress == [(1, None, "a"), (2, None, "b")]
    # KL channel 0: ½ log(1/4) + (4 + 1)/2 − ½ ; channel 1: 0 → KL_s = mean.
    assert table.kl[0, 0] == pytest.approx((0.5 * math.log(0.25) + 2.0) / 2, rel=1e-9)
    row = table.rows[0]
    assert row.asd == pytest.approx((h2(0.6) + 32 * h2(0.55)) / 33, rel=1e-5)
    assert row.site == "siteA" and row.fg_fraction == pytest.approx(1 / 12**3)
    np.testing.assert_allclose(table.embeddings[1], [0.6, 0.8], rtol=1e-6)
    arrays = table.case_arrays("a")
    assert arrays.argmax.dtype == np.uint8 and arrays.argmax.sum() == 1 and arrays.argmax[6, 6, 6] == 1
    assert arrays.entropy.dtype == np.float16 and arrays.entropy.shape == (12, 12, 12)
    np.testing.assert_array_equal(arrays.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    loaded = ScoreTable.load(tmp_path)
    assert loaded.case_ids == ["a", "b"] and loaded.layers == ["enc"]
    np.testing.assert_allclose(loaded.kl, table.kl)
    assert loaded.column("asd") == pytest.approx(table.column("asd"))
    assert loaded.availability == table.availability
    np.testing.assert_array_equal(loaded.case_arrays("b").argmax, arrays.argmax)
    other = tmp_path / "copy"
    table.save(other)
    assert ScoreTable.load(other).case_arrays("a").entropy.shape == (12, 12, 12)
    frame = loaded.to_frame(pool_ids=["a", "b"])
    assert list(frame["kg"]) == pytest.approx([1.0, 1.0])


def test_cache_skips_scored_cases_and_recomputes_changed_ones(tmp_path):
    model = StandIn()
    kw = dict(model_tag="f0", cfg=CFG, infer_cfg=INFER, out_dir=tmp_path)
    score_cases(model, [make_case("a"), make_case("b")], cache_key="ckpt1", **kw)
    assert model.calls == 2
    again = score_cases(model, [make_case("a"), make_case("b")], cache_key="ckpt1", **kw)
    assert model.calls == 2 and again.case_ids == ["a", "b"]
    assert again.rows[0].asd == pytest.approx(ScoreTable.load(tmp_path).rows[0].asd)
    score_cases(model, [make_case("a"), make_case("b", content="changed")], cache_key="ckpt1", **kw)
    assert model.calls == 3  # only the changed case
    score_cases(model, [make_case("a")], cache_key="ckpt2", **kw)
    assert model.calls == 4  # another checkpoint
    score_cases(model, [make_case("a")], cache_key=None, **kw)
    assert model.calls == 5  # no cache key: always recomputed


def test_missing_terms_are_recorded(tmp_path):
    model = StandIn(has_head=False, has_embedding=False, source_stats=None, source_stats_origin="none")
    table = score_cases(model, [make_case("a")], model_tag="f0", cfg=CFG, infer_cfg=INFER, out_dir=tmp_path, cache_key=None)
    assert table.layers == [] and math.isnan(table.rows[0].asd) and table.embeddings is None
    assert len(table.unavailable_terms()) == 3
    assert table.case_arrays("a").argmax is None
    assert list(table.knowledge_gap(["a"])) == [1.0]


def test_mismatched_source_layers_raise(tmp_path):
    model = StandIn(source_stats={"other": (torch.zeros(2), torch.ones(2))})
    with pytest.raises(ModelError, match="other"):
        score_cases(model, [make_case("a")], model_tag="f0", cfg=CFG, infer_cfg=INFER, out_dir=tmp_path, cache_key=None)


def test_real_tiny_model_end_to_end(tmp_path):
    torch.set_num_threads(1)
    model = tiny_model(n_classes=3)
    cases = synthetic_cases(3, (16, 16, 16), seed=1)  # a generator: streamed
    table = score_cases(model, cases, model_tag="f0", cfg=CFG, infer_cfg=INFER, out_dir=tmp_path, cache_key="rand0")
    assert len(table.layers) == len(model.encoder_norm_layers()) > 0
    assert np.isfinite(table.kl).all() and (table.kl >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(table.embeddings, axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(table.column("asd")).all() and table.class_entropy.shape == (3, 2)
    pool = PoolState(pool_ids=tuple(table.case_ids[:2]), labelled_ids=(table.case_ids[0],))
    picks = get_strategy("assft").select(table, pool, 2, np.random.default_rng(0), CFG)
    assert [p.case_id for p in picks] == [table.case_ids[1]] and picks[0].nearest_labelled_id == table.case_ids[0]
