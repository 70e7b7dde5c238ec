"""`assft pretrain`: the demo's pre-trained model f_0, trained on a corpus's SOURCE split only.

A small BatchNorm MONAI UNet is trained with the project's one trainer on the `source_train`
cases, its source statistics are computed over those whole volumes by the scoring code
(`compute_source_stats`, METHOD.md §1 choice a), and it is evaluated on `source_test` and on the
target `test` split per site, so the domain gap the demo adapts across is shown, not assumed.
The result is a model folder (weights, card, statistics file, evaluation, notice), written
beside its destination and renamed into place.

The fingerprint (`demo_fingerprint`) records what made the model: the corpus builder's parameters
and version, the hash of the code that writes the corpus files and preprocesses them, the
preprocessing, network and training settings, plus the hash of the corpus files used.
`check_demo_model` recomputes every part but the file hash from the present code, without
rebuilding the corpus, and says "rerun `assft pretrain --force`" when the shipped model is stale.
The fingerprint also holds "inputs", the hash of the preprocessed arrays of every case used: a
change to the data code that leaves them bit-identical needs no retraining, and
`refresh_demo_fingerprint` (`assft pretrain --refresh-fingerprint`) proves that and rewrites only
the code and preprocessing entries.
Source: ASSFT, METHOD.md §1 and §5; ASSFT Studio DATA.md (600 steps reached source Dice 0.77).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import assft_core
from assft_core.config import InferenceConfig, IntensityAugment, Modality, PreprocessConfig, TrainConfig, from_dict, to_dict
from assft_core.data.demo import builder as demo_builder
from assft_core.data.importers import import_dataset
from assft_core.data.preprocess import PIPELINE_VERSION, preprocess_case
from assft_core.data.records import CaseRecord, DatasetManifest, Split
from assft_core.errors import DataError, ModelError
from assft_core.models.card import CARD_FILE, ModelCard
from assft_core.models.demo_paths import DEFAULT_CORPUS_DIR, DEFAULT_STEPS, DEMO_CORPUS, DEMO_MODEL_DIR  # noqa: F401
from assft_core.models.fingerprint import arrays_hash, files_hash, module_files, stale_fields
from assft_core.models.loaded import save_model, wrap_network
from assft_core.models.registry import get_backbone
from assft_core.models.source_stats import STATS_FILE, compute_source_stats, save_source_stats
from assft_core.train.data import TrainData, TrainSample
from assft_core.train.evaluate import EvalCaseStream, EvalReport, evaluate
from assft_core.train.trainer import ProgressEvent, train

BACKBONE = "unet"
EVALUATION_FILE = "evaluation.json"
NOTICE_FILE = "NOTICE"
# Code whose change alters the corpus bytes or the network's inputs. The builder's texts, preview
# and CLI are left out: editing a help string must not make the model stale.
DEMO_DATA_CODE: tuple[str, ...] = (
    "assft_core.data.demo.anatomy",
    "assft_core.data.demo.subjects",
    "assft_core.data.demo.sites",
    "assft_core.data.demo.plan",
    "assft_core.data.demo.builder",
    "assft_core.data.io",
    "assft_core.data.preprocess",
)
# Fingerprint entries recomputable without the corpus; "data" (file bytes) needs the corpus.
CHECKED_FIELDS = ("code", "corpus", "preprocess", "network", "train")
# Settings that leave the trained weights unchanged (up to float error).
# Settings that cannot change pre-trained weights: where the run is computed, and the fine-tuning
# recipes' knobs (METHOD.md §6), inert in pre-training (all parameters train, no anchor θ_0, no
# retention targets).
_RESULT_FREE_TRAIN = (
    "device", "checkpoint_every", "trainable", "l2sp_alpha", "retention_weight", "retention_batch_size",
    "retention_loss", "retention_draw", "lora_rank", "lora_alpha",
)
# Settings added after the shipped demo model was trained, with the value that reproduces the earlier
# code exactly (same draws, same weights): left out of the fingerprint at that value, so the shipped
# model stays current, and written when a pre-training run sets another value.
_ADDED_TRAIN_AT_EARLIER_BEHAVIOUR: dict[str, Any] = {"intensity_augment": IntensityAugment.JITTER.value}
STALE_MESSAGE = "the shipped demo model is stale: rerun `assft pretrain --force`"

MessageCallback = Callable[[str], None]


def demo_model_dir() -> Path:
    """Folder of the shipped demo model (`model_card.json`, `model.pt`, `source_stats.pt`, NOTICE).

    Load it with `assft_core.models.loaded.load_model(demo_model_dir())`.

    Raises:
        ModelError: when the folder or its card is missing (an install without package data).
    """
    if not (DEMO_MODEL_DIR / CARD_FILE).is_file():
        raise ModelError(
            f"{DEMO_MODEL_DIR}: the demo model is missing; reinstall assft-studio with its package data, "
            "or rebuild it with `assft pretrain`."
        )
    return DEMO_MODEL_DIR


def pretrain_train_config(steps: int = DEFAULT_STEPS, seed: int = 0, device: str = "auto") -> TrainConfig:
    """The training settings of `assft pretrain`: `TrainConfig` defaults with `steps` steps.

    AdamW 5e-4 with a cosine schedule, batch 2 × 64³ patches, flips and intensity jitter
    (pinned here, so a fine-tuning default of `TrainConfig.intensity_augment` leaves it alone).
    """
    return TrainConfig(steps=steps, seed=seed, device=device, intensity_augment=IntensityAugment.JITTER)


def backbone_kwargs() -> dict[str, Any]:
    """Constructor arguments of the pre-trained UNet: the registry's BatchNorm UNet, 2 residual units."""
    return to_dict(dict(get_backbone(BACKBONE).default_kwargs))


