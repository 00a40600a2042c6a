"""Atomic training checkpoints: model, optimizer, scheduler, task state, RNG, step."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..filesystem import write_atomically


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save, atomically: readers never see half a file."""
    write_atomically(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def half_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its floating-point tensors in fp16 (loading casts them back)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def portable_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint small enough to commit: the model in fp16 and no optimizer moments (Adam
    starts them afresh on resume); step, schedule, history and generator states are kept."""
    return {**state, "model": half_tensors(state["model"]), "optimizer": None}
