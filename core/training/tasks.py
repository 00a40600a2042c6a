"""What one training step computes, per stage: ``sample(rng)`` draws a batch (on the CPU, maybe
in a loader process), ``loss(batch, forward=None)`` computes the loss on the batch's device.
``forward`` is the model as trained (e.g. wrapped by DDP); the loop (``loop.fit``) drives both."""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import QualityEncoder
from .data import ContrastiveSampler, PairSampler
from .losses import info_nce, ranker_terms, ranking_loss, restoration_loss


class RestorationTask:
    """Stage 2 (and ARCNN): L1 + w·L1(FFT) on (JPEG, clean) patch pairs (and the JPEGs' tables
    for a restorer conditioned on them).

    A model's ``frozen_part`` (the CRL restorer's encoder, a luma-chroma model's gray restorer)
    is frozen (no grad, BatchNorm in eval mode) unless ``train_encoder`` is set (the paper's
    model-2 ablation). With a ``ranker`` (a trained,
    frozen quality ranker) its quality and feature terms join the loss with ``ranker_weight``.
    """

    def __init__(self, model: nn.Module, sampler: PairSampler, batch: int = 16,
                 fft_weight: float = 0.1, train_encoder: bool = False,
                 ranker: QualityEncoder | None = None, ranker_weight: float = 0.0) -> None:
        self.model, self.sampler, self.batch, self.fft_weight = model, sampler, batch, fft_weight
        self.frozen = None if train_encoder else getattr(model, "frozen_part", None)
        if self.frozen is not None:
            self.frozen.requires_grad_(False)
        self.ranker, self.ranker_weight = ranker, ranker_weight
        if ranker is not None:
            ranker.requires_grad_(False).eval()

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        self.model.train()
        if self.frozen is not None:
            self.frozen.eval()

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """(JPEG patches, clean patches[, tables])."""
        return self.sampler.sample(self.batch, rng)

    def loss(self, batch: tuple[torch.Tensor, ...],
             forward: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
        x, y, *tables = batch
        out = (self.model if forward is None else forward)(x, *tables)
        loss = restoration_loss(out, y, self.fft_weight)
        if self.ranker is not None:
            self.ranker.to(x.device)
            loss = loss + self.ranker_weight * ranker_terms(self.ranker, out, y)
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ContrastiveTask:
    """Stage 1, MoCo: query encoder, momentum key encoder, a queue of negative keys, InfoNCE.

    BatchNorm must not let a query see its key through batch statistics; as MoCo's
    single-machine "shuffle BN", keys are encoded in ``bn_groups`` shuffled sub-batches.
    Under DDP, ``gather`` collects every rank's keys before they enter the queue.
    ``same_tables``: every key written with the query's tables (the batch's, the hard keys, the
    queue's) is one of its positives (``--positives tables``; the sampler's key is one of them);
    with ``quality_span`` s, keys whose tables' IJG quality differs by d < s count as positives
    with weight 1 - d/s, so that the embedding orders the qualities rather than only telling
    them apart.
    """

    def __init__(self, encoder: QualityEncoder, sampler: ContrastiveSampler, batch: int = 32,
                 queue_size: int = 4096, momentum: float = 0.999, temperature: float = 0.2,
                 bn_groups: int = 2, gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 same_tables: bool = False, quality_span: float = 0.0) -> None:
        self.model, self.sampler, self.batch = encoder, sampler, batch
        encoder.quality_head.requires_grad_(False)  # fitted afterwards as a probe, not here
        self.key_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.momentum, self.temperature, self.bn_groups = momentum, temperature, bn_groups
        self.queue = F.normalize(torch.randn(queue_size, encoder.cfg.proj_dim), dim=1)
        self.queue_q = torch.full((queue_size,), -1, dtype=torch.long)  # the keys' qualities
        self.ptr = 0
        self.gather = gather
        self.same_tables, self.quality_span = same_tables, quality_span

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        self.model.train()
        self.key_encoder.train()

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for pk, pq in zip(self.key_encoder.parameters(), self.model.parameters()):
            pk.mul_(self.momentum).add_(pq.detach(), alpha=1 - self.momentum)
        for bk, bq in zip(self.key_encoder.buffers(), self.model.buffers()):
            bk.copy_(bq)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        perm = torch.randperm(x.shape[0], device=x.device)
        chunks = [self.key_encoder(c, project=True) for c in x[perm].chunk(self.bn_groups)]
        k = torch.empty_like(torch.cat(chunks))
        k[perm] = torch.cat(chunks)
        return k

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor, quality: torch.Tensor) -> None:
        if self.gather is not None:
            k = self.gather(k)
            quality = self.gather(quality.to(k.device, torch.float32)[:, None])[:, 0]
        n = k.shape[0]
        idx = (torch.arange(n) + self.ptr) % self.queue.shape[0]
        self.queue[idx] = k.detach().cpu().to(self.queue.dtype)
        self.queue_q[idx] = quality.detach().cpu().round().long()
        self.ptr = int((self.ptr + n) % self.queue.shape[0])

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """(query views, key views, hard negatives, qualities (batch, 2))."""
        return self.sampler.sample(self.batch, rng)

    def _same_tables(self, quality: torch.Tensor) -> torch.Tensor | None:
        """The weight of each logit (batch keys, hard keys, queue) as a positive of each query:
        1 for the query's tables, 1 - d/span for a quality d away; None unless ``same_tables``."""
        if not self.same_tables:
            return None
        cols = torch.cat([quality[:, 0], quality[:, 1], self.queue_q.to(quality.device)])
        same = (quality[:, :1] == cols[None]).float()
        if self.quality_span <= 0:
            return same
        near = (1 - (quality[:, :1] - cols[None]).abs() / self.quality_span).clamp(min=0)
        return torch.maximum(same, near * (cols[None] >= 0))

    def loss(self, batch: tuple[torch.Tensor, ...],
             forward: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
        xq, xk, xh, quality = batch
        self.key_encoder.to(xq.device)
        self._momentum_update()
        q = (self.model if forward is None else forward)(xq, project=True)
        k, hard = self._keys(torch.cat([xk, xh])).chunk(2)
        loss = info_nce(q.float(), k.float(), self.queue.to(xq.device, copy=True), self.temperature,
                        hard.float(), self._same_tables(quality.to(xq.device)))  # copy: enqueue edits
        self._enqueue(k, quality[:, 0])
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"key_encoder": self.key_encoder.state_dict(), "queue": self.queue,
                "queue_q": self.queue_q, "ptr": self.ptr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.key_encoder.load_state_dict(state["key_encoder"])
        self.queue = state["queue"]
        self.queue_q = state.get("queue_q", torch.full((len(self.queue),), -1, dtype=torch.long))
        self.ptr = state["ptr"]


class RankingTask:
    """The compression-quality ranker: a Siamese scorer (the encoder with its quality head as the
    score, the same weights for both crops) trained with the margin ranking loss on pairs of the
    same content at two qualities (the contrastive sampler's key and hard negative)."""

    def __init__(self, encoder: QualityEncoder, sampler: ContrastiveSampler, batch: int = 32,
                 margin: float = 0.5) -> None:
        self.model, self.sampler, self.batch, self.margin = encoder, sampler, batch, margin

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        self.model.train()

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """(query views, key views, hard negatives, qualities (batch, 2)); the ranker pairs each
        key with its hard negative: the same crop at another quality."""
        return self.sampler.sample(self.batch, rng)

    def loss(self, batch: tuple[torch.Tensor, ...],
             forward: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
        _, xk, xh, quality = batch
        score_k, score_h = (self.model if forward is None else forward)(torch.cat([xk, xh]), score=True).chunk(2)
        return ranking_loss(score_k, score_h, quality[:, 0], quality[:, 1], self.margin)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def trained_encoder(weights: str) -> QualityEncoder:
    """A trained CQE from its weights or checkpoint, or the encoder inside a trained restorer."""
    from ..registry import load_model

    encoder = load_model(weights)
    return encoder if isinstance(encoder, QualityEncoder) else encoder.encoder
