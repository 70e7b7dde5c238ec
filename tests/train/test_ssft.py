"""One SSFT round on tiny cube volumes: schedule, pseudo-labels from the same pass, the ramp,
empty R, all-ignored pseudo-labels, mode `none`, resumption across phases (METHOD.md §4)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from assft_core.config import InferenceConfig, QueryConfig, SSFTConfig, SSFTMode, TrainConfig
from assft_core.errors import StateError
from assft_core.models.card import ModelCard
from assft_core.models.inference import predict_probs
from assft_core.models.registry import get_backbone
from assft_core.train import ssft as ssft_module
from assft_core.train.checkpoint import load_checkpoint
from assft_core.train.pseudo import load_pseudo_label
from assft_core.train.reliability import ReliabilityReport
from assft_core.train.ssft import RoundProgress, SSFTResult, run_round_training
from tests.train.factories import cube_sample, identity_case

SIZE = 16
KWARGS = {"channels": (4, 8), "strides": (2,), "num_res_units": 1, "norm": "batch"}
CARD = ModelCard(backbone="unet", in_channels=1, classes={0: "background", 1: "cube"}, roi_size=(SIZE,) * 3, backbone_kwargs=KWARGS)
TRAIN = TrainConfig(
    batch_size=1, unlabelled_batch_size=1, patch_size=(8, 8, 8), lr=1e-2, checkpoint_every=2, augment=False, device="cpu"
)
QUERY = QueryConfig()
INFER = InferenceConfig(roi_size=(SIZE,) * 3, device="cpu")


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_backbone("unet").make(1, 2, KWARGS)


def _cases() -> tuple[list, list]:
    labelled = [identity_case(cube_sample(f"l{i}", i, size=SIZE, half=3)) for i in range(2)]
    unlabelled = [identity_case(cube_sample(f"u{i}", 10 + i, size=SIZE, half=3)) for i in range(3)]
    return labelled, unlabelled


def _run(run_dir: Path, *, net: torch.nn.Module | None = None, **ssft: object) -> tuple[SSFTResult, list[RoundProgress]]:
    labelled, unlabelled = _cases()
    settings = {"supervised_steps": 2, "ssft_steps": 3, **ssft}
    events: list[RoundProgress] = []
    stop_after = settings.pop("stop_after", None)
    result = run_round_training(
        net if net is not None else _net(),
        CARD,
        labelled,
        unlabelled,
        train_cfg=TRAIN,
        ssft_cfg=SSFTConfig(**settings),  # type: ignore[arg-type]
        query_cfg=QUERY,
        infer_cfg=INFER,
        run_dir=run_dir,
        reference=lambda cid: next(c.label for c in unlabelled if c.case_id == cid),
        on_progress=events.append,
        should_stop=(lambda: len(events) >= stop_after) if stop_after is not None else None,  # type: ignore[operator]
    )
    return result, events


def _weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_selective_round_schedule_pseudo_labels_and_ramp(tmp_path: Path) -> None:
    result, events = _run(tmp_path, tau_v=0.0)  # τ_v = 0 keeps every voxel: R is the top ρ by r
    rep = result.report
    assert rep is not None and rep.unlabelled_ids == ["u0", "u1", "u2"]
    assert len(rep.admitted_ids) == 2  # ceil(0.5 · 3)
    # Trained on exactly L ∪ R, with R's stored pseudo-labels.
    state = load_checkpoint(tmp_path / "ssft")
    assert state["case_ids"] == {"labelled": ["l0", "l1"], "pseudo": rep.admitted_ids}
    # Pseudo-labels come from f_t^sup: an independent prediction with the supervised weights agrees.
    sup_net = _net(5)
    sup_net.load_state_dict(load_checkpoint(tmp_path / "supervised")["model"])
    sup_net.eval()
    for case in _cases()[1]:
        with torch.no_grad():
            probs = predict_probs(sup_net, torch.from_numpy(case.image), INFER)
        stored = load_pseudo_label(tmp_path / "selection" / "pseudo", case.case_id)
        np.testing.assert_array_equal(stored.label[0], probs.argmax(0).numpy())
        row = next(c for c in rep.cases if c.case_id == case.case_id)
        truth = case.label[0]
        assert row.kept_fraction == 1.0 and row.kept_accuracy == pytest.approx(float((stored.label[0] == truth).mean()))
    # The unsupervised weight follows λ_max · exp(−5 (1 − e/E)²) over the 3 SSFT steps.
    assert result.ssft is not None
    lams = [e.lambda_u for e in result.ssft.history]
    assert lams == pytest.approx([0.5 * math.exp(-5 * (1 - k / 3) ** 2) for k in (1, 2, 3)])
    # One progress bar over both phases.
    train_events = [e for e in events if e.event is not None]
    assert [e.phase for e in train_events] == ["supervised"] * 2 + ["ssft"] * 3
    assert [e.fraction for e in train_events] == pytest.approx([k / 5 for k in range(1, 6)])
    assert [e.message for e in events if e.phase == "scoring"][-1] == "scoring 5/5: u2"
    assert set(result.timings_s) == {"supervised", "scoring", "ssft"} and all(t > 0 for t in result.timings_s.values())
    assert ReliabilityReport.load(tmp_path / "selection" / "reliability.json").to_dict() == rep.to_dict()


@pytest.mark.parametrize("setting", [{"rho": 0.0}, {"tau_v": 1.5}], ids=["empty_R", "all_ignored"])
def test_empty_r_trains_on_labelled_alone_and_says_so(tmp_path: Path, setting: dict[str, float]) -> None:
    result, events = _run(tmp_path, **setting)
    rep = result.report
    assert rep is not None and rep.admitted_ids == [] and any("(L) alone" in w for w in rep.warnings)
    if "tau_v" in setting:  # selected by reliability, but every voxel was ignored
        assert any(c.selected for c in rep.cases) and any("below τ_v" in w for w in rep.warnings)
    assert result.ssft is not None and result.ssft.step == 3
    assert all(e.lambda_u == 0.0 and e.phase == "ssft" for e in result.ssft.history)
    assert load_checkpoint(tmp_path / "ssft")["case_ids"]["pseudo"] == []
    assert any("R is empty" in e.message for e in events)


def test_none_mode_returns_the_supervised_model_unchanged(tmp_path: Path) -> None:
    result, events = _run(tmp_path, mode=SSFTMode.NONE)
    assert result.ssft is None and result.report is not None and result.report.mode is SSFTMode.NONE
    assert _same(_weights(result.network), load_checkpoint(tmp_path / "supervised")["model"])
    assert not (tmp_path / "ssft").exists() and not (tmp_path / "selection" / "scores").exists()
    assert events[-1].fraction == 1.0 and {e.phase for e in events} == {"supervised"}
    again, events = _run(tmp_path, mode=SSFTMode.NONE)  # a finished round is read back, not retrained
    assert events == [] and _same(_weights(again.network), _weights(result.network))


def test_zero_ssft_steps_skips_the_selection_as_mode_none_does(tmp_path: Path) -> None:
    result, events = _run(tmp_path, mode=SSFTMode.SELECTIVE, ssft_steps=0)
    assert result.ssft is None and result.report is not None and result.report.mode is SSFTMode.NONE
    assert not (tmp_path / "selection" / "scores").exists() and {e.phase for e in events} == {"supervised"}


def test_resume_across_phases_gives_the_uninterrupted_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full, _ = _run(tmp_path / "full", tau_v=0.0)
    expected = _weights(full.network)
    # Stopped in the scoring pass (events: 2 supervised steps, then one per scored case).
    first, _ = _run(tmp_path / "cut", tau_v=0.0, stop_after=3)
    assert first.stopped and first.report is None and not (tmp_path / "cut" / "selection" / "reliability.json").exists()
    # Stopped after the first SSFT step (events now: 5 scored cases, then SSFT steps; the finished
    # supervised phase is read back without events).
    second, _ = _run(tmp_path / "cut", net=_net(7), tau_v=0.0, stop_after=5 + 1)
    assert second.stopped and second.ssft is not None and second.ssft.step == 1
    report_file = tmp_path / "cut" / "selection" / "reliability.json"
    stamp = report_file.stat().st_mtime_ns
    # Resumed (fresh weights: they come from the checkpoints); the selection is read, not recomputed.
    monkeypatch.setattr(ssft_module, "score_cases", lambda *a, **k: pytest.fail("scoring pass recomputed"))
    third, events = _run(tmp_path / "cut", net=_net(7), tau_v=0.0)
    assert not third.stopped and third.ssft is not None and third.ssft.step == 3
    assert report_file.stat().st_mtime_ns == stamp
    assert [e.phase for e in events] == ["ssft", "ssft"]
    assert _same(_weights(third.network), expected)
    with pytest.raises(StateError, match="other cases or SSFT settings"):
        _run(tmp_path / "cut", tau_v=0.5)
