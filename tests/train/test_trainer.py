"""The training loop: learning, exact resumption, ignore labels, BN modes, progress, config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from assft_core.config import BNMode, InferenceConfig, TrainConfig, to_dict
from assft_core.errors import StateError
from assft_core.train.data import TrainData, TrainSample
from assft_core.train.evaluate import EvalCase, evaluate
from assft_core.train.trainer import ProgressEvent, train
from tests.train.factories import cube_sample, identity_case, tiny_unet

PATCH = (16, 16, 16)  # the learning test
SMALL = (8, 8, 8)  # mechanics tests: cheap steps


def _cfg(**kw: object) -> TrainConfig:
    base = dict(steps=6, patch_size=SMALL, batch_size=2, unlabelled_batch_size=1, lr=1e-2, checkpoint_every=4, device="cpu")
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _data(with_pseudo: bool = True) -> TrainData:
    labelled = [cube_sample(f"l{i}", i) for i in range(2)]
    pseudo = cube_sample("u0", 10)
    pseudo.label[0, :, :, :6] = 255  # low-confidence voxels of a pseudo-label
    return TrainData(labelled, [pseudo] if with_pseudo else [])


def _weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_raises_dice_on_a_synthetic_task(tmp_path: Path) -> None:
    net = tiny_unet(0)
    test = [EvalCase(identity_case(cube_sample(f"t{i}", 100 + i)), cube_sample(f"t{i}", 100 + i).label[0]) for i in range(2)]
    icfg = InferenceConfig(roi_size=PATCH, overlap=0.25, sw_batch_size=2, device="cpu")
    before = evaluate(net, test, num_classes=2, cfg=icfg).overall
    data = TrainData([cube_sample(f"l{i}", i) for i in range(4)])
    result = train(_cfg(steps=30, checkpoint_every=30, lr=2e-2, patch_size=PATCH), net, data, run_dir=tmp_path / "run")
    after = evaluate(net, test, num_classes=2, cfg=icfg).overall
    assert before is not None and after is not None and after.mean_dice is not None
    assert after.mean_dice > 0.8
    assert after.mean_dice > (before.mean_dice or 0.0) + 0.3
    assert result.step == 30 and not result.stopped and result.history[-1].loss < result.history[0].loss


def test_resume_after_stop_or_kill_gives_identical_weights(tmp_path: Path) -> None:
    cfg = _cfg()
    full = tiny_unet(0)
    full_result = train(cfg, full, _data(), run_dir=tmp_path / "full")
    reference = _weights(full)

    # Stopped cleanly after step 3 (not a checkpoint step): the stop writes one, nothing is lost.
    net = tiny_unet(0)
    calls = iter(range(100))
    first = train(cfg, net, _data(), run_dir=tmp_path / "stop", should_stop=lambda: next(calls) == 2)
    assert first.stopped and first.step == 3
    resumed = train(cfg, tiny_unet(1), _data(), run_dir=tmp_path / "stop", resume_from=first.checkpoint_path)
    assert resumed.step == 6 and not resumed.stopped

    # Killed (an exception) during step 5: the step-4 checkpoint is the last one on disk.
    killed = tiny_unet(0)

    def crash(event: ProgressEvent) -> None:
        if event.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, killed, _data(), run_dir=tmp_path / "kill", on_progress=crash)
    revived = tiny_unet(2)
    after_kill = train(cfg, revived, _data(), run_dir=tmp_path / "kill", resume_from=tmp_path / "kill")

    resumed_net = tiny_unet(3)
    resumed_net.load_state_dict(torch.load(resumed.checkpoint_path, weights_only=True)["model"])
    assert _same(_weights(resumed_net), reference)
    assert _same(_weights(revived), reference)
    assert [e.step for e in after_kill.history] == [1, 2, 3, 4, 5, 6]
    assert [e.loss for e in after_kill.history][4:] == [e.loss for e in full_result.history][4:]


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    first = train(_cfg(steps=2), tiny_unet(0), _data(False), run_dir=tmp_path / "r")
    with pytest.raises(StateError, match="lr"):
        train(_cfg(steps=2, lr=0.5), tiny_unet(0), _data(False), run_dir=tmp_path / "r", resume_from=first.checkpoint_path)


def test_all_ignored_labels_train_without_error(tmp_path: Path) -> None:
    lab = cube_sample("l0", 0)
    lab.label[:] = 255
    pseudo = cube_sample("u0", 1)
    pseudo.label[:] = 255
    net = tiny_unet(0)
    result = train(_cfg(steps=3), net, TrainData([lab], [pseudo]), run_dir=tmp_path / "r")
    assert result.step == 3 and all(np.isfinite(e.loss) for e in result.history)
    assert all(e.loss_pseudo == 0.0 for e in result.history)
    assert [e.phase for e in result.history] == ["ssft"] * 3


def test_bn_frozen_keeps_batchnorm_and_trains_the_rest(tmp_path: Path) -> None:
    net = tiny_unet(0)
    before = _weights(net)
    train(_cfg(steps=2, bn_mode=BNMode.FROZEN), net, _data(False), run_dir=tmp_path / "r")
    after = _weights(net)
    bn = [n for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert bn
    for name in bn:
        for field in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(before[f"{name}.{field}"], after[f"{name}.{field}"])
    convs = [k for k in before if k.endswith("conv.weight")]
    assert any(not torch.equal(before[k], after[k]) for k in convs)

    trained = tiny_unet(0)
    train(_cfg(steps=2), trained, _data(False), run_dir=tmp_path / "t")
    assert not torch.equal(before[f"{bn[0]}.running_mean"], _weights(trained)[f"{bn[0]}.running_mean"])


def test_progress_events_config_and_ramp(tmp_path: Path) -> None:
    cfg = _cfg(steps=4, lambda_u_max=0.5)
    events: list[ProgressEvent] = []
    result = train(cfg, tiny_unet(0), _data(), run_dir=tmp_path / "r", on_progress=events.append)
    assert [e.step for e in events] == [1, 2, 3, 4] and events == result.history
    json.dumps([e.to_dict() for e in events])
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == to_dict(cfg)
    assert [e.lambda_u for e in events] == pytest.approx([0.5 * np.exp(-5 * (1 - k / 4) ** 2) for k in (1, 2, 3, 4)])
    # Cosine schedule from lr to 0 over 4 steps: lr_k = lr (1 + cos(pi k / 4)) / 2 at step k (0-based).
    assert [e.lr for e in events] == pytest.approx([cfg.lr * (1 + np.cos(np.pi * k / 4)) / 2 for k in range(4)])
    assert events[-1].eta_s == 0.0 and all(e.total == 4 for e in events)
    assert all(e.loss == pytest.approx(e.loss_labelled + e.lambda_u * e.loss_pseudo, rel=1e-5) for e in events)


def test_train_sample_shape_errors() -> None:
    from assft_core.errors import DataError

    with pytest.raises(DataError, match="x1"):
        TrainSample("x1", np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 5), np.uint8))
    with pytest.raises(DataError, match="no labelled case"):
        TrainData([])
