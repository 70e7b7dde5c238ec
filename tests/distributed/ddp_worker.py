"""One torchrun worker of tests/distributed/test_ddp.py (run as a script by `launch_torchrun`).

    ddp_worker.py FULL_SPEC STOP_SPEC OUT_DIR

Trains the full spec, then the stop spec stopped after step 1 and resumed, then scores the
test cases sharded; writes this rank's weights and losses to OUT_DIR/rank<r>.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from assft_core.bench.cost import tiny_model
from assft_core.config import QueryConfig
from assft_core.query.sharded import score_cases_sharded
from assft_core.train import distributed as ddp
from assft_core.train.ddp_entry import run_train_spec
from tests.distributed.tasks import SCORING_INFER, scoring_cases


def main(full_spec: str, stop_spec: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    ctx = ddp.init_distributed("cpu")
    out = Path(out_dir)
    try:
        full, net = run_train_spec(full_spec)
        full_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        # Rank 0 asks to stop after step 1; rank 1 has no callback and must follow.
        first, _ = run_train_spec(stop_spec, should_stop=(lambda: True) if ctx.is_main else None)
        resumed, net = run_train_spec(stop_spec, resume_from=first.checkpoint_path)
        score_cases_sharded(
            tiny_model(n_classes=2), scoring_cases(), model_tag="f0", cfg=QueryConfig(),
            infer_cfg=SCORING_INFER,
            out_dir=out / "sharded", cache_key="k",
        )
        torch.save(
            {
                "world_size": ctx.world_size,
                "backend": ctx.backend,
                "full": full_state,
                "losses": [e.loss for e in full.history],
                "stopped_at": (first.step, first.stopped),
                "resumed": net.state_dict(),
                "resumed_step": resumed.step,
            },
            out / f"rank{ctx.rank}.pt",
        )
    finally:
        ddp.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
