"""Retention recipes on tiny data (METHOD.md §6): each does what it says and nothing else.

The L2-SP penalty is zero at θ_0 and pulls toward it; recalibration changes running statistics
and nothing else, and equals the pooled exact statistics; LoRA leaves f_0's encoder weights
untouched and merges back into the plain layout; interpolation at α = 0 gives f_0 exactly;
decoder-only training leaves the encoder's weights; a whole round with every recipe runs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from assft_core.config import (
    FinetuneConfig,
    InferenceConfig,
    QueryConfig,
    Recipe,
    RetentionLoss,
    SSFTConfig,
    SSFTMode,
    TrainConfig,
    Trainable,
    from_dict,
    parse_recipe,
    to_dict,
)
from assft_core.models.card import ModelCard
from assft_core.models.loaded import wrap_network
from assft_core.models.registry import get_backbone
from assft_core.train.anchoring import WeightAnchor, interpolate_weights, trainable_parameters
from assft_core.train.data import TrainData
from assft_core.train.lora import attach_lora, has_lora, merge_lora
from assft_core.train.recalibration import RecalibrationStopped, batchnorm_layers, recalibrate_batchnorm
from assft_core.train.ssft import run_round_training
from assft_core.train.trainer import train
from tests.train.factories import cube_sample, identity_case

SIZE = 16
KWARGS = {"channels": (4, 8), "strides": (2,), "num_res_units": 1, "norm": "batch"}
CARD = ModelCard(backbone="unet", in_channels=1, classes={0: "background", 1: "cube"}, roi_size=(SIZE,) * 3, backbone_kwargs=KWARGS)
TRAIN = TrainConfig(batch_size=1, unlabelled_batch_size=1, patch_size=(8, 8, 8), lr=1e-2, checkpoint_every=2, augment=False, device="cpu")
INFER = InferenceConfig(roi_size=(SIZE,) * 3, device="cpu")
UNET = get_backbone("unet")


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNET.make(1, 2, KWARGS)


def _encoder(net: torch.nn.Module) -> list[str]:
    return UNET.encoder_stages(net)


def _changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_recipe_parsing_and_config_round_trip() -> None:
    assert parse_recipe("adabn+wise") == (Recipe.ADABN, Recipe.WISE)
    assert parse_recipe("paper,adabn") == (Recipe.ADABN,)
    assert parse_recipe([]) == (Recipe.PAPER,)
    with pytest.raises(ValueError, match="unknown recipe"):
        parse_recipe("adabm")
    with pytest.raises(ValueError, match="exclude each other"):
        parse_recipe("decoder+lora")
    cfg = FinetuneConfig(recipe=("l2sp", "adabn"))
    back = from_dict(FinetuneConfig, to_dict(cfg))
    assert back.recipe == (Recipe.L2SP, Recipe.ADABN) and back.label == "l2sp+adabn"


def test_l2sp_penalty_is_zero_at_theta0_and_pulls_toward_it(tmp_path) -> None:
    f0 = _net()
    anchor = WeightAnchor.of(f0, UNET.head_prefixes(f0))
    assert float(anchor.penalty(f0).detach()) == 0.0
    moved = copy.deepcopy(f0)
    with torch.no_grad():
        next(moved.parameters()).add_(0.5)
    assert float(anchor.penalty(moved)) > 0.0
    # Trained with a strong anchor, the weights stay nearer θ_0 than without one.
    data = TrainData([cube_sample("a", 0, SIZE)])
    free, held = copy.deepcopy(f0), copy.deepcopy(f0)
    train(TRAIN.__class__(**{**TRAIN.__dict__, "steps": 6}), free, data, run_dir=tmp_path / "free")
    cfg = TRAIN.__class__(**{**TRAIN.__dict__, "steps": 6, "l2sp_alpha": 100.0})
    result = train(cfg, held, data, run_dir=tmp_path / "held", anchor=anchor)
    assert float(anchor.penalty(held)) < float(anchor.penalty(free))
    assert all(e.penalty >= 0.0 for e in result.history) and result.history[-1].penalty > 0.0


def test_retention_loss_dice_ce_adds_the_dice_term_to_the_same_first_step(tmp_path) -> None:
    # Same weights, same patches at step 1: Dice + CE exceeds CE alone by the (positive) Dice loss.
    data = TrainData([cube_sample("a", 0, SIZE)], retained=[cube_sample("r", 1, SIZE)])
    losses = {}
    for kind in RetentionLoss:
        cfg = TRAIN.__class__(**{**TRAIN.__dict__, "steps": 1, "retention_loss": kind})
        losses[kind] = train(cfg, _net(), data, run_dir=tmp_path / kind.value).history[0].loss_retained
    assert losses[RetentionLoss.DICE_CE] > losses[RetentionLoss.CE] > 0.0
    assert from_dict(TrainConfig, to_dict(TrainConfig(retention_loss=RetentionLoss.DICE_CE))).retention_loss is RetentionLoss.DICE_CE


def test_head_is_not_anchored_when_f0_has_none() -> None:
    f0 = _net()
    head = UNET.head_prefixes(f0)
    anchor = WeightAnchor.of(f0, head, has_head=False)
    assert anchor.parameters and not any(k.startswith(head[0]) for k in anchor.parameters)


def test_recalibration_changes_running_statistics_only_and_matches_pooled_moments() -> None:
    net = _net()
    with torch.no_grad():  # running statistics unlike the data's, so a change is visible
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.fill_(3.0)
                m.running_var.fill_(9.0)
    net.eval()
    before = copy.deepcopy(net.state_dict())
    images = [cube_sample(f"c{i}", i, SIZE).image for i in range(3)]
    report = recalibrate_batchnorm(net, iter(images), INFER)
    changed = _changed(before, net.state_dict())
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    assert report.layers == batchnorm_layers(net) and report.cases == 3 and report.max_mean_shift > 0
    assert not net.training
    # Each layer's new statistics are what training's running statistics estimate: the average over
    # window batches of each batch's mean and (unbiased) variance, every layer normalising by batch
    # statistics. Each image is one window here, so a train-mode forward per image is the reference.
    reference = _net()
    reference.load_state_dict(before)
    reference.train()
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in report.layers}
    modules = dict(reference.named_modules())
    hooks = [
        modules[name].register_forward_hook(lambda m, i, o, name=name: seen[name].append(i[0].detach()))
        for name in report.layers
    ]
    with torch.no_grad():
        for image in images:
            reference(torch.from_numpy(image)[None])
    for h in hooks:
        h.remove()
    recalibrated = dict(net.named_modules())
    for name in report.layers:
        per_image = [x[0].flatten(1).double() for x in seen[name]]
        mean = torch.stack([x.mean(1) for x in per_image]).mean(0)
        var = torch.stack([x.var(1, unbiased=True) for x in per_image]).mean(0)
        bn = recalibrated[name]
        assert torch.allclose(bn.running_mean.double(), mean, atol=1e-5), name
        assert torch.allclose(bn.running_var.double(), var, rtol=1e-4, atol=1e-6), name
        assert bn.momentum == 0.1  # restored


def test_recalibration_stopped_leaves_the_statistics_as_they_were() -> None:
    net = _net()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(RecalibrationStopped):
        recalibrate_batchnorm(net, [cube_sample("a", 0, SIZE).image] * 2, INFER, should_stop=lambda: True)
    assert not _changed(before, net.state_dict())


def test_recalibration_is_a_no_op_said_so_without_batchnorm() -> None:
    net = get_backbone("unet").make(1, 2, {**KWARGS, "norm": "instance"})
    before = copy.deepcopy(net.state_dict())
    report = recalibrate_batchnorm(net, [cube_sample("a", 0, SIZE).image], INFER)
    assert report.layers == [] and "nothing to recalibrate" in report.note
    assert not _changed(before, net.state_dict())


def test_interpolation_at_alpha_zero_gives_f0_exactly_and_one_leaves_ft() -> None:
    f0, ft = _net(0), _net(1)
    theta0, thetat = copy.deepcopy(f0.state_dict()), copy.deepcopy(ft.state_dict())
    at_zero = copy.deepcopy(ft)
    interpolate_weights(at_zero, theta0, 0.0)
    for k, v in at_zero.state_dict().items():
        assert torch.equal(v, theta0[k]), k
    at_one = copy.deepcopy(ft)
    interpolate_weights(at_one, theta0, 1.0)
    assert not _changed(thetat, at_one.state_dict())
    half = copy.deepcopy(ft)
    kept = interpolate_weights(half, theta0, 0.5, keep=UNET.head_prefixes(ft))
    w = "model.0.conv.unit0.conv.weight"
    assert torch.allclose(half.state_dict()[w], 0.5 * (theta0[w] + thetat[w]))
    assert any(k.startswith("model.2") for k in kept)
    with pytest.raises(ValueError):
        interpolate_weights(half, theta0, 1.5)


def test_lora_leaves_encoder_weights_untouched_and_merges_back(tmp_path) -> None:
    f0 = _net()
    before = copy.deepcopy(f0.state_dict())
    net = copy.deepcopy(f0)
    cfg = TrainConfig(**{**TRAIN.__dict__, "steps": 4, "trainable": Trainable.LORA, "lora_rank": 2, "lora_alpha": 4})
    train(cfg, net, TrainData([cube_sample("a", 0, SIZE)]), run_dir=tmp_path / "lora", encoder=_encoder(net))
    assert not has_lora(net)
    after = net.state_dict()
    assert set(after) == set(before)  # the plain layout back
    changed = _changed(before, after)
    encoder = _encoder(net)
    enc_convs = {k for k in changed if any(k.startswith(p + ".") for p in encoder) and k.endswith("conv.weight")}
    decoder = {k for k in changed if k.startswith("model.2")}
    assert enc_convs and decoder  # adapters merged into the encoder's convs; decoder trained directly
    # While attached, f_0's own weights are frozen and the output is unchanged (B starts at 0).
    probe = copy.deepcopy(f0).eval()
    x = torch.randn(1, 1, SIZE, SIZE, SIZE)
    with torch.no_grad():
        y0 = probe(x)
    targets = attach_lora(probe, encoder, 2, 4)
    with torch.no_grad():
        assert torch.allclose(probe(x), y0)
    frozen = [n for n, p in probe.named_parameters() if ".base_layer." in n]
    assert frozen and all(not p.requires_grad for n, p in probe.named_parameters() if ".base_layer." in n)
    # Merging folds the adapters in exactly: the plain network then gives the adapted output.
    with torch.no_grad():
        for n, p in probe.named_parameters():
            if ".lora_B." in n:
                p.normal_(0.0, 0.1)
        y_adapted = probe(x)
    assert not torch.allclose(y_adapted, y0)
    assert merge_lora(probe) == len(targets)
    with torch.no_grad():
        assert torch.allclose(probe(x), y_adapted, atol=1e-5)


def test_decoder_recipe_trains_no_encoder_weight_but_its_norms(tmp_path) -> None:
    f0 = _net()
    before = copy.deepcopy(f0.state_dict())
    net = copy.deepcopy(f0)
    encoder = _encoder(net)
    cfg = TrainConfig(**{**TRAIN.__dict__, "steps": 3, "trainable": Trainable.DECODER})
    train(cfg, net, TrainData([cube_sample("a", 0, SIZE)]), run_dir=tmp_path / "dec", encoder=encoder)
    changed = _changed(before, net.state_dict())
    in_encoder = {k for k in changed if any(k.startswith(p + ".") for p in encoder)}
    assert in_encoder and all(("adn.N" in k) for k in in_encoder)  # norms (affine + statistics) only
    assert any(k.startswith("model.2") for k in changed)
    names = trainable_parameters(net, Trainable.DECODER, encoder)
    assert not any(k.endswith("conv.weight") and any(k.startswith(p + ".") for p in encoder) for k in names)
    with pytest.raises(ValueError, match="encoder"):
        trainable_parameters(net, Trainable.DECODER, [])


@pytest.mark.parametrize("recipe", ["retention+adabn+l2sp+wise", "lora+adabn"])
def test_a_round_with_recipes_runs_and_reports_them(tmp_path, recipe: str) -> None:
    samples = [cube_sample(f"c{i}", i, SIZE) for i in range(5)]
    labelled = [identity_case(samples[0])]
    unlabelled = [identity_case(type(s)(s.case_id, s.image, s.label)) for s in samples[1:]]
    unlabelled = [type(c)(**{**c.__dict__, "label": None}) for c in unlabelled]
    f0 = _net()
    base = wrap_network(copy.deepcopy(f0), CARD)
    network = copy.deepcopy(f0)
    result = run_round_training(
        network, CARD, labelled, unlabelled, train_cfg=TRAIN, query_cfg=QueryConfig(), infer_cfg=INFER,
        ssft_cfg=SSFTConfig(mode=SSFTMode.SELECTIVE, supervised_steps=2, ssft_steps=2), run_dir=tmp_path / "round",
        finetune_cfg=FinetuneConfig(recipe=recipe, retention_tau=0.5), base=base,
    )
    log = result.retention
    assert log["recipe"] == recipe
    assert "adabn_supervised" in log and "adabn_end" in log
    if "retention" in recipe:
        kept = log["retention"]["kept_ids"]
        assert len(kept) == 2 and set(kept) <= {c.case_id for c in unlabelled}
        assert "wise" in log
        assert result.supervised.history[-1].loss_retained > 0.0
    assert not has_lora(network)
    assert set(network.state_dict()) == set(f0.state_dict())
    out = torch.softmax(network(torch.from_numpy(samples[0].image)[None]), 1)
    assert torch.isfinite(out).all() and np.isclose(float(out.sum(1).mean()), 1.0)


def test_retention_is_skipped_and_said_so_when_f0_has_no_head(tmp_path) -> None:
    # The default recipe (frozen_bn+retention) on a model whose head was re-initialised: f_0 has
    # no predictions to keep, so the round trains on the labels alone instead of failing.
    import dataclasses

    samples = [cube_sample(f"c{i}", i, SIZE) for i in range(3)]
    labelled = [identity_case(samples[0])]
    unlabelled = [type(c)(**{**c.__dict__, "label": None}) for c in (identity_case(s) for s in samples[1:])]
    f0 = _net()
    base = dataclasses.replace(wrap_network(copy.deepcopy(f0), CARD), has_head=False)
    result = run_round_training(
        copy.deepcopy(f0), CARD, labelled, unlabelled, train_cfg=TRAIN, query_cfg=QueryConfig(), infer_cfg=INFER,
        ssft_cfg=SSFTConfig(mode=SSFTMode.NONE, supervised_steps=2, ssft_steps=0), run_dir=tmp_path / "round",
        finetune_cfg=FinetuneConfig(recipe="frozen_bn+retention"), base=base,
    )
    assert "no head" in result.retention["retention"]["skipped"]
    assert result.supervised.history and result.supervised.history[-1].loss_retained == 0.0


def test_frozen_bn_recipe_freezes_batchnorm_for_the_round() -> None:
    from assft_core.config import BNMode
    from assft_core.train.retention import RoundRetention

    net = _net()
    plain = RoundRetention.build(FinetuneConfig(recipe="paper"), net, "unet", None).train_config(TRAIN)
    frozen = RoundRetention.build(FinetuneConfig(recipe="frozen_bn+decoder"), net, "unet", None).train_config(TRAIN)
    assert plain.bn_mode is BNMode.TRAIN and plain.trainable is Trainable.ALL
    assert frozen.bn_mode is BNMode.FROZEN and frozen.trainable is Trainable.DECODER


def test_frozen_bn_recipe_trains_a_network_whose_norms_store_nothing_and_says_so() -> None:
    """MONAI's UNet with its default InstanceNorm keeps no statistics or affine parameters: the
    default recipe must still train it (bn_mode `frozen` itself would refuse it)."""
    from assft_core.config import BNMode
    from assft_core.train.normalisation import keeps_something_frozen, prepare_normalisation
    from assft_core.train.retention import RoundRetention

    net = get_backbone("unet").make(1, 3, {"channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "instance"})
    assert not keeps_something_frozen(net) and keeps_something_frozen(_net())
    with pytest.raises(Exception, match="nothing to freeze"):
        prepare_normalisation(net, BNMode.FROZEN)
    retention = RoundRetention.build(FinetuneConfig(recipe="frozen_bn+decoder"), net, "unet", None)
    cfg = retention.train_config(TRAIN)
    assert cfg.bn_mode is BNMode.TRAIN and "nothing to keep" in retention.log["frozen_bn"]
    params, _report = prepare_normalisation(net, cfg.bn_mode)
    assert params


def test_the_round_learning_rate_overrides_the_trainers() -> None:
    from assft_core.train.retention import RoundRetention

    net = _net()
    assert RoundRetention.build(FinetuneConfig(recipe="paper", lr=1e-4), net, "unet", None).train_config(TRAIN).lr == 1e-4
    assert RoundRetention.build(FinetuneConfig(recipe="paper"), net, "unet", None).train_config(TRAIN).lr == TRAIN.lr
