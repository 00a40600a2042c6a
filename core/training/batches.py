"""Where training batches come from: drawn in the loop (deterministic, resumable to the bit), or
by ``DataLoader`` worker processes that crop and JPEG-compress beside the model (for GPUs)."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

Batch = tuple[torch.Tensor, ...]
Sample = Callable[[np.random.Generator], Batch]


class _Stream(IterableDataset):
    """An endless stream of batches; each worker draws from its own seeded generator."""

    def __init__(self, sample: Sample, seed: list[int]) -> None:
        self.sample, self.seed = sample, seed

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        rng = np.random.default_rng([*self.seed, info.id if info else 0])
        while True:
            yield self.sample(rng)


def batches(sample: Sample, rng: np.random.Generator, *, workers: int = 0, seed: list[int] | None = None,
            pin_memory: bool = False) -> Iterator[Batch]:
    """Batches from ``sample``. With ``workers`` = 0 they are drawn here from ``rng`` (whose state
    the checkpoint keeps); otherwise ``workers`` processes draw them from generators seeded by
    ``seed`` (seed, rank, step: a resumed run draws a fresh stream) and prefetch four each."""
    if workers <= 0:
        while True:
            yield sample(rng)
    loader = DataLoader(_Stream(sample, seed or [0]), batch_size=None, num_workers=workers,
                        pin_memory=pin_memory, prefetch_factor=4, persistent_workers=True)
    yield from loader
