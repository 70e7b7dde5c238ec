"""The one training loop: pre-training, fine-tuning, SSFT and benchmarks all call `train`.

A plain function with callbacks (`on_progress`, `should_stop`) and `resume_from`; processes and
jobs belong to the session engine. Counts are in optimiser steps (ASSFT, METHOD.md §4). Every
step's randomness (cases, crops, flips, jitter, dropout) is a pure function of (seed, step), so a
run resumed from any checkpoint ends with the same weights as an uninterrupted run (CPU; CUDA up
to non-deterministic kernels).

Under `torchrun` (a process group joined with `assft_core.train.distributed.init_distributed`) the
same function trains with DistributedDataParallel: rank r takes the patches r, r+N, … of the
step's global batch of N·`batch_size` patches drawn from the same step generator, so N ranks equal
one process with batch N·`batch_size` up to float error (docs/distributed.md); rank 0 alone writes
the config, checkpoints and progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from assft_core.config import BNMode, RetentionDraw, RetentionLoss, TrainConfig, Trainable, to_dict
from assft_core.errors import AssftError, StateError
from assft_core.fsutil import atomic_write_json
from assft_core.models.inference import logits_of
from assft_core.train import distributed as ddp
from assft_core.train.anchoring import WeightAnchor, trainable_parameters
from assft_core.train.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from assft_core.train.normalisation import prepare_normalisation
from assft_core.train.data import TrainData
from assft_core.train.lora import attach_lora, merge_lora
from assft_core.train.losses import MaskedDiceCELoss, ignore_ce, lambda_u_ramp
from assft_core.train.sampling import (
    STREAM_LABELLED,
    STREAM_PSEUDO,
    STREAM_RETAINED,
    STREAM_TORCH,
    PatchSource,
    prepare_source,
    sample_batch,
    step_rng,
)

# Settings that may differ between a run and its resumption without changing its result.
_RESUME_FREE_SETTINGS = ("device", "checkpoint_every")


class TrainingDiverged(AssftError):
    """The loss became NaN or infinite."""


@dataclass
class ProgressEvent:
    """One finished optimiser step, in a form a job can store and a UI can draw.

    Attributes:
        step: steps finished in this run (1..total).
        total: steps of the run.
        loss: total loss of the step (labelled + λ_u · pseudo).
        loss_labelled: Dice + CE on the labelled batch.
        loss_pseudo: CE on the pseudo-labelled batch (0 without pseudo-labels).
        loss_retained: CE on f_0's retention targets (0 without them; METHOD.md §6).
        penalty: the L2-SP term Σ‖θ − θ_0‖² before its weight α_sp (0 without an anchor).
        lr: learning rate used by the step.
        lambda_u: weight of the pseudo-label loss at this step (0 without pseudo-labels).
        elapsed_s: wall time of the run so far in seconds, across resumptions.
        eta_s: estimated seconds left, from this session's step rate.
        phase: "supervised" or "ssft" (or the caller's label).
    """

    step: int
    total: int
    loss: float
    loss_labelled: float
    loss_pseudo: float
    lr: float
    lambda_u: float
    elapsed_s: float
    eta_s: float
    phase: str
    loss_retained: float = 0.0
    penalty: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the event."""
        return asdict(self)


@dataclass
class TrainResult:
    """Outcome of `train`.

    Attributes:
        step: last finished step.
        loss: loss of the last finished step (NaN when no step ran).
        checkpoint_path: the run's last checkpoint (holds the final weights when not stopped).
        history: every step's event, including steps done before a resumption.
        stopped: True when `should_stop` ended the run before `cfg.steps`.
    """

    step: int
    loss: float
    checkpoint_path: Path
    history: list[ProgressEvent] = field(default_factory=list)
    stopped: bool = False


def _prepare_bn(network: nn.Module, mode: BNMode) -> list[nn.Parameter]:
    """Put the normalisation layers in the mode's state and return the parameters to optimise.

    Every kind (BatchNorm, InstanceNorm, GroupNorm, LayerNorm) as `train.normalisation` says;
    `frozen` keeps f_0's running statistics and affine parameters (METHOD.md §5).

    Raises:
        StateError: `frozen` on a network whose normalisation layers hold nothing to keep.
    """
    return prepare_normalisation(network, mode)[0]


def _check_resume(state: dict[str, Any], cfg: TrainConfig, data: TrainData, path: Path) -> None:
    saved = {k: v for k, v in state["config"].items() if k not in _RESUME_FREE_SETTINGS}
    now = {k: v for k, v in to_dict(cfg).items() if k not in _RESUME_FREE_SETTINGS}
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        raise StateError(
            f"{path}: the checkpoint was made with different settings ({', '.join(diff)}). "
            "Fix: resume with the run's saved config.json, or start a fresh run."
        )
    if state["case_ids"] != data.case_ids():
        raise StateError(
            f"{path}: the checkpoint was trained on other cases than the ones given now. "
            "Fix: resume with the same labelled and pseudo-labelled cases, or start a fresh run."
        )


def _torch_seed(seed: int, step: int, rank: int = 0) -> int:
    # Rank 0 keeps the single-process stream; other ranks draw their own dropout masks.
    rng = step_rng(seed, step, STREAM_TORCH) if rank == 0 else np.random.default_rng([seed, step, STREAM_TORCH, rank])
    return int(rng.integers(2**63 - 1))


def _stop_requested(should_stop: Callable[[], bool] | None) -> bool:
    """Rank 0 polls `should_stop`; every rank gets its answer, so all ranks stop at one step."""
    asked = should_stop is not None and ddp.is_main_process() and bool(should_stop())
    return bool(ddp.broadcast_object(asked))


def train(
    cfg: TrainConfig,
    network: nn.Module,
    data: TrainData,
    *,
    run_dir: Path,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume_from: Path | None = None,
    phase: str | None = None,
    anchor: WeightAnchor | None = None,
    encoder: Sequence[str] = (),
) -> TrainResult:
    """Train `network` in place for `cfg.steps` optimiser steps (ASSFT, METHOD.md §4–§6).

    Each step draws `cfg.batch_size` labelled patches (crops centred on foreground with
    probability `cfg.fg_crop_prob`, never on ignore voxels; flips and `cfg.intensity_augment` when
    `cfg.augment`) and, when `data.pseudo` is not empty, `cfg.unlabelled_batch_size` pseudo-labelled
    patches; both go through the network in one batch. Loss:
    `DiceCE(L) + λ_u(e/E) · CE_ignore(R)`, `λ_u` from `lambda_u_ramp` with e/E = (step + 1) / steps,
    voxels labelled `cfg.ignore_index` left out of both terms. Retention recipes (METHOD.md §6):
    with `data.retained`, `cfg.retention_batch_size` more patches of f_0's retention targets add
    `λ_r ·` the retention loss (`cfg.retention_weight`, constant; `cfg.retention_loss`: the labelled
    masked DiceCE, the default, or `CE_ignore`; `cfg.retention_draw` "site": patches drawn evenly over
    sites); with `anchor`, `α_sp · Σ‖θ − θ_0‖²`
    (`cfg.l2sp_alpha`); `cfg.trainable` "decoder" / "lora" trains part of the network (LoRA
    adapters are attached for the run and merged into the weights when it ends, stopped or not).
    AdamW, cosine schedule to 0 over
    `cfg.steps`. A checkpoint is written every `cfg.checkpoint_every` steps, at the end and when
    stopped; `config.json` is written beside it at the start. The network is left in eval mode.

    Args:
        cfg: the run's settings; under torchrun `batch_size` and `unlabelled_batch_size` are per
            rank (docs/distributed.md).
        network: maps (B, C, *patch) to logits (B, K, *patch) (or a tuple whose first item is that);
            moved to the resolved `cfg.device`.
        data: labelled (and optional pseudo-labelled) cases.
        run_dir: folder for `config.json` and `checkpoint.pt` (created if missing).
        on_progress: called with each finished step's event.
        should_stop: polled after each step; True saves a checkpoint and returns `stopped=True`.
        resume_from: a checkpoint (or run folder) of a killed or stopped run of the same settings
            and cases; training continues from its step.
        phase: label of the events; default "ssft" with pseudo-labels, else "supervised".
        anchor: θ_0 of L2-SP (None: no penalty).
        encoder: module names of the encoder (`Backbone.encoder_stages`), for `cfg.trainable`
            "decoder" and "lora".

    Returns:
        The last step, loss, checkpoint path and the full history of events.

    Raises:
        StateError: `resume_from` was made with other settings or cases.
        ModelError: `resume_from` is not a readable training checkpoint.
        DataError: a label holds a class the network does not predict.
        TrainingDiverged: the loss became NaN or infinite (lower `cfg.lr`).
        DistributedError: under torchrun, a device setting that pins every rank to one GPU.
    """
    device = ddp.rank_device(cfg.device)
    is_main = ddp.is_main_process()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT_NAME
    if is_main:
        atomic_write_json(run_dir / CONFIG_NAME, to_dict(cfg))
    phase = phase or ("ssft" if data.pseudo else "supervised")

    network.to(device)
    trainable = Trainable(cfg.trainable)
    optimizer, scheduler = _optimiser(cfg, network, trainable, encoder, device)
    loss_fn = MaskedDiceCELoss(cfg.ignore_index)

    step, prior_elapsed, last_loss = 0, 0.0, float("nan")
    history: list[ProgressEvent] = []
    if resume_from is not None:
        step, prior_elapsed, last_loss, history = _resume(
            Path(resume_from), cfg, data, network, optimizer, scheduler, device
        )

    # DDP broadcasts rank 0's weights when it wraps, and averages gradients in backward.
    model: nn.Module = network
    if ddp.get_world_size() > 1:
        model = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    labelled, pseudo, retained = _patch_sources(cfg, data, anchor)

    def checkpoint(elapsed: float) -> None:
        if not is_main:
            return
        save_checkpoint(
            ckpt_path,
            {
                "step": step,
                "model": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_states(),
                "config": to_dict(cfg),
                "case_ids": data.case_ids(),
                "history": [e.to_dict() for e in history],
                "elapsed_s": elapsed,
                "loss": last_loss,
            },
        )

    t0 = time.perf_counter()
    start_step = step
    stopped = False
    try:
        while step < cfg.steps:
            event = _one_step(
                cfg, model, optimizer, scheduler, loss_fn, labelled, pseudo, step, device, phase,
                retained=retained, anchor=anchor,
            )
            step += 1
            last_loss = event.loss
            elapsed = prior_elapsed + time.perf_counter() - t0
            rate = (time.perf_counter() - t0) / (step - start_step)
            event.elapsed_s, event.eta_s = elapsed, rate * (cfg.steps - step)
            history.append(event)
            saved = step % max(cfg.checkpoint_every, 1) == 0 or step == cfg.steps
            if saved:
                checkpoint(elapsed)
            if on_progress is not None and is_main:
                on_progress(event)
            if step < cfg.steps and _stop_requested(should_stop):
                if not saved:
                    checkpoint(elapsed)
                stopped = True
                break
        if step == start_step and not ckpt_path.exists():
            checkpoint(prior_elapsed)  # nothing left to do, but the run folder must hold its weights
        # Every rank ends with rank 0's saved model (BatchNorm running statistics differ per rank),
        # and returns only once the checkpoint is on disk.
        ddp.broadcast_module_state(network)
        ddp.barrier()
    finally:
        if trainable is Trainable.LORA:
            merge_lora(network)
        network.eval()
    return TrainResult(step=step, loss=last_loss, checkpoint_path=ckpt_path, history=history, stopped=stopped)


def _patch_sources(
    cfg: TrainConfig, data: TrainData, anchor: WeightAnchor | None
) -> tuple[list[PatchSource], list[PatchSource], list[PatchSource]]:
    """The labelled, pseudo-labelled and retention cases prepared for patch sampling (`prepare_source`).

    Raises:
        StateError: retention targets or an L2-SP anchor under torchrun (not available there yet).
    """
    labelled = [prepare_source(s, cfg.patch_size, cfg.ignore_index) for s in data.labelled]
    pseudo = [prepare_source(s, cfg.patch_size, cfg.ignore_index) for s in data.pseudo]
    retained = [prepare_source(s, cfg.patch_size, cfg.ignore_index) for s in data.retained]
    if (retained or anchor is not None) and ddp.get_world_size() > 1:
        raise StateError("the retention term and L2-SP are not available under torchrun yet. Fix: train with nproc 1.")
    return labelled, pseudo, retained


def _optimiser(
    cfg: TrainConfig, network: nn.Module, trainable: Trainable, encoder: Sequence[str], device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the parameters `cfg.trainable` and `cfg.bn_mode` leave trainable (LoRA adapters
    attached first when asked, on `device`), with a cosine schedule to 0 over `cfg.steps`."""
    if trainable is Trainable.LORA:
        attach_lora(network, encoder, cfg.lora_rank, cfg.lora_alpha)
        network.to(device)
    named = dict(network.named_parameters())
    allowed = {id(named[n]) for n in trainable_parameters(network, trainable, encoder)}
    params = [p for p in _prepare_bn(network, cfg.bn_mode) if id(p) in allowed]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.steps, 1), eta_min=0.0)
    return optimizer, scheduler


def _resume(
    path: Path,
    cfg: TrainConfig,
    data: TrainData,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> tuple[int, float, float, list[ProgressEvent]]:
    """Load a checkpoint of a run with the same settings and cases into the network, optimiser,
    schedule and RNGs; returns (step, elapsed s, last loss, history) to continue from.

    Raises:
        StateError: the checkpoint was made with other settings or cases.
        ModelError: `path` is not a readable training checkpoint.
    """
    state = load_checkpoint(path, map_location=device)
    _check_resume(state, cfg, data, path)
    network.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_states(state["rng"])
    history = [ProgressEvent(**e) for e in state["history"]]
    return int(state["step"]), float(state["elapsed_s"]), float(state["loss"]), history


def _one_step(
    cfg: TrainConfig,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: MaskedDiceCELoss,
    labelled: list[PatchSource],
    pseudo: list[PatchSource],
    step: int,
    device: torch.device,
    phase: str,
    *,
    retained: list[PatchSource] | None = None,
    anchor: WeightAnchor | None = None,
) -> ProgressEvent:
    """Run optimiser step `step` (0-based); its draws depend on (cfg.seed, step) only.

    With N ranks, each draws the step's global batch of N·`batch_size` patches and keeps its share
    (`_rank_share`), and the reported losses are the mean over ranks, i.e. the global batch's.
    """
    rank, world = ddp.get_rank(), ddp.get_world_size()
    augmentation = cfg.intensity_augment if cfg.augment else None
    images, labels = _rank_share(
        sample_batch(
            labelled,
            cfg.batch_size * world,
            cfg.patch_size,
            cfg.fg_crop_prob,
            augmentation,
            step_rng(cfg.seed, step, STREAM_LABELLED),
        ),
        rank,
        world,
    )
    lam = 0.0
    if pseudo:
        p_images, p_labels = _rank_share(
            sample_batch(
                pseudo,
                cfg.unlabelled_batch_size * world,
                cfg.patch_size,
                cfg.fg_crop_prob,
                augmentation,
                step_rng(cfg.seed, step, STREAM_PSEUDO),
            ),
            rank,
            world,
        )
        images, labels = np.concatenate([images, p_images]), np.concatenate([labels, p_labels])
        lam = lambda_u_ramp((step + 1) / cfg.steps, cfg.lambda_u_max)
    n_pseudo = len(images) - cfg.batch_size
    if retained:
        r_images, r_labels = sample_batch(
            retained,
            cfg.retention_batch_size,
            cfg.patch_size,
            cfg.fg_crop_prob,
            augmentation,
            step_rng(cfg.seed, step, STREAM_RETAINED),
            by_group=cfg.retention_draw is RetentionDraw.SITE,
        )
        images, labels = np.concatenate([images, r_images]), np.concatenate([labels, r_labels])
    torch.manual_seed(_torch_seed(cfg.seed, step, rank))  # dropout and any other torch randomness

    x = torch.from_numpy(images).to(device)
    y = torch.from_numpy(labels).to(device)
    n_lab = cfg.batch_size
    logits = logits_of(network(x))
    loss_lab = loss_fn(logits[:n_lab], y[:n_lab])
    zero = torch.zeros((), device=device)
    end_ps = n_lab + n_pseudo
    loss_ps = ignore_ce(logits[n_lab:end_ps], y[n_lab:end_ps], cfg.ignore_index) if pseudo else zero
    loss_ret = _retention_loss(cfg, loss_fn, logits[end_ps:], y[end_ps:]) if retained else zero
    penalty = anchor.penalty(network) if anchor is not None else zero
    if world > 1:
        loss_lab, loss_ps = _global_ce_weighting(logits, y, n_lab, loss_lab, loss_ps, cfg.ignore_index)
    loss = loss_lab + lam * loss_ps + cfg.retention_weight * loss_ret + cfg.l2sp_alpha * penalty
    # Mean over ranks = the global batch's loss; every rank sees the same value, so all raise together.
    reported = ddp.all_reduce_mean(torch.stack([loss.detach(), loss_lab.detach(), loss_ps.detach()]))
    if not torch.isfinite(reported[0]):
        raise TrainingDiverged(
            f"the training loss became {float(reported[0])} at step {step + 1}. Fix: lower TrainConfig.lr "
            f"(now {cfg.lr}) or check the input intensities."
        )
    lr = float(scheduler.get_last_lr()[0])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return ProgressEvent(
        step=step + 1,
        total=cfg.steps,
        loss=float(reported[0]),
        loss_labelled=float(reported[1]),
        loss_pseudo=float(reported[2]),
        lr=lr,
        lambda_u=lam,
        elapsed_s=0.0,
        eta_s=0.0,
        phase=phase,
        loss_retained=float(loss_ret.detach()),
        penalty=float(penalty.detach()),
    )


def _retention_loss(
    cfg: TrainConfig, loss_fn: MaskedDiceCELoss, logits: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """The loss on the retention patches: CE over kept voxels, or the labelled masked DiceCE
    (`cfg.retention_loss`), whose Dice term gives a small structure the weight of a large one."""
    if cfg.retention_loss is RetentionLoss.DICE_CE:
        return loss_fn(logits, target)
    return ignore_ce(logits, target, cfg.ignore_index)


def _rank_share(batch: tuple[np.ndarray, np.ndarray], rank: int, world: int) -> tuple[np.ndarray, np.ndarray]:
    """Patches rank, rank+world, … of a global (images (B·world, C, *patch), labels) batch."""
    images, labels = batch
    return np.ascontiguousarray(images[rank::world]), np.ascontiguousarray(labels[rank::world])


def _global_ce_weighting(
    logits: torch.Tensor,
    y: torch.Tensor,
    n_lab: int,
    loss_lab: torch.Tensor,
    loss_ps: torch.Tensor,
    ignore_index: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reweight this rank's cross-entropy terms so that DDP's gradient mean equals the global batch's.

    Cross-entropy averages over the kept (not ignored) voxels of the whole batch, and ranks keep
    different numbers of voxels (pseudo-label ignore, padding). Scaling rank r's CE by
    N·n_r / Σ n turns the mean over ranks into Σ(CE sums) / Σ n, the single-process value. Dice is
    a per-patch mean, so it needs no weight.

    Args:
        logits: (B, K, *patch) this rank's logits, labelled patches first.
        y: (B, 1, *patch) their labels.
        n_lab: number of labelled patches.
        loss_lab: Dice + CE of the labelled patches.
        loss_ps: CE of the pseudo-labelled patches.
        ignore_index: label value left out of the loss.

    Returns:
        (loss_lab, loss_ps) with their CE terms reweighted.
    """
    kept = torch.stack([(y[:n_lab] != ignore_index).sum(), (y[n_lab:] != ignore_index).sum()]).to(torch.float64)
    total = ddp.all_reduce_sum(kept)
    weights = [ddp.get_world_size() * k / t if t > 0 else 0.0 for k, t in zip(kept.tolist(), total.tolist())]
    if weights[0] != 1.0:
        # MaskedDiceCELoss returns Dice + 1 · CE: add the missing (w − 1) · CE.
        loss_lab = loss_lab + (weights[0] - 1.0) * ignore_ce(logits[:n_lab], y[:n_lab], ignore_index)
    return loss_lab, loss_ps * weights[1]
