"""Restoration network: frozen CQE features fused into an attention decoder.

Data flow (s = pixel-unshuffle factor; the encoder sees the same input):

    D0 = enc0(head(unshuffle(x)))                 at E0's scale
    D1 = enc1(down(D0)), D2 = enc2(down(D1))      at E1's and E2's scales
    E'1 = EFFM[E0, E1, E2], E'2 = EFFM[E1, E2, E3]
    B2 = dec2(attention(IFM(E'2, D2)))
    B1 = dec1(attention(IFM(E'1, up(B2) + D1)))
    B0 = blocks(IFM(proj(E0), up(B1) + D0))
    y  = x + shuffle(conv1x1(B0))                 global residual

``enc*``/``dec*`` are residual blocks on the contracting and expanding paths of this U-Net
(``enc_blocks``, ``dec_blocks``; none in the lite preset): the multi-scale presets put most of
their compute there, at 1/4 and 1/8 of the input's resolution (with ``unshuffle`` 2).

With ``condition`` the JPEG's luma table scales and shifts D2, the input of B1's attention and
B0's blocks per channel (:mod:`.table_condition`); ``forward`` then takes the table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import FeatureFusion, InvertibleFusion, LocalAttentionBlock, conv3x3, res_blocks, upsample
from .cqe import EncoderConfig, QualityEncoder
from .table_condition import TableCondition, modulate


@dataclass(frozen=True)
class RestorerConfig:
    in_channels: int = 1
    widths: tuple[int, int, int] = (64, 96, 128)
    unshuffle: int = 1
    top_blocks: int = 2
    mid_attention: int = 1
    bottom_attention: int = 2
    enc_blocks: tuple[int, int, int] = (0, 0, 0)  # residual blocks after D0, D1, D2
    dec_blocks: tuple[int, int] = (0, 0)  # residual blocks after B2's and B1's attention
    use_encoder: bool = True
    condition: bool = False  # takes the JPEG's luma table as side information
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    @property
    def stride(self) -> int:
        """Input sides are padded to a multiple of this."""
        return max(self.encoder.stride, self.unshuffle * 4)


class Restorer(nn.Module):
    """Blind JPEG restorer; ``encoder`` is the (frozen) compression quality encoder."""

    def __init__(self, cfg: RestorerConfig) -> None:
        super().__init__()
        if cfg.encoder.unshuffle != cfg.unshuffle or cfg.encoder.in_channels != cfg.in_channels:
            raise ValueError("encoder and restorer must share in_channels and unshuffle")
        self.cfg = cfg
        c0, c1, c2 = cfg.widths
        e = cfg.encoder.widths
        s2 = cfg.in_channels * cfg.unshuffle**2
        self.encoder = QualityEncoder(cfg.encoder) if cfg.use_encoder else None
        self.head = conv3x3(s2, c0)
        self.enc0, self.enc1, self.enc2 = (res_blocks(c, n) for c, n in zip(cfg.widths, cfg.enc_blocks))
        self.dec2, self.dec1 = res_blocks(c2, cfg.dec_blocks[0]), res_blocks(c1, cfg.dec_blocks[1])
        self.down1 = nn.Sequential(conv3x3(c0, c1, stride=2), nn.LeakyReLU(0.2, inplace=True))
        self.down2 = nn.Sequential(conv3x3(c1, c2, stride=2), nn.LeakyReLU(0.2, inplace=True))
        if cfg.use_encoder:
            self.proj0 = nn.Conv2d(e[0], c0, 1)
            self.effm1 = FeatureFusion(e[0], e[1], e[2], c1)
            self.effm2 = FeatureFusion(e[1], e[2], e[3], c2)
            self.ifm0, self.ifm1, self.ifm2 = InvertibleFusion(c0), InvertibleFusion(c1), InvertibleFusion(c2)
        self.bottom = nn.Sequential(*[LocalAttentionBlock(c2) for _ in range(cfg.bottom_attention)])
        self.up2 = upsample(c2, c1)
        self.mid = nn.Sequential(*[LocalAttentionBlock(c1) for _ in range(cfg.mid_attention)])
        self.up1 = upsample(c1, c0)
        self.top = res_blocks(c0, cfg.top_blocks)
        self.tail = nn.Conv2d(c0, s2, 1)
        self.condition = TableCondition((c2, c1, c0)) if cfg.condition else None
        nn.init.zeros_(self.tail.weight)  # start as the identity: output = input
        nn.init.zeros_(self.tail.bias)

    @property
    def frozen_part(self) -> nn.Module | None:
        """What restorer training keeps frozen: the compression quality encoder."""
        return self.encoder

    def forward(self, x: torch.Tensor, tables: torch.Tensor | None = None) -> torch.Tensor:
        """``tables``: (N, 64) luma steps of the JPEG each input came from, in the pixels'
        orientation; required by a conditioned model, ignored by a blind one."""
        s = self.cfg.unshuffle
        xs = F.pixel_unshuffle(x, s) if s > 1 else x
        d0 = self.enc0(self.head(xs))
        d1 = self.enc1(self.down1(d0))
        d2 = self.enc2(self.down2(d1))
        film = [None] * 3
        if self.condition is not None:
            if tables is None:
                raise ValueError("this restorer is conditioned on the JPEG's tables: pass them")
            film = self.condition(tables)
            d2 = modulate(d2, film[0])
        if self.encoder is not None:
            e0, e1, e2, e3 = self.encoder.features(x)
            b2 = self.ifm2(self.effm2(e1, e2, e3), d2)
        else:
            b2 = d2
        b2 = self.dec2(self.bottom(b2))
        b1 = self.up2(b2) + d1
        if self.encoder is not None:
            b1 = self.ifm1(self.effm1(e0, e1, e2), b1)
        if film[1] is not None:
            b1 = modulate(b1, film[1])
        b1 = self.dec1(self.mid(b1))
        b0 = self.up1(b1) + d0
        if self.encoder is not None:
            b0 = self.ifm0(self.proj0(e0), b0)
        if film[2] is not None:
            b0 = modulate(b0, film[2])
        out = self.tail(self.top(b0))
        return x + (F.pixel_shuffle(out, s) if s > 1 else out)
