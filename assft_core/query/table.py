"""`ScoreTable`: the stored scores of one model over a set of cases; what strategies read.

One row per case (ASSFT, METHOD.md §0): KL per layer, embedding z, ASD, per-class entropies,
confidence c, whole-volume entropy, foreground fraction. KG needs the pool median, so it is
computed here from the pool ids, never stored per case. Per-case maps (uint8 argmax, float16
entropy, affine on the preprocessed grid) stay in one `.npz` per case and are read on demand.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assft_core.errors import StateError
from assft_core.fsutil import atomic_savez, atomic_write_text
from assft_core.query.metrics import knowledge_gap

TABLE_JSON = "score_table.json"
TABLE_NPZ = "score_table.npz"
CASES_DIR = "cases"
FORMAT_VERSION = 1

# Plain words shown in picks and the UI when a term of the method cannot be computed.
NO_SOURCE_STATS = "no source statistics in the checkpoint: KG ≡ 1 (DKD reduces to diversity)"
NO_HEAD = "no segmentation head for the target classes: ASD unavailable (â ≡ 1)"
NO_EMBEDDING = "no encoder embedding (e.g. TorchScript): diversity unavailable (δ ≡ 1)"


@dataclass
class CaseScores:
    """The scalar scores of one case under one model (one row of a ScoreTable).

    Attributes:
        case_id: the case.
        site: the case's site (per-site reporting).
        cache_key: what these scores were computed from (model, preprocessing, case content).
        kl: (S,) KL_s per encoder normalisation layer (empty without source statistics).
        embedding: (E,) L2-normalised z, or None without an embedding.
        asd: ASD, NaN without a head.
        class_entropy: (K−1,) mean H per foreground class ROI, NaN where absent (empty without a head).
        confidence: c, NaN without a head.
        mean_entropy: whole-volume mean H, NaN without a head.
        fg_fraction: predicted foreground fraction, NaN without a head.
        used_fallback: the ASD ROI was the top-q fallback (nothing predicted as foreground).
    """

    case_id: str
    site: str
    cache_key: str
    kl: np.ndarray
    embedding: np.ndarray | None
    asd: float = float("nan")
    class_entropy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    confidence: float = float("nan")
    mean_entropy: float = float("nan")
    fg_fraction: float = float("nan")
    used_fallback: bool = False


@dataclass
class CaseArrays:
    """Per-case maps on the preprocessed grid (the viewer's overlays).

    Attributes:
        argmax: (D, H, W) uint8 predicted labels, or None without a head.
        entropy: (D, H, W) float16 normalised entropy, or None without a head.
        affine: (4, 4) voxel -> world (RAS, mm) of the preprocessed grid.
    """

    argmax: np.ndarray | None
    entropy: np.ndarray | None
    affine: np.ndarray


@dataclass
class Availability:
    """Which terms of the method this model supports.

    Attributes:
        source_stats: the checkpoint carries source statistics (else KG ≡ 1).
        source_stats_origin: where they came from ("file", "batchnorm" or "none").
        head: the model predicts the target classes (else ASD, c, entropies unavailable).
        embedding: the model yields z (else DIV unavailable).
    """

    source_stats: bool
    source_stats_origin: str
    head: bool
    embedding: bool

    def unavailable_terms(self) -> list[str]:
        """Plain-words notes for every term this model cannot compute."""
        notes = []
        if not self.source_stats:
            notes.append(NO_SOURCE_STATS)
        if not self.head:
            notes.append(NO_HEAD)
        if not self.embedding:
            notes.append(NO_EMBEDDING)
        return notes


class ScoreTable:
    """Scores of one model (`model_tag`) over a set of cases, one row per case.

    Args:
        model_tag: which model scored (e.g. "f0", "round2").
        rows: one `CaseScores` per case, unique ids.
        layers: names of the S normalisation layers, in `CaseScores.kl` order.
        availability: which terms the model supports.
        arrays_dir: folder of the per-case `<case_id>.npz` maps (None: none stored).

    Raises:
        ValueError: on duplicate case ids or rows of inconsistent width.
    """

    def __init__(
        self,
        model_tag: str,
        rows: list[CaseScores],
        layers: list[str],
        availability: Availability,
        arrays_dir: Path | None = None,
    ) -> None:
        ids = [r.case_id for r in rows]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate case ids in score table {model_tag!r}")
        if any(len(r.kl) != len(layers) for r in rows):
            raise ValueError(f"score table {model_tag!r}: every row needs one KL per layer {layers}")
        self.model_tag = model_tag
        self.rows = list(rows)
        self.layers = list(layers)
        self.availability = availability
        self.arrays_dir = Path(arrays_dir) if arrays_dir is not None else None
        self._index = {cid: i for i, cid in enumerate(ids)}

    # -- lookup ---------------------------------------------------------------------------------
    @property
    def case_ids(self) -> list[str]:
        """Case ids in row order."""
        return [r.case_id for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._index

    def indices(self, case_ids: list[str] | tuple[str, ...]) -> np.ndarray:
        """Row indices of `case_ids`.

        Raises:
            StateError: naming the cases that this table has not scored.
        """
        missing = [c for c in case_ids if c not in self._index]
        if missing:
            raise StateError(
                f"score table {self.model_tag!r} has no scores for {missing[:5]}"
                f"{' …' if len(missing) > 5 else ''}; run the scoring pass over these cases first"
            )
        return np.array([self._index[c] for c in case_ids], dtype=np.int64)

    # -- columns (N,) or (N, ·) -----------------------------------------------------------------
    @property
    def kl(self) -> np.ndarray:
        """(N, S) KL_s per case and layer."""
        return np.array([r.kl for r in self.rows], dtype=np.float64).reshape(len(self.rows), len(self.layers))

    @property
    def embeddings(self) -> np.ndarray | None:
        """(N, E) z per case, or None when the model yields no embedding."""
        if not self.availability.embedding:
            return None
        return np.stack([np.asarray(r.embedding, dtype=np.float64) for r in self.rows]) if self.rows else None

    def column(self, name: str) -> np.ndarray:
        """(N,) float64 scalar column: asd, confidence, mean_entropy or fg_fraction."""
        if name not in ("asd", "confidence", "mean_entropy", "fg_fraction"):
            raise KeyError(name)
        return np.array([getattr(r, name) for r in self.rows], dtype=np.float64)

    @property
    def class_entropy(self) -> np.ndarray:
        """(N, K−1) mean H per foreground class ROI, NaN where the class is not predicted."""
        width = max((len(r.class_entropy) for r in self.rows), default=0)
        return np.array(
            [np.asarray(r.class_entropy, dtype=np.float64) for r in self.rows], dtype=np.float64
        ).reshape(len(self.rows), width)

    def knowledge_gap(self, pool_ids: list[str] | tuple[str, ...]) -> np.ndarray:
        """(N,) KG per row, each layer divided by its median over `pool_ids` (METHOD.md §1).

        Returns ones when the model has no source statistics (KG ≡ 1).
        """
        if not self.availability.source_stats:
            return np.ones(len(self.rows))
        mask = np.zeros(len(self.rows), dtype=bool)
        mask[self.indices(list(pool_ids))] = True
        return knowledge_gap(self.kl, mask)

    def unavailable_terms(self) -> list[str]:
        """Plain-words notes for every term this model cannot compute."""
        return self.availability.unavailable_terms()

    def to_frame(self, pool_ids: list[str] | tuple[str, ...] | None = None):  # -> pandas.DataFrame
        """One row per case with the scalar scores (and KG when `pool_ids` is given), for display."""
        import pandas as pd

        data: dict[str, object] = {"case_id": self.case_ids, "site": [r.site for r in self.rows]}
        for name in ("asd", "confidence", "mean_entropy", "fg_fraction"):
            data[name] = self.column(name)
        data["roi_fallback"] = [r.used_fallback for r in self.rows]
        for j, layer in enumerate(self.layers):
            data[f"kl:{layer}"] = self.kl[:, j]
        if pool_ids is not None:
            data["kg"] = self.knowledge_gap(pool_ids)
        return pd.DataFrame(data)

    # -- per-case maps --------------------------------------------------------------------------
    def case_arrays(self, case_id: str) -> CaseArrays:
        """The stored maps of one case (argmax, entropy, affine).

        Raises:
            StateError: when the case was not scored or its file is missing.
        """
        self.indices([case_id])
        path = case_file(self.arrays_dir, case_id) if self.arrays_dir is not None else None
        if path is None or not path.is_file():
            raise StateError(f"no stored maps for case {case_id!r} ({path}); score the case again")
        with np.load(path) as data:
            return CaseArrays(
                argmax=data["argmax"] if "argmax" in data else None,
                entropy=data["entropy"] if "entropy" in data else None,
                affine=data["affine"],
            )

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """Write the table to `directory` (JSON + npz, temp-then-rename); per-case maps are copied
        there when they live elsewhere. Returns `directory`."""
        directory = Path(directory)
        (directory / CASES_DIR).mkdir(parents=True, exist_ok=True)
        if self.arrays_dir is not None and self.arrays_dir.resolve() != (directory / CASES_DIR).resolve():
            for cid in self.case_ids:
                src = case_file(self.arrays_dir, cid)
                if src.is_file():
                    tmp = directory / CASES_DIR / f".{src.name}.tmp"
                    tmp.unlink(missing_ok=True)
                    try:
                        # Maps files are only ever replaced, never edited in place: a hard link is
                        # a safe, free copy (a query table per round would otherwise duplicate them).
                        os.link(src, tmp)
                    except OSError:
                        shutil.copyfile(src, tmp)
                    os.replace(tmp, directory / CASES_DIR / src.name)
        meta = {
            "format_version": FORMAT_VERSION,
            "model_tag": self.model_tag,
            "layers": self.layers,
            "availability": vars(self.availability),
            "cases": [
                {
                    "case_id": r.case_id,
                    "site": r.site,
                    "cache_key": r.cache_key,
                    "asd": _json_float(r.asd),
                    "confidence": _json_float(r.confidence),
                    "mean_entropy": _json_float(r.mean_entropy),
                    "fg_fraction": _json_float(r.fg_fraction),
                    "used_fallback": r.used_fallback,
                }
                for r in self.rows
            ],
        }
        arrays = {"kl": self.kl, "class_entropy": self.class_entropy}
        emb = self.embeddings
        if emb is not None:
            arrays["embedding"] = emb
        atomic_savez(directory / TABLE_NPZ, **arrays)
        atomic_write_text(directory / TABLE_JSON, json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: Path) -> ScoreTable:
        """Read a table written by `save`.

        Raises:
            StateError: when the folder holds no (or an unreadable) score table.
        """
        directory = Path(directory)
        try:
            meta = json.loads((directory / TABLE_JSON).read_text())
            data = dict(np.load(directory / TABLE_NPZ))
        except (OSError, ValueError) as exc:
            raise StateError(f"{directory}: no readable score table ({exc}); run the scoring pass again") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise StateError(f"{directory}: score table format {meta.get('format_version')}; score again")
        emb = data.get("embedding")
        rows = [
            CaseScores(
                case_id=c["case_id"],
                site=c["site"],
                cache_key=c["cache_key"],
                kl=data["kl"][i],
                embedding=emb[i] if emb is not None else None,
                asd=_from_json_float(c["asd"]),
                class_entropy=data["class_entropy"][i],
                confidence=_from_json_float(c["confidence"]),
                mean_entropy=_from_json_float(c["mean_entropy"]),
                fg_fraction=_from_json_float(c["fg_fraction"]),
                used_fallback=bool(c["used_fallback"]),
            )
            for i, c in enumerate(meta["cases"])
        ]
        return cls(meta["model_tag"], rows, meta["layers"], Availability(**meta["availability"]), directory / CASES_DIR)


def query_table(f0: ScoreTable, ft: ScoreTable, model_tag: str | None = None) -> ScoreTable:
    """The table the strategies read in round t: KG and z from f_0, the rest from f_t.

    ASSFT, METHOD.md §1–§2: the knowledge gap (KL_s per layer) and the embedding z measure a
    case against the pre-trained model's source knowledge and feature space, so they always come
    from f_0; ASD, per-class entropies, confidence, whole-volume entropy, foreground fraction and
    the per-case maps come from the current model f_t. At round 0 both tables are f_0's and the
    result equals f_0's table.

    Args:
        f0: scores of the pre-trained model f_0.
        ft: scores of the current model f_t over the same cases (it may hold more).
        model_tag: the new table's tag (default `"<f0 tag>+<ft tag>"`, or f_0's tag when both are
            the same table).

    Returns:
        A table with f_0's rows order and layers; availability: source statistics and embedding
        from f_0, head from f_t; per-case maps read from f_t's folder.

    Raises:
        StateError: when f_t has not scored every case of f_0 (names them).
    """
    rows_t = ft.indices(f0.case_ids)  # raises naming the missing cases
    rows: list[CaseScores] = []
    for r0, i in zip(f0.rows, rows_t):
        rt = ft.rows[int(i)]
        rows.append(
            CaseScores(
                case_id=r0.case_id,
                site=r0.site,
                cache_key=r0.cache_key if rt is r0 else f"{r0.cache_key}+{rt.cache_key}",
                kl=r0.kl,
                embedding=r0.embedding,
                asd=rt.asd,
                class_entropy=rt.class_entropy,
                confidence=rt.confidence,
                mean_entropy=rt.mean_entropy,
                fg_fraction=rt.fg_fraction,
                used_fallback=rt.used_fallback,
            )
        )
    availability = Availability(
        source_stats=f0.availability.source_stats,
        source_stats_origin=f0.availability.source_stats_origin,
        head=ft.availability.head,
        embedding=f0.availability.embedding,
    )
    tag = model_tag or (f0.model_tag if ft is f0 else f"{f0.model_tag}+{ft.model_tag}")
    return ScoreTable(tag, rows, f0.layers, availability, ft.arrays_dir)


def case_file(arrays_dir: Path, case_id: str) -> Path:
    """Path of one case's maps file in `arrays_dir`."""
    return Path(arrays_dir) / f"{case_id}.npz"


def _json_float(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _from_json_float(x: float | None) -> float:
    return float("nan") if x is None else float(x)
