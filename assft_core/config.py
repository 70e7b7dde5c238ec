"""Typed settings: the one place for every default of ASSFT Studio.

Every constant of the method (ASSFT, METHOD.md §1–§5) is a field here with the METHOD.md
default; code reads it from a config object, never from a literal. A config is saved beside
every run as JSON (`to_dict` / `from_dict`), so a result can always be traced to its settings.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class Modality(str, enum.Enum):
    """Imaging modality; decides the intensity normalisation (CT: HU window, MRI: percentiles)."""

    CT = "CT"
    MRI = "MRI"


class MriNormalisation(str, enum.Enum):
    """How MRI intensities are normalised per image (`PreprocessConfig.mri_normalisation`).

    PERCENTILE: (p_low, p_high) of the non-zero voxels -> [0, 1], clipped (this project's default).
    ZSCORE: (x − mean) / std over every voxel of the cropped image (MONAI `NormalizeIntensityd`,
    nnU-Net `ZScoreNormalization` without `use_mask_for_norm`).
    ZSCORE_NONZERO: (x − mean) / std over the non-zero voxels, which are the only ones changed; zero
    stays zero (MONAI `NormalizeIntensityd(nonzero=True)`, nnU-Net with `use_mask_for_norm`).
    ZSCORE_BODY: (x − mean) / std over the body, the voxels non-zero in any channel with the holes
    of that mask filled (nnU-Net `ZScoreNormalization` with `use_mask_for_norm`, whose mask is its
    crop's `create_nonzero_mask`); zeros inside the body are normalised, those outside stay zero.
    MINMAX: (x − min) / (max − min) over every voxel of the cropped image, to [0, 1] (nnU-Net
    `RescaleTo01Normalization`, MONAI `ScaleIntensityd(minv=0, maxv=1, channel_wise=True)`).
    """

    PERCENTILE = "percentile"
    ZSCORE = "zscore"
    ZSCORE_NONZERO = "zscore_nonzero"
    ZSCORE_BODY = "zscore_body"
    MINMAX = "minmax"


class BNMode(str, enum.Enum):
    """What normalisation layers do while fine-tuning (METHOD.md §5); per layer kind (BatchNorm,
    InstanceNorm, GroupNorm, LayerNorm) in `assft_core.train.normalisation`."""

    TRAIN = "train"  # running statistics adapt to the target data, affine parameters train (default)
    FROZEN = "frozen"  # running statistics and affine parameters of f_0 kept; refused where none exist


class Recipe(str, enum.Enum):
    """A retention recipe: how a few-label round keeps what f_0 knew (METHOD.md §6).

    `paper` is the method as published (no retention); the others are this project's additions,
    combinable (`FinetuneConfig.recipe` is a tuple of them).
    """

    PAPER = "paper"  # no retention (ASSFT as published)
    ADABN = "adabn"  # re-estimate BatchNorm statistics over the whole pool after each phase
    L2SP = "l2sp"  # penalty α_sp · mean (θ − θ_0)² toward f_0's weights
    RETENTION = "retention"  # f_0's confident predictions on unlabelled pool cases as extra targets
    DECODER = "decoder"  # encoder frozen except its norms
    LORA = "lora"  # LoRA adapters on the encoder's Conv3d / Linear layers (peft), merged after
    WISE = "wise"  # weight interpolation (1 − α_w) θ_0 + α_w θ_t after each round
    FROZEN_BN = "frozen_bn"  # BatchNorm running statistics and affine parameters kept (bn_mode frozen)


class Trainable(str, enum.Enum):
    """Which parameters a training run updates (METHOD.md §6, partial fine-tuning)."""

    ALL = "all"
    DECODER = "decoder"  # encoder frozen except its normalisation layers
    LORA = "lora"  # LoRA adapters on the encoder, decoder and head (f_0's encoder weights fixed)


class RetentionLoss(str, enum.Enum):
    """The loss on f_0's retention targets (recipe `retention`, METHOD.md §6)."""

    CE = "ce"  # cross-entropy over the kept voxels: large structures dominate
    DICE_CE = "dice_ce"  # the labelled loss (masked Dice + CE): every class weighs the same, small ones too


class RetentionDraw(str, enum.Enum):
    """How a step draws its retention patches from f_0's retention cases (METHOD.md §6)."""

    CASE = "case"  # every retention case equally: a site with many cases dominates
    SITE = "site"  # every site equally, then a case of it (cases.csv site; one site: as `case`)


class IntensityAugment(str, enum.Enum):
    """Intensity augmentation of training patches, on top of the random flips (`TrainConfig.augment`)."""

    JITTER = "jitter"  # intensity scale and shift jitter only
    # nnU-Net's intensity augmentations (Isensee et al. 2021): Gaussian noise and blur, brightness,
    # contrast, simulated low resolution and gamma, so a few scans of sharp sites do not teach the
    # model to fail on blurred or thick-slice ones.
    NNUNET = "nnunet"


class SSFTMode(str, enum.Enum):
    """Which unlabelled cases join the SSFT phase (METHOD.md §4)."""

    SELECTIVE = "selective"
    NONE = "none"
    ALL = "all"
    CONFIDENCE_ONLY = "confidence_only"
    DISTANCE_ONLY = "distance_only"


# Below this CT intensity a voxel is air (air is about -1000 HU, fat about -100 HU, water 0): the
# default body threshold of the foreground crop, and how a folder dataset of unknown modality is
# recognised as CT at import.
AIR_BELOW_HU = -500.0


@dataclass
class PreprocessConfig:
    """Preprocessing to the network's grid (docs/architecture.md, "Layout": data/).

    Attributes:
        spacing_mm: target voxel spacing in mm (RAS axes order), e.g. (2.0, 2.0, 2.0).
        modality: CT or MRI; selects the intensity normalisation.
        ct_window: HU window (low, high) for CT, then scaled to [0, 1].
        mri_percentiles: (low, high) percentiles of foreground intensities mapped to [0, 1]
            (`mri_normalisation` percentile).
        mri_normalisation: percentile (default), zscore, zscore_nonzero, zscore_body or minmax
            (`MriNormalisation`).
        crop_foreground: crop to the body (non-zero / above-threshold region) before padding.
        divisor: pad each spatial size to a multiple of this (the network's downsampling factor).
        ct_body_threshold_hu: CT voxels above this HU count as body when cropping the foreground
            (air is about -1000 HU, fat about -100 HU).
        max_voxels: a file whose header claims more voxels than this is refused before loading
            (2**29 voxels = 2 GiB as float32).
        geometry_tolerance: largest difference in mm (spacing, origin) or direction cosine
            allowed between an image and its label, or between channels.
        label_max_unique: a "label" with more distinct values than this is taken for an
            intensity image by the integrity check.
    """

    spacing_mm: tuple[float, float, float] = (2.0, 2.0, 2.0)
    modality: Modality = Modality.MRI
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    mri_normalisation: MriNormalisation = MriNormalisation.PERCENTILE
    crop_foreground: bool = True
    divisor: int = 16
    ct_body_threshold_hu: float = AIR_BELOW_HU
    max_voxels: int = 2**29
    geometry_tolerance: float = 1e-3
    label_max_unique: int = 64


@dataclass
class InferenceConfig:
    """Sliding-window inference and the scoring pass (METHOD.md §0).

    Attributes:
        roi_size: sliding-window ROI in voxels (D, H, W).
        overlap: sliding-window overlap fraction in [0, 1).
        sw_batch_size: windows per forward batch.
        n_tta: number of flip test-time augmentations averaged (1 = none).
        device: "auto" (CUDA when present, else CPU), "cpu" or "cuda[:i]".
    """

    roi_size: tuple[int, int, int] = (64, 64, 64)
    overlap: float = 0.25
    sw_batch_size: int = 2
    n_tta: int = 1
    device: str = "auto"


@dataclass
class QueryConfig:
    """DKD, ASD and the ASSFT query (METHOD.md §1–§3).

    Attributes:
        lam: λ, weight of the DKD rank against the ASD rank in the query score.
        roi_dilation_voxels: r, radius in voxels of the ball dilating each predicted class.
        fallback_top_fraction: q, fraction of voxels (by foreground probability) used as the ROI
            when every class ROI is empty.
        var_floor_abs: absolute floor of σ²_src.
        var_floor_rel: relative floor of σ²_src (times the layer's median channel variance).
        embedding_stages: which encoder stages are pooled into z ("deepest" or "all").
        clasp_fg_fraction: fraction of the budget given to foreground classes by clasp_pe.
        clasp_beta_start / clasp_beta_end: power-noising β at the first / planned last round.
        planned_rounds: default number of rounds of a project (schedules such as clasp_pe's β).
    """

    lam: float = 0.5
    roi_dilation_voxels: int = 2
    fallback_top_fraction: float = 0.01
    var_floor_abs: float = 1e-5
    var_floor_rel: float = 1e-3
    embedding_stages: str = "deepest"
    clasp_fg_fraction: float = 0.66
    clasp_beta_start: float = 1.0
    clasp_beta_end: float = 100.0
    planned_rounds: int = 5


@dataclass
class TrainConfig:
    """One training run (shared by pre-training, fine-tuning, SSFT and benchmarks; METHOD.md §4–§5).

    Counts are in optimiser steps, never epochs (with 2–8 cases an epoch means nothing).

    Attributes:
        steps: optimiser steps of this run.
        batch_size: patches per step from the labelled set.
        patch_size: training crop in voxels (D, H, W).
        lr / weight_decay: AdamW settings; the learning rate follows a cosine schedule to 0.
        fg_crop_prob: probability that a crop is centred on a foreground voxel (never on ignore).
        augment: augmentation on or off: random flips along each axis, then `intensity_augment`.
        intensity_augment: the intensity augmentation: scale and shift jitter, or nnU-Net's.
        bn_mode: BatchNorm behaviour while fine-tuning.
        checkpoint_every: write a resumable checkpoint every this many steps (and at the end).
        seed: seeds crops, augmentation and initialisation.
        ignore_index: label value excluded from the loss and from crop centres (pseudo-labels).
        unlabelled_batch_size: patches per step from the pseudo-labelled set R (SSFT phase).
        lambda_u_max: λ_max of the unsupervised weight ramp λ_max · exp(−5 (1 − e/E)²).
        device: "auto", "cpu" or "cuda[:i]".
        trainable: which parameters are optimised (METHOD.md §6 partial fine-tuning; the round
            sets it from `FinetuneConfig.recipe`).
        l2sp_alpha: α_sp of the L2-SP penalty α_sp · Σ ‖θ − θ_0‖² over the anchored (pre-trained,
            non-head) parameters, summed as in Li et al. 2018 (a mean over the parameter count
            would make α_sp = 0.01 inert: its gradient per weight would be ~1e-9, against ~1e-4
            for the loss). In force only when the trainer is given an anchor θ_0 (recipe `l2sp`).
        retention_weight: λ_r, constant weight of the loss on f_0's retention targets
            (recipe `retention`).
        retention_loss: that loss: cross-entropy, or masked Dice + CE like the labelled batches.
        retention_draw: retention patches drawn evenly over cases or over sites.
        retention_batch_size: patches per step from the retention targets (when any).
        lora_rank / lora_alpha: LoRA rank r and scaling α when `trainable` is "lora".
    """

    steps: int = 200
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (64, 64, 64)
    lr: float = 5e-4
    weight_decay: float = 1e-5
    fg_crop_prob: float = 0.67
    augment: bool = True
    intensity_augment: IntensityAugment = IntensityAugment.JITTER
    bn_mode: BNMode = BNMode.TRAIN
    checkpoint_every: int = 50
    seed: int = 0
    ignore_index: int = 255
    unlabelled_batch_size: int = 2
    lambda_u_max: float = 0.5
    device: str = "auto"
    trainable: Trainable = Trainable.ALL
    l2sp_alpha: float = 0.01
    retention_weight: float = 2.0
    retention_batch_size: int = 2
    retention_loss: RetentionLoss = RetentionLoss.DICE_CE
    retention_draw: RetentionDraw = RetentionDraw.CASE
    lora_rank: int = 8
    lora_alpha: int = 16


# The default retention recipe, chosen by `assft bench diagnose` (docs/benchmarks.md): BatchNorm frozen
# and f_0's retention targets (class quantile 0.5, 2 patches a step) kept the most of f_0 with the
# largest mean gain of the recipes tried; with the labelled loss on those targets (Dice + CE,
# TrainConfig.retention_loss) at λ_r 1 (TrainConfig.retention_weight) the mean rose again (0.576 ->
# 0.584) and every other site's drop shrank (fourth look). Keeping 80% of each class's voxels as
# targets (FinetuneConfig.retention_class_quantile 0.2) at λ_r 2 took C's drop from -0.025 to
# -0.013 and A's from -0.020 to +0.004 (fifth look). ("paper",) is ASSFT as published.
DEFAULT_RECIPE: tuple[Recipe, ...] = (Recipe.FROZEN_BN, Recipe.RETENTION)


@dataclass
class FinetuneConfig:
    """How a round fine-tunes without forgetting what f_0 knew (METHOD.md §6).

    Attributes:
        recipe: the retention recipes in force, combinable, e.g. ("adabn", "wise"); ("paper",)
            is the method as published, with no retention; default `DEFAULT_RECIPE`.
        retention_tau: τ_r, f_0's voxel confidence below which a retention target is ignored.
        retention_fraction: fraction of U \\ L kept as retention cases, by f_0's ROI confidence c.
        retention_class_quantile: per predicted class, voxels at least as confident as this
            quantile of the class's confidences are kept even below τ_r (None: τ_r alone), so a
            structure f_0 is never 90% sure of (the demo's CSF) is retained too; 0.2 keeps the
            surer 80% of each class, its partial-volume rim included.
        wise_alpha: α_w of the weight interpolation (1 − α_w) θ_0 + α_w θ_t.
        lr: learning rate of a fine-tuning round (None: `TrainConfig.lr`, the pre-training rate);
            measured: a few-label round at 5e-4 drifts further from f_0 than at 1e-4.
    """

    recipe: tuple[Recipe, ...] = DEFAULT_RECIPE
    retention_tau: float = 0.9
    retention_fraction: float = 0.5
    retention_class_quantile: float | None = 0.2
    wise_alpha: float = 0.5
    lr: float | None = None

    def __post_init__(self) -> None:
        self.recipe = parse_recipe(self.recipe)

    def uses(self, recipe: Recipe) -> bool:
        """True when `recipe` is in force."""
        return recipe in self.recipe

    @property
    def label(self) -> str:
        """The recipe as one name, e.g. "adabn+wise" (file and run names)."""
        return "+".join(r.value for r in self.recipe)


def parse_recipe(value: Any) -> tuple[Recipe, ...]:
    """Recipes from "adabn+wise", "adabn,wise", a list of names or of `Recipe` (METHOD.md §6).

    `paper` alone means no retention; combined with others it is dropped. `decoder` and `lora`
    exclude each other (both decide which parameters train).

    Raises:
        ValueError: for an unknown name (the known ones are listed) or decoder with lora.
    """
    if isinstance(value, (str, Recipe)):
        value = [value]
    names: list[str] = []
    for item in value:
        raw = item.value if isinstance(item, Recipe) else str(item)
        names.extend(n.strip() for n in raw.replace(",", "+").split("+") if n.strip())
    try:
        recipes = tuple(dict.fromkeys(Recipe(n) for n in names))
    except ValueError:
        raise ValueError(f"unknown recipe in {value!r}; use one or more of {[r.value for r in Recipe]}, joined by '+'.") from None
    if len(recipes) > 1:
        recipes = tuple(r for r in recipes if r is not Recipe.PAPER)
    if not recipes:
        recipes = (Recipe.PAPER,)
    if Recipe.DECODER in recipes and Recipe.LORA in recipes:
        raise ValueError("recipes 'decoder' and 'lora' exclude each other: both decide which parameters train.")
    return recipes


@dataclass
class SSFTConfig:
    """Selective semi-supervised fine-tuning (METHOD.md §4).

    Attributes:
        mode: which unlabelled cases are admitted.
        supervised_steps: S, steps on L before the pseudo-labels are made.
        ssft_steps: S_u, steps on L ∪ R after.
        rho: fraction of U \\ L admitted, by reliability rank.
        c_min: optional absolute floor on confidence c (None: no floor).
        tau_v: voxel confidence below which a pseudo-label voxel is set to ignore.
    """

    mode: SSFTMode = SSFTMode.SELECTIVE
    supervised_steps: int = 200
    ssft_steps: int = 100
    rho: float = 0.5
    c_min: float | None = None
    tau_v: float = 0.90


@dataclass
class ProjectConfig:
    """Settings of one project (one store), saved in it.

    Attributes:
        budget: b, cases proposed per round.
        planned_rounds: T, rounds planned (schedules such as clasp_pe's β).
        strategy: the query strategy's registered name.
        seed: seeds the strategies' random choices.
        heartbeat_s: a running job writes its heartbeat to the store every this many seconds.
        stale_after_s: a job whose heartbeat is older than this (s) and whose process is gone is
            marked dead (resumable from its last checkpoint).
        score_test_cases: each round's scoring pass scores the test split too, for the
            dashboard's views (its heatmaps and embedding); never used by a query. Benchmarks turn
            it off: a quarter of the pass they would never look at.
        cache_limit_gb: largest size of the preprocessing cache in GB (10^9 bytes); entries used
            longest ago are deleted to fit (`session.cache`). None: no limit.
    """

    budget: int = 2
    planned_rounds: int = 5
    strategy: str = "assft"
    seed: int = 0
    heartbeat_s: float = 2.0
    stale_after_s: float = 30.0
    score_test_cases: bool = True
    cache_limit_gb: float | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ssft: SSFTConfig = field(default_factory=SSFTConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; enums become their values, tuples lists."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build config dataclass `cls` from `data` (the inverse of `to_dict`).

    Unknown keys raise ValueError naming them (a typo in a config file must not pass silently);
    missing keys take their defaults.

    Raises:
        ValueError: on unknown keys or a value that the field's type rejects.
    """
    import typing

    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{cls.__name__}.{key}")
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    import typing

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
    if origin is tuple:
        if args and isinstance(args[0], type) and issubclass(args[0], enum.Enum):
            if isinstance(value, str):
                return value  # e.g. a recipe "adabn+wise": the dataclass parses it
            return tuple(_coerce(args[0], v, where) for v in value)
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where) if len(non_none) == 1 else value
    return value
