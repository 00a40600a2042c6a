"""Losses: L1 + weighted L1 of the FFT difference (restorer), InfoNCE with a queue (encoder)."""
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
