"""Two gloo CPU processes under torchrun: DDP training and the sharded scoring pass.

One launch (`ddp_worker.py`) does everything, since starting the workers costs more than the work.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from assft_core.bench.cost import tiny_model
from assft_core.config import QueryConfig
from assft_core.models.loaded import load_model
from assft_core.query.scoring import score_cases
from assft_core.query.sharded import SHARDS_DIR
from assft_core.query.table import ScoreTable
from assft_core.train.checkpoint import CONFIG_NAME, load_checkpoint
from assft_core.train.ddp_spec import write_train_spec
from assft_core.train.launch import launch_torchrun
from assft_core.train.torchrun_train import LOG_NAME, SPEC_DIR, train_with_torchrun
from assft_core.train.trainer import ProgressEvent, train
from tests.distributed.tasks import (
    SCORING_INFER,
    STEPS,
    assert_tables_equal,
    scoring_cases,
    task_data,
    train_cfg,
    write_model,
)

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
# Float tolerance of DDP against one process: gradients are summed in another order (measured
# 1.5e-8 here). Without the per-rank CE weighting the same run differs by 3e-2.
ATOL = 1e-5
# One thread per worker in every launch: the thread count changes float summation order.
WORKER_ENV = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    model = write_model(root / "model")
    specs = [
        write_train_spec(
            root / f"spec_{n}", model_dir=model, data=task_data(), cfg=train_cfg(1, 1), run_dir=root / f"run_{n}"
        )
        for n in ("full", "stop")
    ]
    (root / "out").mkdir()
    proc = launch_torchrun(
        2, [*map(str, specs), str(root / "out")], target=str(WORKER), env=WORKER_ENV, cwd=REPO,
        capture_output=True, timeout_s=400,
    )
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return root


def _rank(root: Path, r: int) -> dict:
    return torch.load(root / "out" / f"rank{r}.pt", weights_only=True)


def test_two_ranks_end_identical_and_equal_to_one_process_with_the_global_batch(ddp_run: Path) -> None:
    r0, r1 = _rank(ddp_run, 0), _rank(ddp_run, 1)
    assert (r0["world_size"], r0["backend"]) == (2, "gloo")
    assert all(torch.equal(r0["full"][k], r1["full"][k]) for k in r0["full"])
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == STEPS

    # One process, batch 2 + 2 = 2 ranks × (1 + 1), same seed, same initial weights.
    network = load_model(ddp_run / "model", device="cpu").network
    initial = {k: v.clone() for k, v in network.state_dict().items()}
    single = train(train_cfg(2, 2), network, task_data(), run_dir=ddp_run / "single")
    reference = network.state_dict()
    assert max(float((reference[k] - initial[k]).abs().max()) for k in initial) > 1e-3  # it did train
    for key, value in reference.items():
        torch.testing.assert_close(r0["full"][key], value, atol=ATOL, rtol=0)
    single_losses = torch.tensor([e.loss for e in single.history])
    torch.testing.assert_close(torch.tensor(r0["losses"]), single_losses, atol=ATOL, rtol=0)

    # Rank 0 alone wrote the run folder; its checkpoint holds the ranks' weights.
    saved = load_checkpoint(ddp_run / "run_full")
    assert saved["step"] == STEPS and (ddp_run / "run_full" / CONFIG_NAME).is_file()
    assert all(torch.equal(saved["model"][k], r0["full"][k]) for k in r0["full"])


def test_train_with_torchrun_streams_progress_and_loads_the_ranks_weights(ddp_run: Path, tmp_path: Path) -> None:
    loaded = load_model(ddp_run / "model", device="cpu")
    events: list[ProgressEvent] = []
    result = train_with_torchrun(
        train_cfg(1, 1), loaded.network, task_data(), card=loaded.card, nproc=2, run_dir=tmp_path / "run",
        on_progress=events.append, env=WORKER_ENV,
    )
    r0 = _rank(ddp_run, 0)  # the same job, run by the worker
    assert [e.step for e in events] == list(range(1, STEPS + 1)) and [e.loss for e in events] == r0["losses"]
    assert result.step == STEPS and not result.stopped and [e.loss for e in result.history] == r0["losses"]
    assert all(torch.equal(v, r0["full"][k]) for k, v in loaded.network.state_dict().items())
    assert not (tmp_path / "run" / SPEC_DIR).exists() and (tmp_path / "run" / LOG_NAME).is_file()


def test_a_stop_asked_on_rank_0_stops_every_rank_and_resume_matches(ddp_run: Path) -> None:
    for r in (0, 1):
        state = _rank(ddp_run, r)
        assert state["stopped_at"] == (1, True)  # should_stop() was True on rank 0 only
        assert state["resumed_step"] == STEPS
        assert all(torch.equal(state["resumed"][k], state["full"][k]) for k in state["full"])


def test_sharded_scoring_table_equals_the_single_process_table(ddp_run: Path) -> None:
    single = score_cases(
        tiny_model(n_classes=2), scoring_cases(), model_tag="f0", cfg=QueryConfig(),
        infer_cfg=SCORING_INFER,
        out_dir=ddp_run / "single_scores", cache_key="k",
    )
    sharded = ScoreTable.load(ddp_run / "out" / "sharded")
    assert_tables_equal(sharded, single)
    assert not (ddp_run / "out" / "sharded" / SHARDS_DIR).exists()
