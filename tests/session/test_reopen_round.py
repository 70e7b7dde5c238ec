"""Fine-tuning a trained round again: the earlier model kept aside, the store back to `labelled`."""

from __future__ import annotations

import pytest

from assft_core.errors import StateError
from assft_core.session import jobs, labels, rounds, store, workspace
from assft_core.session.rounds import RoundState
from assft_core.session.training_round import reopen_round


def _trained(p, metrics=None) -> None:  # noqa: ANN001
    rounds.mark_scored(p, None)
    rounds.propose(p, [{"case_id": "p2"}], "manual")
    rounds.approve(p)
    labels.label_with_oracle(p)
    model = workspace.round_model_dir(p, 0)
    model.mkdir(parents=True)
    (model / "model.pt").write_bytes(b"first")
    rounds.mark_trained(p, p.relative(model))
    if metrics is not None:
        rounds.mark_evaluated(p, metrics)


def test_reopening_keeps_the_earlier_model_and_its_metrics_in_the_history(oracle_project) -> None:
    p = oracle_project
    _trained(p, {"mean_dice": 0.41})
    earlier = reopen_round(p)
    info = rounds.current_round(p)
    assert (info.idx, info.state, info.checkpoint, info.metrics) == (0, RoundState.LABELLED, None, {})
    assert earlier == workspace.round_model_dir(p, 0).with_name("round-000-earlier-1")
    assert (earlier / "model.pt").read_bytes() == b"first" and not workspace.round_model_dir(p, 0).exists()
    assert rounds.round_pool(p).labelled == ["p2"]  # picks and labels stay
    with store.reading(p.db) as conn:
        row = conn.execute("SELECT message, payload FROM events WHERE message LIKE '%reopened%'").fetchone()
    assert row[0] == "round 0 reopened for training"
    assert '"mean_dice": 0.41' in row[1] and "round-000-earlier-1" in row[1]
    # A second try keeps the first one too.
    model = workspace.round_model_dir(p, 0)
    model.mkdir()
    (model / "model.pt").write_bytes(b"second")
    rounds.mark_trained(p, p.relative(model))
    assert reopen_round(p).name == "round-000-earlier-2"
    assert (earlier / "model.pt").read_bytes() == b"first"


def test_reopening_is_refused_before_training_and_while_a_job_runs(oracle_project, monkeypatch) -> None:
    p = oracle_project
    with pytest.raises(StateError, match=r"cannot fine-tune the round again: round 0 is 'open'"):
        reopen_round(p)
    _trained(p)
    monkeypatch.setitem(jobs._REGISTRY, "evaluate", lambda ctx: {})
    job_id = jobs.submit_job(p, "evaluate", {"round": 0})  # queued, never run
    with pytest.raises(StateError, match=rf"job #{job_id} \(evaluate\) is active"):
        reopen_round(p)
    assert rounds.current_round(p).state is RoundState.TRAINED
    assert workspace.round_model_dir(p, 0).is_dir()


def test_a_failed_store_update_puts_the_model_folder_back(oracle_project, monkeypatch) -> None:
    p = oracle_project
    _trained(p)

    def fail(project, earlier_model):  # noqa: ANN001, ANN202
        raise StateError("raced")

    monkeypatch.setattr(rounds, "reopen_for_training", fail)
    with pytest.raises(StateError, match="raced"):
        reopen_round(p)
    assert (workspace.round_model_dir(p, 0) / "model.pt").read_bytes() == b"first"
    assert not workspace.round_model_dir(p, 0).with_name("round-000-earlier-1").exists()


def test_cli_train_again_moves_the_model_aside_and_trains_with_the_new_settings(oracle_project, capsys,
                                                                                monkeypatch) -> None:
    from assft_core.cli import main

    p = oracle_project
    folder = str(p.folder)
    rounds.mark_scored(p, None)
    rounds.propose(p, [{"case_id": "p2"}], "manual")
    rounds.approve(p)
    labels.label_with_oracle(p)
    assert main(["train", "--again", "-p", folder]) == 1  # labelled, never trained: plain `assft train`
    assert "cannot fine-tune the round again: round 0 is 'labelled'" in capsys.readouterr().err
    model = workspace.round_model_dir(p, 0)
    model.mkdir(parents=True)
    rounds.mark_trained(p, p.relative(model))
    seen: list[dict] = []
    monkeypatch.setitem(jobs._REGISTRY, "train", lambda ctx: seen.append(dict(ctx.params)) or {"labelled": 1})
    assert main(["train", "--again", "--steps", "5", "--no-evaluate", "-p", folder]) == 0
    out = capsys.readouterr().out
    assert "the earlier model is kept in" in out and "round-000-earlier-1" in out
    assert seen[0]["supervised_steps"] == 5 and seen[0]["round"] == 0
    assert rounds.current_round(p).state is RoundState.LABELLED  # the fake job trains nothing
    assert main(["status", "-p", folder]) == 0
    assert "round 0: fine-tuned again; the earlier model is kept in artifacts/models/round-000-earlier-1" in (
        capsys.readouterr().out)
