"""ARCNN (Dong et al., 2015): feature extraction 9x9/64, enhancement 7x7/32, mapping 1x1/16,
reconstruction 5x5/out. Used as the seed baseline.

One change from the paper: the output is added to the input (global residual), which
makes the small network train in a CPU budget; the layers are the paper's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ARCNNConfig:
    in_channels: int = 1
    stride: int = 1


class ARCNN(nn.Module):
    def __init__(self, cfg: ARCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.in_channels
        self.body = nn.Sequential(
            nn.Conv2d(c, 64, 9, padding=4), nn.PReLU(64),
            nn.Conv2d(64, 32, 7, padding=3), nn.PReLU(32),
            nn.Conv2d(32, 16, 1), nn.PReLU(16),
            nn.Conv2d(16, c, 5, padding=2),
        )
        nn.init.zeros_(self.body[-1].weight)  # start as the identity: output = input
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
