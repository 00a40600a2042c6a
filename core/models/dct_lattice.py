"""What a JPEG's quantization leaves in its pixels, for the quality encoder: the 8x8 block DCT of
the luma (on the grid from the top-left) and, per coefficient, how close it sits to multiples
of a few step sizes. A coefficient quantized with step s is a multiple of s, so cos(2πc/s) is
1 for every one of them; content makes no such lattice. Computed in fp32 whatever the autocast:
bf16 cannot hold a coefficient to the nearest grey level."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..jpeg.block_dct import BLOCK, DCT
from ..pixels import LUMA_WEIGHTS

LATTICE_STEPS = (2.0, 4.0, 8.0, 16.0)


class DctLattice(nn.Module):
    """(N, C, H, W) in 0..1, H and W multiples of 8 -> (N, 64 x (1 + len(steps)), H/8, W/8)."""

    def __init__(self, steps: tuple[float, ...] = LATTICE_STEPS) -> None:
        super().__init__()
        basis = torch.from_numpy(DCT)
        kernels = torch.einsum("ky,lx->klyx", basis, basis).reshape(BLOCK * BLOCK, 1, BLOCK, BLOCK)
        self.register_buffer("kernels", kernels, persistent=False)
        luma = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("luma", luma, persistent=False)
        self.steps = steps

    @property
    def channels(self) -> int:
        return BLOCK * BLOCK * (1 + len(self.steps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            x = x.float() * 255.0
            if x.shape[1] == 3:
                x = (x * self.luma).sum(1, keepdim=True)
            coef = F.conv2d(x - 128.0, self.kernels, stride=BLOCK)
            parts = [coef.sign() * coef.abs().log1p()]
            parts += [torch.cos(coef * (2 * math.pi / s)) for s in self.steps]
            return torch.cat(parts, 1)


class DctBranch(nn.Module):
    """The lattice, then 1x1 and two 3x3 conv-BN-ReLU layers, pooled to ``width`` numbers."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lattice = DctLattice()
        layers: list[nn.Module] = [nn.Conv2d(self.lattice.channels, width, 1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        for _ in range(2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.lattice(x)).mean(dim=(2, 3))
