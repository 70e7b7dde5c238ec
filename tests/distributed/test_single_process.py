"""The distributed code without a launcher: no-op helpers, torchrun commands, specs and the entry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from assft_core.bench.cost import tiny_model
from assft_core.config import PreprocessConfig, QueryConfig
from assft_core.data.preprocess import preprocess_case
from assft_core.data.records import CaseRecord
from assft_core.models.loaded import load_model, save_model
from assft_core.query.scoring import score_cases
from assft_core.query.sharded import score_cases_sharded
from assft_core.train import distributed as ddp
from assft_core.train.checkpoint import load_checkpoint
from assft_core.train.ddp_entry import main, run_score_spec
from assft_core.train.ddp_spec import (
    ScoreSpec,
    SpecError,
    load_train_data,
    read_train_spec,
    write_score_spec,
    write_train_spec,
)
from assft_core.train.launch import ENTRY_MODULE, torchrun_command
from assft_core.train.trainer import train
from tests.distributed.tasks import (
    SCORING_INFER,
    STEPS,
    assert_tables_equal,
    scoring_cases,
    task_data,
    train_cfg,
    write_model,
)
from tests.train.factories import write_box_scan

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)


def test_without_a_launcher_the_helpers_describe_one_process() -> None:
    ctx = ddp.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.backend, ctx.is_main) == (0, 1, 0, "none", True)
    assert ctx.device == torch.device("cpu") and not torch.distributed.is_initialized()
    assert ddp.broadcast_object({"a": 1}) == {"a": 1} and ddp.all_gather_objects(3) == [3]
    x = torch.tensor([1.5, -2.0])
    assert torch.equal(ddp.all_reduce_mean(x), x) and ddp.all_reduce_mean(x) is not x
    ddp.barrier()


def test_a_world_of_one_is_not_a_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert not ddp.launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert ddp.launched_by_torchrun()


def test_shards_are_round_robin_and_partition_the_cases() -> None:
    shards = [ddp.shard_indices(7, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert ddp.shard_indices(1, 1, 2) == []
    with pytest.raises(ValueError, match="rank 3"):
        ddp.shard_indices(4, 3, 3)


def test_torchrun_commands_for_one_node_and_for_two() -> None:
    one = torchrun_command(4, ["train", "s.json"])
    assert one == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "4", "--standalone",
                   "-m", ENTRY_MODULE, "train", "s.json"]
    two = torchrun_command(8, ["score", "s.json"], nnodes=2, rdzv_endpoint="node1:29400", rdzv_id="job7")
    rdzv = ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "node1:29400", "--rdzv-id", "job7"]
    assert two[5:13] == rdzv
    assert torchrun_command(2, [], target="w.py")[-1] == "w.py"
    with pytest.raises(ddp.DistributedError, match="rendezvous endpoint"):
        torchrun_command(2, [], nnodes=2)
    with pytest.raises(ddp.DistributedError, match="at least 1"):
        torchrun_command(0, [])


def test_entry_without_a_launcher_is_the_plain_trainer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_model(tmp_path / "model")
    spec = write_train_spec(
        tmp_path / "spec", model_dir=model, data=task_data(), cfg=train_cfg(2, 2), run_dir=tmp_path / "run"
    )
    loaded = load_train_data(read_train_spec(spec))
    for got, want in zip([*loaded.labelled, *loaded.pseudo], [*task_data().labelled, *task_data().pseudo]):
        assert got.case_id == want.case_id
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.label, want.label)

    assert main(["train", str(spec)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in lines] == ["progress"] * STEPS + ["done"]
    assert lines[-1]["world_size"] == 1 and lines[-1]["step"] == STEPS

    network = load_model(model, device="cpu").network
    direct = train(train_cfg(2, 2), network, task_data(), run_dir=tmp_path / "direct")
    saved = load_checkpoint(tmp_path / "run")["model"]
    assert all(torch.equal(saved[k], v) for k, v in network.state_dict().items())
    assert [e["loss"] for e in lines[:-1]] == [e.loss for e in direct.history]


def test_a_stop_file_stops_cleanly_and_resume_finishes_the_run(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model")
    spec = write_train_spec(
        tmp_path / "spec", model_dir=model, data=task_data(), cfg=train_cfg(2, 2), run_dir=tmp_path / "run"
    )
    stop = tmp_path / "STOP"
    stop.touch()
    assert main(["train", str(spec), "--stop-file", str(stop)]) == 0
    assert load_checkpoint(tmp_path / "run")["step"] == 1
    assert main(["train", str(spec), "--resume"]) == 0
    network = load_model(model, device="cpu").network
    train(train_cfg(2, 2), network, task_data(), run_dir=tmp_path / "direct")
    saved = load_checkpoint(tmp_path / "run")
    assert saved["step"] == STEPS
    assert all(torch.equal(saved["model"][k], v) for k, v in network.state_dict().items())


def test_a_wrong_or_missing_spec_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    score_spec = write_score_spec(tmp_path / "score.json", ScoreSpec(tmp_path, tmp_path, "f0", None, []))
    with pytest.raises(SpecError, match="score.json.*not a 'assft-ddp-train/1' spec"):
        read_train_spec(score_spec)
    assert main(["train", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert "missing.json" in err and "Traceback" not in err


def test_sharded_scoring_in_one_process_is_score_cases(tmp_path: Path) -> None:
    model = tiny_model(n_classes=2)
    kwargs = dict(model_tag="f0", cfg=QueryConfig(), infer_cfg=SCORING_INFER, cache_key="k")
    ids = [c.case_id for c in scoring_cases()]
    progress: list[tuple[int, int | None, str]] = []
    sharded = score_cases_sharded(
        model, ids, load_case={c.case_id: c for c in scoring_cases()}.__getitem__, out_dir=tmp_path / "a",
        on_progress=lambda *p: progress.append(p), **kwargs,
    )
    assert progress == [(i + 1, len(ids), cid) for i, cid in enumerate(ids)]  # lazy, sized: a total
    assert_tables_equal(sharded, score_cases(model, scoring_cases(), out_dir=tmp_path / "b", **kwargs))


def test_score_spec_preprocesses_and_scores_like_the_library(tmp_path: Path) -> None:
    records = []
    for name in ("s1", "s2"):
        image, _ = write_box_scan(tmp_path / "data", name, np.diag([1.5, 1.5, 2.0, 1.0]))
        records.append(CaseRecord(name, (image,), None, site="A"))
    pre = PreprocessConfig(spacing_mm=(3.0, 3.0, 3.0))
    model = tiny_model(n_classes=2)
    save_model(model.network, model.card, tmp_path / "model")
    spec = ScoreSpec(
        tmp_path / "model", tmp_path / "scores", "f0", "k", records, preprocess=pre, inference=SCORING_INFER
    )
    table = run_score_spec(write_score_spec(tmp_path / "ddp_score.json", spec))
    library = score_cases(
        load_model(tmp_path / "model", device="cpu"), [preprocess_case(r, pre) for r in records], model_tag="f0",
        cfg=QueryConfig(), infer_cfg=SCORING_INFER, out_dir=tmp_path / "library", cache_key="k",
    )
    assert_tables_equal(table, library)
