"""Where a project's models, caches and scores live, and how the round engine loads them.

Layout under `artifacts/` (every file written temp-then-rename by the module that writes it):

    model/resolved/        f_0's card with its files resolved (projects made from a card file)
    cache/preprocessed/    preprocessed cases, keyed by file bytes + preprocessing settings
    scores/<tag>-<key>/    one ScoreTable per model (f0, round1, ...), keyed by the model's bytes
    rounds/round-NNN/      the query table the strategies read in round NNN
    models/round-NNN/      f_{t+1}, the model fine-tuned in round t = NNN (checkpoint + card)
    evaluations/           f_0's test-set evaluation (round 0 of the protocol, METHOD.md §5)

f_0 is the project's model as imported; f_t, the model used in round t, is the checkpoint of the
latest earlier round that trained one (ASSFT, METHOD.md §0).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assft_core.config import InferenceConfig, PreprocessConfig
from assft_core.data.records import CaseRecord, PreprocessedCase
from assft_core.data.stream import LazyCases
from assft_core.errors import ModelError, StateError
from assft_core.models.card import CARD_FILE, ModelCard
from assft_core.session import rounds
from assft_core.session.cache import limit_bytes_of, prune_cache, touch_entry
from assft_core.session.jobs import JobCancelled
from assft_core.session.project import CaseInfo, Project

PREPROCESS_CACHE = ("cache", "preprocessed")
SCORES_DIR = "scores"
ROUNDS_DIR = "rounds"
MODELS_DIR = "models"
EVALUATIONS_DIR = "evaluations"
BASE_TAG = "f0"


@dataclass(frozen=True)
class ModelRef:
    """A model of the project: its tag and the folder (or card file) it loads from.

    Attributes:
        tag: "f0" for the imported model, "round<t>" for f_t (trained in round t − 1).
        path: model folder holding `model_card.json`, or a card file.
    """

    tag: str
    path: Path


SUBSCRIPT_DIGITS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
ROUND_TAG = "round"


def model_symbol(t: int) -> str:
    """The symbol of the model after t rounds of fine-tuning: "f₀", "f₁", ... (METHOD.md §0)."""
    return "f" + str(int(t)).translate(SUBSCRIPT_DIGITS)


def model_name(t: int) -> str:
    """A model's one name on every screen, plain words first, the symbol in brackets.

    Args:
        t: rounds of fine-tuning behind the model; round t − 1 trained f_t (rounds count from 0).

    Returns:
        "pre-trained model (f₀)" for t = 0, "model fine-tuned in round 0 (f₁)" for t = 1, ...
    """
    if t == 0:
        return f"pre-trained model ({model_symbol(0)})"
    return f"model fine-tuned in round {t - 1} ({model_symbol(t)})"


def tag_name(tag: str) -> str:
    """`model_name` of a `ModelRef` tag ("f0", "round<t>"); any other tag as it is."""
    if tag == BASE_TAG:
        return model_name(0)
    number = tag.removeprefix(ROUND_TAG)
    return model_name(int(number)) if tag.startswith(ROUND_TAG) and number.isdigit() else tag


def base_model(project: Project) -> ModelRef:
    """f_0: the model the project was created with.

    A project made from a card file (`--model-config FILE`) keeps a frozen copy of the card; the
    files it names relative to itself are resolved against the user's original folder and the
    resolved card is written to `artifacts/model/resolved/`.

    Raises:
        ModelError: when the project records no model or its card is unreadable.
    """
    info = project.model
    if not info.get("path"):
        raise ModelError(f"{project.folder}: the project records no model; recreate it with `assft init --model DIR`.")
    if info.get("kind") == "dir":
        return ModelRef(BASE_TAG, Path(info["path"]))
    frozen = project.resolve(info["copy"]) if info.get("copy") else Path(info["path"])
    card = ModelCard.load(frozen)
    origin = Path(info["path"]).parent
    resolved = dataclasses.replace(
        card,
        checkpoint=str(card.resolve(origin, card.checkpoint)),
        source_stats=str(card.resolve(origin, card.source_stats)) if card.source_stats else None,
    )
    target = project.artifact_path("model", "resolved")
    target.mkdir(parents=True, exist_ok=True)
    if not (target / CARD_FILE).is_file() or ModelCard.load(target) != resolved:
        resolved.save(target / CARD_FILE)
    return ModelRef(BASE_TAG, target)


def model_for_round(project: Project, round_idx: int) -> ModelRef:
    """f_t for round t: the model trained in the latest round before t, else f_0."""
    trained = [r for r in rounds.list_rounds(project) if r.idx < round_idx and r.checkpoint]
    if not trained:
        return base_model(project)
    last = trained[-1]
    return ModelRef(f"round{last.idx + 1}", project.resolve(last.checkpoint))


def round_model_dir(project: Project, round_idx: int) -> Path:
    """Where f_{t+1}, the model fine-tuned in round t, is saved."""
    return project.artifact_path(MODELS_DIR, f"round-{round_idx:03d}")


def round_dir(project: Project, round_idx: int) -> Path:
    """The folder of round t's query table and other per-round files."""
    return project.artifact_path(ROUNDS_DIR, f"round-{round_idx:03d}")


