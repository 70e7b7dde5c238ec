"""Resumable training checkpoints.

A checkpoint holds everything needed to continue a run bit for bit: model, optimiser and
scheduler states, RNG states, the step, the config and the progress history. It is written to a
temporary file in the same folder and renamed over the previous one (`os.replace`), so a run
killed mid-write leaves the last complete checkpoint intact.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assft_core.errors import ModelError
from assft_core.fsutil import atomic_write

CHECKPOINT_FORMAT = "assft-train-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"


def rng_states() -> dict[str, Any]:
    """Global RNG states (torch CPU and CUDA, numpy legacy, Python) in a `weights_only`-loadable form."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` captured (CUDA states only when CUDA is present)."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write a training checkpoint `state` (see `trainer.train`) atomically to `path`."""
    payload = {"format": CHECKPOINT_FORMAT, **state}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (a run folder means its `checkpoint.pt`).

    Loaded with `weights_only=True`: a checkpoint cannot run code.

    Returns:
        The state dict: format, step, model, optimizer, scheduler, rng, config, case_ids,
        history, elapsed_s, loss.

    Raises:
        ModelError: the file is missing, unreadable or not a training checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ModelError(f"{path}: no training checkpoint there. Fix: pass the run folder or its {CHECKPOINT_NAME}.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise ModelError(f"{path}: cannot read the checkpoint ({exc}). Fix: use an intact {CHECKPOINT_NAME}.") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(
            f"{path}: not an ASSFT training checkpoint (format {CHECKPOINT_FORMAT!r} expected). "
            "Fix: resume from a checkpoint written by `train`."
        )
    return state