def demo_corpus_identity() -> dict[str, Any]:
    """What the present code builds as the demo corpus: builder version, parameters, template source."""
    return {"version": demo_builder.BUILDER_VERSION, **DEMO_CORPUS, "template": _template_source()}


def corpus_identity(corpus: Path) -> dict[str, Any] | None:
    """The builder parameters recorded in a demo corpus (`demo_build.json`), or None for other data.

    Raises:
        DataError: when `demo_build.json` exists but is unreadable.
    """
    manifest = Path(corpus) / demo_builder.MANIFEST
    if not manifest.is_file():
        return None
    try:
        found = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{manifest}: unreadable demo build record ({exc}); rebuild the corpus with `assft demo build`.") from None
    keys = ("version", *DEMO_CORPUS)
    return {**{k: found.get(k) for k in keys}, "template": _template_source()}


def _template_source() -> str:
    # The MNI152 template files ship inside nilearn: another release could hold other bytes.
    return f"nilearn {importlib.metadata.version('nilearn')}"


def demo_fingerprint(
    corpus: Mapping[str, Any] | None,
    preprocess: PreprocessConfig,
    train_cfg: TrainConfig,
    code_modules: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The recomputable part of a pre-trained model's fingerprint (used to write AND to check it).

    Args:
        corpus: `corpus_identity` of the training corpus (builder version, layout, seed, size,
            template source), or None for a corpus not built by `assft demo build`.
        preprocess: the preprocessing the model was trained with.
        train_cfg: the training settings.
        code_modules: modules whose source files shape the corpus and the network's inputs
            (default `DEMO_DATA_CODE`, read at call time).

    Returns:
        {"code": SHA-256 of those files, "code_modules", "corpus", "preprocess" (settings and
        pipeline version), "network" (backbone and kwargs), "train" (settings that change the
        weights)}; JSON-ready.

    Raises:
        ModelError: when a code module cannot be found.
    """
    code_modules = DEMO_DATA_CODE if code_modules is None else tuple(code_modules)
    code_root = Path(assft_core.__file__).resolve().parent.parent
    return {
        "code": files_hash(module_files(code_modules), code_root),
        "code_modules": list(code_modules),
        "corpus": dict(corpus) if corpus is not None else None,
        "preprocess": {**to_dict(preprocess), "pipeline_version": PIPELINE_VERSION},
        "network": {"backbone": BACKBONE, "kwargs": backbone_kwargs()},
        "train": {
            k: v
            for k, v in to_dict(train_cfg).items()
            if k not in _RESULT_FREE_TRAIN and _ADDED_TRAIN_AT_EARLIER_BEHAVIOUR.get(k, object()) != v
        },
    }


def corpus_data_hash(corpus: Path, cases: Sequence[CaseRecord]) -> str:
    """SHA-256 over the image and label files of `cases`, named relative to `corpus`."""
    files = [p for c in cases for p in (*c.image_paths, *([c.label_path] if c.label_path else []))]
    return files_hash(files, Path(corpus))


def preprocessed_inputs_hash(cases: Sequence[CaseRecord], preprocess: PreprocessConfig) -> str:
    """`arrays_hash` of what the present code preprocesses `cases` to: per case (by case id) the
    image (C, D, H, W), the label (1, D, H, W) or None and the preprocessed affine (4, 4).

    One case is in memory at a time. Raises DataError for unusable files.
    """

    def groups():  # noqa: ANN202 - generator
        for record in sorted(cases, key=lambda c: c.case_id):
            case = preprocess_case(record, preprocess)
            yield record.case_id, (case.image, case.label, case.affine)

    return arrays_hash(groups())


# The entries `refresh_demo_fingerprint` may rewrite: those of the code that makes the inputs.
REFRESHABLE_FIELDS = ("code", "code_modules", "preprocess")


def refresh_demo_fingerprint(model_dir: Path, corpus: Path) -> list[str]:
    """Rewrite a pre-trained model's code fingerprint when the present code gives it the same inputs.

    The card's "inputs" entry holds `preprocessed_inputs_hash` of every case the model used
    (source_train, source_test, test) and the hash of the corpus files it was taken on (the corpus
    the model was trained on, or a rebuild of it: float rounding can differ between machines).
    When `corpus` has those files, the corpus, network and training entries are current, and the
    present code preprocesses the cases to the same hash, bit for bit, the weights are what
    retraining would start from: they are kept, and only `REFRESHABLE_FIELDS` are rewritten.

    Args:
        model_dir: the model folder (its card is rewritten in place, atomically).
        corpus: the corpus the "inputs" hash was taken on (the demo corpus for the shipped model).

    Returns:
        The entries that changed (empty: already current).

    Raises:
        ModelError: when any check fails; the message says to retrain with `assft pretrain --force`.
    """
    card_path = Path(model_dir) / CARD_FILE
    card = ModelCard.load(model_dir)
    recorded = card.fingerprint
    inputs = recorded.get("inputs")
    retrain = "retrain with `assft pretrain --force` instead"
    if not isinstance(inputs, dict) or not {"hash", "data"} <= set(inputs):
        raise ModelError(f"{card_path}: the fingerprint holds no 'inputs' hash, so unchanged inputs cannot be shown; {retrain}.")
    used = _split_cases(import_dataset(corpus), (Split.SOURCE_TRAIN, Split.SOURCE_TEST, Split.TEST))
    if inputs["data"] != corpus_data_hash(corpus, used):
        raise ModelError(
            f"{corpus}: its files are not those the model's 'inputs' hash was taken on (a corpus built on another "
            f"machine can differ in float rounding); {retrain}."
        )
    try:
        train_cfg = from_dict(TrainConfig, dict(recorded.get("train") or {}))
    except ValueError as exc:
        raise ModelError(f"{card_path}: fingerprint 'train' is unreadable ({exc}); {retrain}.") from None
    expected = demo_fingerprint(corpus_identity(corpus), card.preprocess, train_cfg)
    others = [f for f in stale_fields(recorded, expected, CHECKED_FIELDS) if f not in REFRESHABLE_FIELDS]
    if others:
        raise ModelError(f"{card_path}: fingerprint entries {others} differ from the present code's, not only its code; {retrain}.")
    if preprocessed_inputs_hash(used, card.preprocess) != inputs["hash"]:
        raise ModelError(
            f"{card_path}: the present code preprocesses the {len(used)} cases of {corpus} to other arrays than "
            f"those the model was trained on; {retrain}."
        )
    changed = [f for f in REFRESHABLE_FIELDS if recorded.get(f) != expected[f]]
    if changed:
        card.fingerprint = {**recorded, **{f: expected[f] for f in REFRESHABLE_FIELDS}}
        card.save(card_path)
    return changed


def stale_demo_fields(model_dir: Path | None = None, *, corpus: Path | None = None) -> list[str]:
    """Fingerprint fields of a demo model that differ from what the present code would make.

    Args:
        model_dir: the model folder (default: the shipped demo model).
        corpus: optionally, a built demo corpus: then the hash of its files ("data") is compared
            too (slow: reads every file used).

    Returns:
        The differing fields among `CHECKED_FIELDS` (+ "data"); empty when the model is current.

    Raises:
        ModelError: when the model's card is missing or invalid.
    """
    card = ModelCard.load(model_dir if model_dir is not None else demo_model_dir())
    expected = demo_fingerprint(demo_corpus_identity(), PreprocessConfig(), pretrain_train_config())
    stale = stale_fields(card.fingerprint, expected, CHECKED_FIELDS)
    if corpus is not None:
        used = _split_cases(import_dataset(corpus), (Split.SOURCE_TRAIN, Split.SOURCE_TEST, Split.TEST))
        if card.fingerprint.get("data") != corpus_data_hash(corpus, used):
            stale.append("data")
    return stale


def check_demo_model(model_dir: Path | None = None, *, corpus: Path | None = None) -> None:
    """Fail when a demo model no longer matches the corpus/preprocessing code (see `stale_demo_fields`).

    Raises:
        ModelError: "the shipped demo model is stale: rerun `assft pretrain --force`", naming the
            fields that differ.
    """
    stale = stale_demo_fields(model_dir, corpus=corpus)
    if stale:
        raise ModelError(f"{STALE_MESSAGE} (changed since it was trained: {', '.join(stale)}).")


@dataclass
class PretrainResult:
    """What `pretrain` wrote and measured.

    Attributes:
        model_dir: the model folder.
        source_test: evaluation on the source site's held-out cases (None when there are none).
        target_test: evaluation on the target `test` split, per site (None when there are none).
        timings_s: wall time in seconds per phase ("preprocess", "train", "stats", "evaluate", "total").
    """

    model_dir: Path
    source_test: EvalReport | None
    target_test: EvalReport | None
    timings_s: dict[str, float]


def pretrain(
    corpus: Path,
    out: Path,
    *,
    train_cfg: TrainConfig | None = None,
    preprocess: PreprocessConfig | None = None,
    force: bool = False,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    on_message: MessageCallback | None = None,
) -> PretrainResult:
    """Pre-train a BatchNorm UNet on `corpus`'s `source_train` cases and write a model folder to `out`.

    Steps: preprocess the source_train cases; train (`train_cfg`, default `pretrain_train_config()`;
    ROI = patch size); source statistics over the whole source_train volumes with the scoring code
    (METHOD.md §1, choice a); evaluate on `source_test` and the target `test` split on native
    grids, per site (METHOD.md §5); write `model.pt`, `source_stats.pt`, `evaluation.json`,
    `NOTICE` (the corpus's NOTICE.txt, when it has one) and `model_card.json` (with the
    fingerprint and the Dice per site in its notes) to a temporary sibling of `out`, then rename.

    Args:
        corpus: a dataset folder with a dataset.json naming its classes (MSD or nnU-Net v2) and a
            cases.csv marking labelled source_train cases: the demo corpus (`assft demo build`) or
            the user's own source data.
        out: the model folder to create.
        train_cfg: training settings (steps, seed, device ...).
        preprocess: preprocessing (default: `PreprocessConfig` for the corpus's modality).
        force: replace `out` when it already holds a model folder.
        on_progress: called after every optimiser step.
        on_message: called with one line per phase.

    Returns:
        The folder written, both evaluations and the wall time per phase.

    Raises:
        ModelError: `out` exists (without `force`), is a file, or is a non-model folder.
        DataError: the corpus names no classes, has no labelled source_train case, or unusable files.
    """
    t_start = time.perf_counter()
    say = on_message or (lambda _msg: None)
    out = Path(out)
    _check_destination(out, force)
    train_cfg = train_cfg or pretrain_train_config()
    manifest = import_dataset(corpus)
    preprocess = preprocess or PreprocessConfig(modality=Modality(manifest.modality))
    if len(manifest.classes) < 2:
        raise DataError(
            f"{corpus}: the dataset names no classes, so the network's head cannot be sized. Give it a dataset.json "
            "(MSD or nnU-Net v2) with its labels."
        )
    source = _split_cases(manifest, (Split.SOURCE_TRAIN,))
    if not source or any(c.label_path is None for c in source):
        raise DataError(
            f"{corpus}: pre-training needs labelled cases with split 'source_train' in cases.csv; found "
            f"{len(source)} ({sum(c.label_path is None for c in source)} unlabelled). Mark the source cases, or "
            "build the demo corpus with `assft demo build`."
        )
    timings: dict[str, float] = {}

    t = time.perf_counter()
    say(f"preprocessing {len(source)} source_train case(s) of {corpus}")
    samples = [_train_sample(c, preprocess) for c in source]
    timings["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    kwargs = backbone_kwargs()
    torch.manual_seed(train_cfg.seed)  # the initial weights, like every other draw, follow the seed
    network = get_backbone(BACKBONE).make(samples[0].image.shape[0], len(manifest.classes), kwargs)
    say(f"training a {BACKBONE} {kwargs} for {train_cfg.steps} steps (batch {train_cfg.batch_size} x "
        f"{'x'.join(map(str, train_cfg.patch_size))} voxels)")
    with tempfile.TemporaryDirectory(prefix="assft-pretrain-") as run_dir:
        train(train_cfg, network, TrainData(labelled=samples), run_dir=Path(run_dir), on_progress=on_progress, phase="pretrain")
    timings["train"] = time.perf_counter() - t

    card = ModelCard(
        backbone=BACKBONE,
        in_channels=samples[0].image.shape[0],
        classes=manifest.classes,
        roi_size=tuple(train_cfg.patch_size),  # type: ignore[arg-type]
        backbone_kwargs=kwargs,
        preprocess=preprocess,
        source_stats=STATS_FILE,
    )
    infer_cfg = InferenceConfig(roi_size=card.roi_size, device=train_cfg.device)

    t = time.perf_counter()
    say(f"source statistics over {len(samples)} whole source_train volume(s)")
    stats = compute_source_stats(wrap_network(network, card), (torch.from_numpy(s.image) for s in samples), infer_cfg)
    timings["stats"] = time.perf_counter() - t

    t = time.perf_counter()
    reports = {split: _evaluate_split(network, manifest, split, preprocess, infer_cfg, say) for split in (Split.SOURCE_TEST, Split.TEST)}
    timings["evaluate"] = time.perf_counter() - t

    used = _split_cases(manifest, (Split.SOURCE_TRAIN, Split.SOURCE_TEST, Split.TEST))
    data_hash = corpus_data_hash(corpus, used)
    card.fingerprint = {
        **demo_fingerprint(corpus_identity(corpus), preprocess, train_cfg),
        "data": data_hash,
        "data_cases": len(used),
        "inputs": {"hash": preprocessed_inputs_hash(used, preprocess), "data": data_hash},
        "assft_version": assft_core.__version__,
        "torch_version": torch.__version__,
    }
    card.notes = _notes(manifest, len(source), train_cfg, reports[Split.SOURCE_TEST], reports[Split.TEST])
    timings["total"] = time.perf_counter() - t_start
    evaluation = {
        "source_test": reports[Split.SOURCE_TEST].to_dict() if reports[Split.SOURCE_TEST] else None,
        "target_test": reports[Split.TEST].to_dict() if reports[Split.TEST] else None,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "device": str(next(network.parameters()).device),
    }
    _write_model_folder(out, force, network, card, stats, evaluation, Path(corpus), len(source))
    say(f"model written to {out}")
    return PretrainResult(out, reports[Split.SOURCE_TEST], reports[Split.TEST], timings)


def _split_cases(manifest: DatasetManifest, splits: Sequence[Split]) -> list[CaseRecord]:
    return [c for c in manifest.cases if c.split in splits]


def _evaluate_split(
    network: torch.nn.Module,
    manifest: DatasetManifest,
    split: Split,
    preprocess: PreprocessConfig,
    infer_cfg: InferenceConfig,
    say: MessageCallback,
) -> EvalReport | None:
    """Native-grid Dice/HD95 per case and site over the labelled cases of `split` (None: none)."""
    labelled = [c for c in _split_cases(manifest, (split,)) if c.label_path is not None]
    say(f"evaluating on {len(labelled)} {split.value} case(s)")
    if not labelled:
        return None
    cases = EvalCaseStream(labelled, preprocess)  # one case in memory at a time
    return evaluate(network, cases, num_classes=len(manifest.classes), cfg=infer_cfg)


def _train_sample(record: CaseRecord, preprocess: PreprocessConfig) -> TrainSample:
    case = preprocess_case(record, preprocess)
    assert case.label is not None  # source cases were checked to have labels
    return TrainSample(case_id=record.case_id, image=case.image, label=case.label)


def _check_destination(out: Path, force: bool) -> None:
    """Refuse before any work when `out` would be overwritten (see `pretrain`'s Raises)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ModelError(f"{out}: is a file; give a folder for the model (it is never overwritten).")
    if not any(out.iterdir()):
        return
    if not (out / CARD_FILE).is_file():
        raise ModelError(
            f"{out}: folder holds files but no {CARD_FILE}; refusing to replace it even with --force. "
            "Give a new folder for the model."
        )
    if not force:
        raise ModelError(f"{out}: a model already exists there; pass --force to replace it, or give another --out.")


def _write_model_folder(
    out: Path,
    force: bool,
    network: torch.nn.Module,
    card: ModelCard,
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
    evaluation: dict[str, Any],
    corpus: Path,
    n_source: int,
) -> None:
    """Write the model into a temporary sibling of `out`, then rename it into place.

    With `force`, the old folder is first renamed aside and deleted only once the new one is in
    place, so a crash leaves either model, never half of one.
    """
    _check_destination(out, force)  # the destination may have changed during training
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        save_source_stats(stats, tmp / STATS_FILE, meta={"corpus": corpus.name, "split": Split.SOURCE_TRAIN.value, "cases": n_source})
        (tmp / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
        notice = corpus / "NOTICE.txt"
        if notice.is_file():
            (tmp / NOTICE_FILE).write_text(
                "These weights were trained by `assft pretrain` (ASSFT Studio) on data derived as described below; "
                "the notice travels with every copy.\n\n" + notice.read_text(encoding="utf-8"),
                encoding="utf-8",
            )
        save_model(network, card, tmp)  # writes the card last
        for path in tmp.iterdir():
            os.chmod(path, 0o644)  # temp-then-rename files are private; a model folder is shared
        replacing = out.exists() and any(out.iterdir())
        if replacing:
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if replacing:
                os.replace(old, out)  # put the previous model back
            raise
        if replacing:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def site_dice(report: EvalReport | None) -> dict[str, float | None]:
    """Site -> mean foreground Dice over that site's cases (empty for None)."""
    return {site: s.mean_dice for site, s in report.per_site.items()} if report else {}


def _notes(
    manifest: DatasetManifest, n_source: int, train_cfg: TrainConfig, source: EvalReport | None, target: EvalReport | None
) -> str:
    """The card's human summary: what was trained on what, and the measured Dice per site."""

    def fmt(report: EvalReport | None) -> str:
        if report is None:
            return "no labelled cases"
        return ", ".join(f"{site} {d:.2f}" if d is not None else f"{site} n/a" for site, d in site_dice(report).items())

    return (
        f"Trained by `assft pretrain` for {train_cfg.steps} steps on the {n_source} source_train case(s) of "
        f"{manifest.name} only (never on target sites). Mean foreground Dice on native grids: "
        f"source_test {fmt(source)}; target test {fmt(target)} (the domain gap). "
        f"Per case and class: {EVALUATION_FILE}. Licence of the training data: {NOTICE_FILE}."
    )


__all__ = [
    "DEFAULT_STEPS",
    "PretrainResult",
    "check_demo_model",
    "corpus_identity",
    "demo_corpus_identity",
    "demo_fingerprint",
    "preprocessed_inputs_hash",
    "refresh_demo_fingerprint",
    "demo_model_dir",
    "pretrain",
    "pretrain_train_config",
    "site_dice",
    "stale_demo_fields",
]
