"""Colour from a gray restorer: the JFIF luma of an RGB JPEG restored by a trained gray CRL
restorer (frozen while the rest trains), its chroma by a light branch that sees the restored luma.

Data flow (RGB in [0, 1]; JFIF Y in [0, 1], Cb and Cr centred on 0):

    Y, C  = ycc(x)                                    C: Cb, Cr as decoded (upsampled 4:2:0)
    Y'    = luma(Y)                                   the gray restorer, its encoder inside
    z     = unshuffle(Y', Y, C)                       at 1/2: where 4:2:0 stored the chroma
    C'    = C + shuffle(U-Net(z))                     compute at 1/2, 1/4 and 1/8
    y     = rgb(Y', C')

The branch's last convolution starts at zero, so an untrained model is the luma restorer under
the JPEG's chroma (``bench/luma_only.py`` measured that, and how much a perfect chroma adds).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..pixels import RGB_TO_YCC
from .blocks import conv3x3, res_blocks, upsample
from .restorer import Restorer, RestorerConfig


@dataclass(frozen=True)
class ChromaConfig:
    widths: tuple[int, int, int] = (32, 48, 64)  # at 1/2, 1/4 and 1/8 of the input's resolution
    enc_blocks: tuple[int, int, int] = (1, 2, 4)
    dec_blocks: tuple[int, int] = (2, 1)  # after joining the 1/4 and the 1/2 skip


@dataclass(frozen=True)
class LumaChromaConfig:
    luma: RestorerConfig = field(default_factory=RestorerConfig)
    chroma: ChromaConfig = field(default_factory=ChromaConfig)
    in_channels: int = 3

    @property
    def stride(self) -> int:
        return max(self.luma.stride, 8)

    @property
    def condition(self) -> bool:
        return self.luma.condition


class ChromaBranch(nn.Module):
    """Cb/Cr residual at full resolution from the restored and the JPEG's luma and the JPEG's
    chroma, computed by a small U-Net at 1/2, 1/4 and 1/8 resolution."""

    def __init__(self, cfg: ChromaConfig) -> None:
        super().__init__()
        c0, c1, c2 = cfg.widths
        self.head = conv3x3(4 * 4, c0)  # Y', Y, Cb, Cr unshuffled by 2
        self.enc0, self.enc1, self.enc2 = (res_blocks(c, n) for c, n in zip(cfg.widths, cfg.enc_blocks))
        self.down1 = nn.Sequential(conv3x3(c0, c1, stride=2), nn.LeakyReLU(0.2, inplace=True))
        self.down2 = nn.Sequential(conv3x3(c1, c2, stride=2), nn.LeakyReLU(0.2, inplace=True))
        self.up2, self.up1 = upsample(c2, c1), upsample(c1, c0)
        self.dec1, self.dec0 = res_blocks(c1, cfg.dec_blocks[0]), res_blocks(c0, cfg.dec_blocks[1])
        self.tail = nn.Conv2d(c0, 2 * 4, 1)
        nn.init.zeros_(self.tail.weight)  # start with the JPEG's chroma
        nn.init.zeros_(self.tail.bias)

    def forward(self, restored: torch.Tensor, luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
        z = F.pixel_unshuffle(torch.cat([restored, luma, chroma], 1), 2)
        d0 = self.enc0(self.head(z))
        d1 = self.enc1(self.down1(d0))
        d2 = self.enc2(self.down2(d1))
        b1 = self.dec1(self.up2(d2) + d1)
        b0 = self.dec0(self.up1(b1) + d0)
        return chroma + F.pixel_shuffle(self.tail(b0), 2)


def _colour_matrices() -> tuple[torch.Tensor, torch.Tensor]:
    to_ycc = torch.tensor(RGB_TO_YCC, dtype=torch.float32)
    return to_ycc, torch.linalg.inv(to_ycc)


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix`` (3x3) applied to the channels of ``x`` by products and sums, not a matrix
    product: autocast and OpenVINO's bf16 leave those in fp32, where a bf16 colour conversion
    cost 0.045 dB at Q90."""
    return (matrix.to(x.dtype)[None, :, :, None, None] * x[:, None]).sum(2)


class LumaChroma(nn.Module):
    """RGB restorer built on a gray one: ``luma`` restores Y, ``chroma`` restores Cb and Cr
    under it. ``frozen_part`` is what restorer training leaves as it is: the luma restorer
    (a chroma branch trains under it), or with ``luma_frozen`` off only the luma restorer's
    quality encoder (the whole colour model is fine-tuned)."""

    def __init__(self, cfg: LumaChromaConfig) -> None:
        super().__init__()
        if cfg.luma.in_channels != 1:
            raise ValueError("the luma restorer must be a gray (1-channel) restorer")
        self.cfg = cfg
        self.luma = Restorer(cfg.luma)
        self.chroma = ChromaBranch(cfg.chroma)
        to_ycc, to_rgb = _colour_matrices()
        self.register_buffer("to_ycc", to_ycc, persistent=False)
        self.register_buffer("to_rgb", to_rgb, persistent=False)
        self.luma_frozen = True

    @property
    def frozen_part(self) -> nn.Module | None:
        return self.luma if self.luma_frozen else self.luma.frozen_part

    def forward(self, x: torch.Tensor, tables: torch.Tensor | None = None) -> torch.Tensor:
        ycc = _mix(self.to_ycc, x)
        luma, chroma = ycc[:, :1], ycc[:, 1:]
        restored = self.luma(luma, tables)
        chroma = self.chroma(restored, luma, chroma)
        out = torch.cat([restored, chroma], 1)
        return _mix(self.to_rgb, out)


__all__ = ["ChromaBranch", "ChromaConfig", "LumaChroma", "LumaChromaConfig"]
