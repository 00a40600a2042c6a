"""Training checkpoints: model, optimizer, scheduler, task state, RNG, step; written atomically
(``save_checkpoint``) and, for committing, in a portable form."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..registry import float_tensors, int8_tensors, save_torch

save_checkpoint = save_torch  # a checkpoint is written as a weights file is: atomically


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint, full or portable, with its model's tensors in floating point."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    return {**state, "model": float_tensors(state["model"])}


def portable_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint small enough to commit: the model's kernels in int8 with a scale per output
    channel (``int8_tensors``; 0.7% RMS error on the campaign's weights) and no optimizer moments
    (Adam starts them afresh on resume); step, schedule, history and generator states are kept."""
    return {**state, "model": int8_tensors(state["model"]), "optimizer": None}
