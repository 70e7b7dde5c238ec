"""The retention recipes of one round, put together (ASSFT Studio, METHOD.md §6).

The paper's round fine-tunes f_t on the few labelled scans; on the demo corpus a first round on two
unlike scans lowered the sites f_0 already handled. `RoundRetention` holds what a round needs to
keep f_0's knowledge, per `FinetuneConfig.recipe`:

- `adabn`: BatchNorm statistics re-estimated over all pool images after each training phase
  (`recalibration`);
- `l2sp`: the anchor θ_0 for the trainer's penalty (`anchoring.WeightAnchor`);
- `retention`: f_0's confident predictions on the unlabelled pool cases where f_0 is most
  confident (its ROI confidence c in the top `retention_fraction`), unsure voxels ignored
  (`τ_r`), trained alongside the labels with weight λ_r;
- `decoder` / `lora`: which parameters train (`TrainConfig.trainable`);
- `frozen_bn`: BatchNorm layers keep their running statistics and affine parameters
  (`TrainConfig.bn_mode` frozen, METHOD.md §5) — the statistics of f_0 throughout;
- `wise`: θ = (1 − α_w) θ_0 + α_w θ_t at the end of the round (`anchoring.interpolate_weights`).

Source-free throughout: only f_0's weights and target-pool images are used.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from assft_core.config import BNMode, FinetuneConfig, InferenceConfig, QueryConfig, Recipe, TrainConfig, Trainable
from assft_core.data.records import PreprocessedCase
from assft_core.data.stream import case_ids, case_lookup
from assft_core.errors import ModelError
from assft_core.fsutil import atomic_write_json
from assft_core.models.loaded import LoadedModel
from assft_core.models.outputs import ForwardOutputs
from assft_core.models.registry import get_backbone
from assft_core.query.scoring import score_cases
from assft_core.train.anchoring import WeightAnchor, interpolate_weights
from assft_core.train.data import TrainSample
from assft_core.train.spill import spill_samples
from assft_core.train.pseudo import load_pseudo_label, make_pseudo_label, save_pseudo_label
from assft_core.train.normalisation import keeps_something_frozen
from assft_core.train.recalibration import recalibrate_batchnorm

RETENTION_DIR = "retention"
TARGETS_REPORT = "targets.json"
_NEEDS_F0 = (Recipe.L2SP, Recipe.RETENTION, Recipe.WISE)


def needs_base_model(cfg: FinetuneConfig) -> bool:
    """True when the recipe reads f_0's weights (l2sp, retention, wise)."""
    return any(cfg.uses(r) for r in _NEEDS_F0)


