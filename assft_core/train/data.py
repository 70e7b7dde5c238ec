"""What the trainer trains on: preprocessed image/label pairs, labelled and pseudo-labelled."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from assft_core.errors import DataError


@dataclass(frozen=True)
class TrainSample:
    """One training case on the network's grid.

    Attributes:
        case_id: the case's id (recorded in checkpoints so a resume uses the same data).
        image: (C, D, H, W) float32, normalised intensities.
        label: (1, D, H, W) uint8 class indices; 255 (TrainConfig.ignore_index) = ignore.
        group: what a group-balanced draw balances over (the site of a retention case); "" for none.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    group: str = ""

    def __post_init__(self) -> None:
        if self.image.ndim != 4:
            raise DataError(
                f"case {self.case_id}: image has shape {self.image.shape}, expected (C, D, H, W). "
                "Fix: pass the preprocessed channel-first image."
            )
        if self.label.ndim != 4 or self.label.shape[0] != 1:
            raise DataError(
                f"case {self.case_id}: label has shape {self.label.shape}, expected (1, D, H, W). "
                "Fix: pass the preprocessed label with a leading channel axis."
            )
        if self.image.shape[1:] != self.label.shape[1:]:
            raise DataError(
                f"case {self.case_id}: image grid {self.image.shape[1:]} differs from label grid "
                f"{self.label.shape[1:]}. Fix: preprocess image and label together."
            )


@dataclass
class TrainData:
    """Training set of one run (ASSFT, METHOD.md §4).

    Attributes:
        labelled: expert-labelled cases L (at least one).
        pseudo: pseudo-labelled cases R for the SSFT phase; empty for supervised training.
        retained: retention targets, f_0's confident predictions on unlabelled pool cases
            (recipe `retention`, METHOD.md §6); empty otherwise.
    """

    labelled: list[TrainSample]
    pseudo: list[TrainSample] = field(default_factory=list)
    retained: list[TrainSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.labelled:
            raise DataError("no labelled case to train on. Fix: label at least one case first.")
        channels = {s.image.shape[0] for s in [*self.labelled, *self.pseudo, *self.retained]}
        if len(channels) > 1:
            raise DataError(
                f"training cases have different channel counts {sorted(channels)}. Fix: give every "
                "case the same input channels."
            )

    def case_ids(self) -> dict[str, list[str]]:
        """Ids of the labelled, pseudo-labelled (and retention) cases, in order (stored in checkpoints)."""
        ids = {"labelled": [s.case_id for s in self.labelled], "pseudo": [s.case_id for s in self.pseudo]}
        if self.retained:
            ids["retained"] = [s.case_id for s in self.retained]
        return ids
