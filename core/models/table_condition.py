"""Quantization-table conditioning (QGAC's side information, issue 20 §4): the 64 luma steps of
the JPEG's table, as the pixels are oriented, become a per-channel scale and shift of the
restorer's decoder features at each scale (FiLM). The last layer starts at zero, so a
conditioned model computes exactly what its blind parent did until training moves it
(``models.growth`` loads a blind restorer into a conditioned one)."""
from __future__ import annotations

import math

import torch
from torch import nn

TABLE_SIZE = 64  # 8x8 luma steps, row-major in the pixels' orientation


def table_features(steps: torch.Tensor) -> torch.Tensor:
    """(N, 64) steps 1..255 -> log2 scale, about 0..1 (steps differ by ratios, not amounts)."""
    return torch.log2(steps.float().clamp(1, 255)) / math.log2(255)


class TableCondition(nn.Module):
    """(N, 64) table steps -> one (scale, shift) pair of (N, C, 1, 1) per width in ``widths``."""

    def __init__(self, widths: tuple[int, ...], hidden: int = 64) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.mlp = nn.Sequential(nn.Linear(TABLE_SIZE, hidden), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, inplace=True))
        self.out = nn.Linear(hidden, 2 * sum(self.widths))
        self.reset_identity()

    def reset_identity(self) -> None:
        """Scale 1 and shift 0 for any table: the conditioned network equals the blind one."""
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, steps: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        film = self.out(self.mlp(table_features(steps))).float()
        pairs, i = [], 0
        for c in self.widths:
            scale, shift = film[:, i:i + c], film[:, i + c:i + 2 * c]
            pairs.append((1 + scale[:, :, None, None], shift[:, :, None, None]))
            i += 2 * c
        return pairs


def modulate(x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``x * scale + shift`` in ``x``'s dtype."""
    scale, shift = film
    return x * scale.to(x.dtype) + shift.to(x.dtype)