@dataclass
class RoundRetention:
    """What one round's recipe needs, built once per round (`RoundRetention.build`).

    Attributes:
        cfg: the recipe and its settings.
        base: f_0 (frozen, eval mode), or None when the recipe does not read it.
        encoder: module names of the encoder stages (partial fine-tuning, LoRA).
        head: state-key prefixes of the class head.
        log: what each recipe step did, for the round's report (JSON-ready).
        freezable: f_t has normalisation state `frozen_bn` can keep (`keeps_something_frozen`).
    """

    cfg: FinetuneConfig
    base: LoadedModel | None
    encoder: list[str]
    head: tuple[str, ...]
    log: dict[str, Any] = field(default_factory=dict)
    freezable: bool = True

    @classmethod
    def build(cls, cfg: FinetuneConfig, network: nn.Module, card_backbone: str, base: LoadedModel | None) -> RoundRetention:
        """The round's retention context for `network` (f_t) of backbone `card_backbone`.

        Raises:
            ModelError: the recipe reads f_0 and `base` is None, or partial fine-tuning on a
                backbone that does not say where its encoder is.
        """
        if needs_base_model(cfg) and base is None:
            raise ModelError(f"recipe {cfg.label} needs f_0's weights, and none were given.")
        backbone = get_backbone(card_backbone)
        try:
            encoder, head = backbone.encoder_stages(network), tuple(backbone.head_prefixes(network))
        except NotImplementedError:
            encoder, head = [], ()
        if (cfg.uses(Recipe.DECODER) or cfg.uses(Recipe.LORA)) and not encoder:
            raise ModelError(
                f"recipe {cfg.label} trains part of the network, but backbone {card_backbone!r} does not say where "
                "its encoder is. Fix: use recipe 'paper' or 'adabn'."
            )
        return cls(cfg, base, list(encoder), head, {"recipe": cfg.label}, keeps_something_frozen(network))

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        """`train_cfg` with the parameters the recipe trains (`decoder`, `lora`, else all),
        BatchNorm frozen with `frozen_bn` (its statistics and affine parameters kept), and the
        round's learning rate (`FinetuneConfig.lr`, when set)."""
        trainable = Trainable.ALL
        if self.cfg.uses(Recipe.DECODER):
            trainable = Trainable.DECODER
        elif self.cfg.uses(Recipe.LORA):
            trainable = Trainable.LORA
        bn_mode = train_cfg.bn_mode
        if self.cfg.uses(Recipe.FROZEN_BN):
            # The default recipe must not fail a network whose normalisation stores nothing (MONAI's
            # default InstanceNorm): there `train` is what frozen would do, and the round says so.
            bn_mode = BNMode.FROZEN if self.freezable else train_cfg.bn_mode
            self.log["frozen_bn"] = "kept f_0's normalisation statistics and affine parameters" if self.freezable else (
                "nothing to keep: the network's normalisation layers store no statistics or affine parameters, "
                "so they were trained as they are"
            )
        lr = train_cfg.lr if self.cfg.lr is None else self.cfg.lr
        return dataclasses.replace(train_cfg, trainable=trainable, bn_mode=bn_mode, lr=lr)

    def trainer_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments of `train` (an L2-SP anchor, the encoder names); empty for the
        paper's recipe, so any `train_fn` with `train`'s signature still works."""
        kwargs: dict[str, Any] = {}
        if self.cfg.uses(Recipe.L2SP):
            assert self.base is not None
            kwargs["anchor"] = WeightAnchor.of(self.base.network, self.head, has_head=self.base.has_head)
        if self.cfg.uses(Recipe.DECODER) or self.cfg.uses(Recipe.LORA):
            kwargs["encoder"] = self.encoder
        return kwargs

    def retention_targets(
        self,
        unlabelled: Sequence[PreprocessedCase],
        *,
        query_cfg: QueryConfig,
        infer_cfg: InferenceConfig,
        ignore_index: int,
        folder: Path,
        spill_dir: Path,
        on_scored: Callable[[int, int | None, str], None] | None = None,
    ) -> list[TrainSample]:
        """f_0's retention targets on the unlabelled cases where f_0 is most confident.

        One scoring pass of f_0 per unlabelled case (c and the softmax from the same pass); the top
        `retention_fraction` by c keep their target: argmax of f_0 with voxels of
        `max_k p_k < τ_r` set to `ignore_index`. Written under `folder` (`<case>.npz`,
        `targets.json` last), and read back from there when the same cases were done before.
        The samples are made one case at a time and kept memory-mapped in `spill_dir`
        (`train.spill`), so memory stays flat in the number of retention cases.

        Returns:
            The retention samples; empty without the `retention` recipe, without unlabelled cases,
            or when f_0 has no head for the target classes (the log says so: the default recipe
            must not fail the first round of a model whose head was re-initialised).
        """
        if not self.cfg.uses(Recipe.RETENTION) or not len(unlabelled):
            return []
        assert self.base is not None
        if not self.base.has_head:  # a re-initialised head predicts nothing worth keeping
            self.log["retention"] = {"skipped": "f_0 has no head for the target classes yet, so it has no predictions "
                                                "to keep; the round trained on the labels alone"}
            return []
        by_id = case_lookup(unlabelled)  # a streamed pool makes only the kept cases again
        report_path = folder / TARGETS_REPORT
        kept = self._saved_targets(report_path, sorted(case_ids(unlabelled)))
        if kept is None:
            kept = self._make_targets(unlabelled, query_cfg, infer_cfg, ignore_index, folder, on_scored)
        self.log["retention"] = json.loads(report_path.read_text(encoding="utf-8"))

        def sample(cid: str) -> TrainSample:
            case = by_id(cid)
            return TrainSample(cid, case.image, load_pseudo_label(folder, cid).label, group=case.site)

        return spill_samples((sample(cid) for cid in kept), spill_dir)

    def _saved_targets(self, report_path: Path, unlabelled_ids: list[str]) -> list[str] | None:
        if not report_path.is_file():
            return None
        saved = json.loads(report_path.read_text(encoding="utf-8"))
        same = (
            saved.get("unlabelled_ids") == unlabelled_ids
            and saved.get("tau_r") == self.cfg.retention_tau
            and saved.get("fraction") == self.cfg.retention_fraction
            and saved.get("class_quantile") == self.cfg.retention_class_quantile
        )
        return list(saved["kept_ids"]) if same else None

    def _make_targets(
        self,
        unlabelled: Sequence[PreprocessedCase],
        query_cfg: QueryConfig,
        infer_cfg: InferenceConfig,
        ignore_index: int,
        folder: Path,
        on_scored: Callable[[int, int | None, str], None] | None,
    ) -> list[str]:
        assert self.base is not None
        kept_fraction: dict[str, float] = {}

        def on_case(case: PreprocessedCase, out: ForwardOutputs) -> None:
            if out.probs is None:
                raise ModelError("f_0 gave no softmax for the target classes, so it cannot supply retention targets.")
            target = make_pseudo_label(
                out.probs, self.cfg.retention_tau, ignore_index, case_id=case.case_id,
                class_quantile=self.cfg.retention_class_quantile,
            )
            save_pseudo_label(folder, target)
            kept_fraction[case.case_id] = target.stats.kept_fraction

        model = dataclasses.replace(self.base, source_stats=None, source_stats_origin="none")
        table = score_cases(
            model, unlabelled, model_tag="f0_retention", cfg=query_cfg, infer_cfg=infer_cfg,
            out_dir=folder / "scores", cache_key=None, on_progress=on_scored, on_case=on_case,
        )
        ids = case_ids(unlabelled)
        confidence = table.column("confidence")[table.indices(ids)]
        n_keep = max(1, int(np.ceil(self.cfg.retention_fraction * len(ids))))
        order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
        kept = [ids[i] for i in order[:n_keep]]
        report = {
            "tau_r": self.cfg.retention_tau,
            "fraction": self.cfg.retention_fraction,
            "class_quantile": self.cfg.retention_class_quantile,
            "unlabelled_ids": sorted(ids),
            "kept_ids": kept,
            "confidence": {cid: float(c) for cid, c in zip(ids, confidence)},
            "kept_voxel_fraction": {cid: kept_fraction[cid] for cid in kept},
        }
        atomic_write_json(folder / TARGETS_REPORT, report)  # last: marks it done
        return kept

    def recalibrate(
        self,
        network: nn.Module,
        cases: Sequence[PreprocessedCase],
        infer_cfg: InferenceConfig,
        *,
        when: str,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """AdaBN over `cases` (every pool case, labelled or not) when the recipe has `adabn`."""
        if not self.cfg.uses(Recipe.ADABN):
            return
        report = recalibrate_batchnorm(network, (c.image for c in cases), infer_cfg, should_stop=should_stop)
        self.log[f"adabn_{when}"] = report.to_dict()

    def finish(
        self,
        network: nn.Module,
        cases: Sequence[PreprocessedCase],
        infer_cfg: InferenceConfig,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """End of the round: WiSE-FT toward f_0 (`wise`), then AdaBN (`adabn`) on the result."""
        if self.cfg.uses(Recipe.WISE):
            assert self.base is not None
            keep = () if self.base.has_head else self.head
            with torch.no_grad():
                untouched = interpolate_weights(network, self.base.network.state_dict(), self.cfg.wise_alpha, keep=keep)
            self.log["wise"] = {"alpha": self.cfg.wise_alpha, "kept_from_f_t": untouched}
        self.recalibrate(network, cases, infer_cfg, when="end", should_stop=should_stop)
