"""Losses: L1 + weighted L1 of the FFT difference (restorer), InfoNCE with a queue (encoder), the
margin ranking loss (ranker) and a frozen ranker's quality and feature terms (restorer option)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def fft_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 of the real and imaginary parts of the 2-D FFT difference."""
    diff = torch.fft.rfft2(pred.float()) - torch.fft.rfft2(target.float())
    return torch.view_as_real(diff).abs().mean()


def restoration_loss(pred: torch.Tensor, target: torch.Tensor, fft_weight: float = 0.1) -> torch.Tensor:
    return F.l1_loss(pred, target) + fft_weight * fft_l1(pred, target)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float,
             hard: torch.Tensor | None = None, positives: torch.Tensor | None = None) -> torch.Tensor:
    """MoCo's InfoNCE: row i of ``k`` is the positive of ``q[i]``; negatives are the other keys
    of the batch, the ``hard`` keys (same content, other quality) and the ``queue`` (K, D).
    ``positives`` (N, columns: keys, hard keys, queue) weighs every positive of each query
    instead: the loss is then the weighted mean of their log-probabilities (supervised
    contrastive)."""
    parts = [q @ k.t()] + ([q @ hard.t()] if hard is not None else []) + [q @ queue.t()]
    logits = torch.cat(parts, dim=1) / temperature
    if positives is not None:
        log_p = logits.log_softmax(dim=1)
        return -((log_p * positives).sum(1) / positives.sum(1)).mean()
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, labels)


def ranking_loss(score_a: torch.Tensor, score_b: torch.Tensor, quality_a: torch.Tensor,
                 quality_b: torch.Tensor, margin: float) -> torch.Tensor:
    """Margin ranking: the crop of higher quality must score at least ``margin`` higher."""
    target = torch.sign(quality_a.float() - quality_b.float())
    return F.margin_ranking_loss(score_a.float(), score_b.float(), target, margin=margin)


def ranker_terms(ranker, restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """A frozen ranker's view of a restoration: how far its quality score falls below the clean
    image's (in units of 100 quality steps; no reward beyond the clean one) plus the L1 distance
    of their embeddings relative to the clean embedding's size (feature matching)."""
    n = restored.shape[0]
    emb = ranker(torch.cat([restored, clean])).embedding.float()
    e_restored, e_clean = emb[:n], emb[n:].detach()
    score = ranker.quality_head(emb).squeeze(1)
    quality = F.relu(score[n:].detach() - score[:n]).mean() / 100
    return quality + F.l1_loss(e_restored, e_clean) / (e_clean.abs().mean() + 1e-6)
