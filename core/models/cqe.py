"""Compression quality encoder (CQE): multi-scale features E0..E3 and a pooled embedding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BNResBlock, conv3x3
from .dct_lattice import DctBranch


@dataclass(frozen=True)
class EncoderConfig:
    """Widths of E0..E3, residual blocks per scale, input pixel-unshuffle factor, and the width
    of the block-DCT branch (0: none, the paper's encoder; see :mod:`.dct_lattice`)."""

    in_channels: int = 1
    widths: tuple[int, int, int, int] = (64, 64, 128, 256)
    blocks_per_scale: int = 2
    unshuffle: int = 1
    proj_dim: int = 128
    dct_width: int = 0

    @property
    def embed_dim(self) -> int:
        return self.widths[-1] + self.dct_width

    @property
    def stride(self) -> int:
        """Input size must be a multiple of this (unshuffle times three /2 steps)."""
        return self.unshuffle * 8


class EncoderOutput(NamedTuple):
    features: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    embedding: torch.Tensor


class QualityEncoder(nn.Module):
    """3x3 conv, then per scale two BN residual blocks, /2 downsampling between scales.

    ``forward`` returns the four feature maps and the globally pooled embedding (with a DCT
    branch, the pooled E3 followed by the branch's output: the quantization lattice of the
    input, which content does not make);
    ``project`` is the MLP head used only by contrastive training; ``quality_head`` is a
    linear read-out of the embedding fitted after training (a probe, see training.validators);
    a ranker (the ``ranker`` training stage) trains it as its score, then has it refitted.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.widths
        self.stem = conv3x3(cfg.in_channels * cfg.unshuffle**2, w[0])
        self.scales = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, ch in enumerate(w):
            self.scales.append(nn.Sequential(*[BNResBlock(ch) for _ in range(cfg.blocks_per_scale)]))
            if i + 1 < len(w):
                self.downs.append(nn.Sequential(
                    conv3x3(ch, w[i + 1], stride=2, bias=False), nn.BatchNorm2d(w[i + 1]),
                    nn.ReLU(inplace=True)))
        self.head = nn.Sequential(
            nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.ReLU(inplace=True),
            nn.Linear(cfg.embed_dim, cfg.proj_dim))
        self.quality_head = nn.Linear(cfg.embed_dim, 1)
        self.dct = DctBranch(cfg.dct_width) if cfg.dct_width else None

    def forward(self, x: torch.Tensor, project: bool = False,
                score: bool = False) -> EncoderOutput | torch.Tensor:
        """Features and embedding; with ``project`` only the contrastive projection, with
        ``score`` only the quality head's output, (N,) (so that a DDP wrapper sees every
        trained parameter inside its forward)."""
        feats = self.features(x)
        embedding = feats[-1].mean(dim=(2, 3))
        if self.dct is not None:
            embedding = torch.cat([embedding, self.dct(x).to(embedding.dtype)], 1)
        if score:
            return self.quality_head(embedding).squeeze(1)
        return self.project(embedding) if project else EncoderOutput(tuple(feats), embedding)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """E0..E3 alone (what a restorer fuses; the DCT branch is not run)."""
        if self.cfg.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.cfg.unshuffle)
        h = self.stem(x)
        feats = []
        for i, scale in enumerate(self.scales):
            h = scale(h)
            feats.append(h)
            if i < len(self.downs):
                h = self.downs[i](h)
        return tuple(feats)

    def project(self, embedding: torch.Tensor) -> torch.Tensor:
        """L2-normalised projection for InfoNCE."""
        return F.normalize(self.head(embedding), dim=1)

    def quality(self, embedding: torch.Tensor) -> torch.Tensor:
        """Estimated JPEG quality factor (1..100) from the embedding."""
        return self.quality_head(embedding).squeeze(1).clamp(1, 100)


class QualityReadout(nn.Module):
    """A quality encoder's estimate as a module of its own, x -> (N,) JPEG quality 1..100
    (:meth:`QualityEncoder.quality` of its embedding): what reading a picture runs, and what
    is exported to OpenVINO."""

    def __init__(self, encoder: QualityEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = encoder.cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.quality(self.encoder(x).embedding)


def as_encoder(model: nn.Module) -> QualityEncoder:
    """The CQE of a restorer, or the encoder itself."""
    enc = model if isinstance(model, QualityEncoder) else getattr(model, "encoder", None)
    if enc is None:
        raise ValueError("this model has no compression quality encoder (ARCNN and encoder-free restorers have none)")
    return enc