def model_key(ref: ModelRef) -> str:
    """SHA-256 over a model's card and the bytes of its checkpoint and source-statistics file.

    The cache key of its scores: a changed checkpoint or card never reuses stale scores.

    Raises:
        ModelError: when the card or a file it names is missing.
    """
    folder = ref.path if ref.path.is_dir() else ref.path.parent
    card = ModelCard.load(ref.path)
    digest = hashlib.sha256(repr(sorted(card.to_json_dict().items())).encode())
    for name in (card.checkpoint, card.source_stats):
        if not name:
            continue
        path = card.resolve(folder, name)
        if not path.is_file():
            raise ModelError(f"{path}: file named by the model card {ref.path} is missing; restore it or fix the card.")
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def preprocess_settings(project: Project) -> PreprocessConfig:
    """The preprocessing every case gets: f_0's (the grid and normalisation the network knows)."""
    return ModelCard.load(base_model(project).path).preprocess


def inference_settings(project: Project, card: ModelCard, device: str) -> InferenceConfig:
    """The project's sliding-window settings with the card's ROI and the given device."""
    return dataclasses.replace(project.config.inference, roi_size=tuple(card.roi_size), device=device)


def preprocess_cache(project: Project) -> Path:
    """The folder of cached preprocessed cases (pruned to the project's limit when it has one)."""
    folder = project.artifact_path(*PREPROCESS_CACHE)
    limit = cache_limit_bytes(project)
    if limit is not None:
        prune_cache(folder, limit)
    return folder


def cache_limit_bytes(project: Project) -> int | None:
    """The project's preprocessing-cache limit in bytes (`ProjectConfig.cache_limit_gb`), or None."""
    return limit_bytes_of(project.config.cache_limit_gb)


def case_record(case: CaseInfo, label: Path | None = None) -> CaseRecord:
    """The data layer's record of a stored case, with `label` (None: image only)."""
    return CaseRecord(case.case_id, tuple(case.image_paths), label, case.site, case.split)


class CaseStream(LazyCases):
    """Preprocessed cases made one at a time as they are iterated (memory stays flat).

    A `LazyCases` (ids and sites known without loading; `len`, indexing, `by_id`) whose every
    case is preceded by a stop check, and whose cache entries are marked used (and the cache kept
    under `limit_bytes`, least recently used entries deleted first: `session.cache`).

    Args:
        records: the cases, in order.
        cfg: preprocessing settings.
        cache_dir: preprocessing cache folder (None: no cache).
        should_stop: polled before each case; True raises `JobCancelled`.
        limit_bytes: largest size of the cache folder (None: no limit).
    """

    def __init__(
        self,
        records: Sequence[CaseRecord],
        cfg: PreprocessConfig,
        cache_dir: Path | None,
        should_stop: Callable[[], bool] | None = None,
        limit_bytes: int | None = None,
    ) -> None:
        self.should_stop = should_stop
        self.limit_bytes = limit_bytes
        super().__init__(records, cfg, cache_dir, before_each=self._check_stop if should_stop is not None else None)

    def load(self, record: CaseRecord) -> PreprocessedCase:
        """Preprocess one case (from the cache when it is there) and keep the cache in its limit."""
        case = super().load(record)
        if self.cache_dir is not None:
            touch_entry(self.cache_dir, case.content_hash)
            if self.limit_bytes is not None:
                prune_cache(self.cache_dir, self.limit_bytes, keep=[case.content_hash])
        return case

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise JobCancelled()


def check_job_round(project: Project, params: Mapping[str, Any]) -> None:
    """Refuse a job whose "round" parameter is not the current round (the project moved on).

    Raises:
        StateError: naming both rounds.
    """
    wanted = params.get("round")
    if wanted is None:
        return
    current = rounds.current_round(project).idx
    if int(wanted) != current:
        raise StateError(
            f"this job was made for round {wanted}, but the project is in round {current}; start a new job."
        )


def model_fit_warnings(project: Project) -> list[str]:
    """Where the project's dataset differs from f_0's model card: spacing (median over the pool's
    image headers, in mm) or modality. Reads headers only.

    Raises:
        ModelError: when the project's model card is unreadable.
    """
    import numpy as np

    from assft_core.data.importers import import_dataset
    from assft_core.data.io import open_nifti, spacing_from_affine
    from assft_core.data.records import Split
    from assft_core.models.card import card_warnings
    from assft_core.session.project import list_cases

    card = ModelCard.load(base_model(project).path)
    spacings = [
        spacing_from_affine(open_nifti(case.image_paths[0]).affine) for case in list_cases(project, Split.POOL)
    ]
    spacing = tuple(float(v) for v in np.median(np.asarray(spacings), axis=0)) if spacings else None
    modality = import_dataset(project.dataset_root).modality if project.dataset_root else None
    return card_warnings(card, spacing, modality)  # type: ignore[arg-type]
