"""Compression-quality embeddings: compute them, project them to 2-D, score how well they
order quality, and map image tiles to a quality heatmap."""
from __future__ import annotations

import sys
from collections.abc import Generator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..engines.device import resolve_device
from ..jpeg.codec import compress
from ..models.cqe import as_encoder
from .reading import encoder_input, tiles


class TileEmbeddings(NamedTuple):
    """The tiles of one image: embeddings (N x D), estimated qualities (N) and their grid."""

    embeddings: np.ndarray
    qualities: np.ndarray
    grid: tuple[int, int]  # (rows, cols)

    @property
    def heatmap(self) -> np.ndarray:
        return self.qualities.reshape(self.grid)


@torch.inference_mode()
def embed(model: nn.Module, images: Sequence[np.ndarray], device: str = "auto",
          batch: int = 32, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings N x D, estimated quality N) for equally sized crops (sides multiple of 16).

    Images of other sizes are embedded one at a time after cropping to the encoder's stride.
    ``progress`` shows a bar on stderr when embedding takes more than 2 s.
    """
    enc = as_encoder(model).eval()
    dev = resolve_device(device)
    enc.to(dev)
    s = enc.cfg.stride
    tensors = [torch.from_numpy(encoder_input(im, enc.cfg.in_channels)) for im in images]
    tensors = [t[:, : t.shape[1] // s * s, : t.shape[2] // s * s] for t in tensors]
    embs = []
    same = len({tuple(t.shape) for t in tensors}) == 1
    groups = [tensors[i:i + batch] for i in range(0, len(tensors), batch)] if same else [[t] for t in tensors]
    for g in tqdm(groups, desc="embed", unit="batch", disable=not progress, delay=2,
                  file=sys.stderr):
        embs.append(enc(torch.stack(g).to(dev)).embedding.float().cpu())
    e = torch.cat(embs)
    return e.numpy(), enc.quality(e.to(dev)).cpu().numpy()


def tile_embedding_steps(model: nn.Module, image: np.ndarray, tile: int, device: str = "auto",
                         chunk: int = 16) -> Generator[tuple[int, int], None, TileEmbeddings]:
    """Embed the tiles that cover ``image`` (:func:`.reading.tiles`) ``chunk`` at a time,
    yielding ``(tiles_done, tiles_total)`` between chunks (a worker may stop there); returns
    their embeddings, estimated qualities and grid."""
    parts, grid = tiles(image, tile, cover=True)
    chunks = []
    for start in range(0, len(parts), chunk):
        chunks.append(embed(model, parts[start:start + chunk], device))
        yield min(start + chunk, len(parts)), len(parts)
    embeddings, qualities = (np.concatenate(a) for a in zip(*chunks))
    return TileEmbeddings(embeddings, qualities.astype(np.float32), grid)


def quality_crops(images: list[np.ndarray], qualities, crop: int = 128) -> tuple[list[np.ndarray], np.ndarray]:
    """Centre crops of every image compressed at every quality, with the quality labels."""
    crops, labels = [], []
    for im in images:
        h, w = im.shape[:2]
        y, x = (h - crop) // 2 // 8 * 8, (w - crop) // 2 // 8 * 8
        for q in qualities:
            crops.append(compress(im, q)[y:y + crop, x:x + crop])
            labels.append(q)
    return crops, np.array(labels)


def project_2d(embeddings: np.ndarray, method: str = "auto", seed: int = 0) -> np.ndarray:
    """2-D projection: PCA, or t-SNE (``auto`` uses t-SNE from 30 points on)."""
    from sklearn.decomposition import PCA

    n = len(embeddings)
    if method == "auto":
        method = "tsne" if n >= 30 else "pca"
    if n < 3:
        return np.pad(embeddings[:, :2], ((0, 0), (0, max(0, 2 - embeddings.shape[1]))))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(embeddings)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(5, n // 4)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(embeddings)
    raise ValueError(f"unknown projection {method!r}; use pca, tsne or auto")


def quality_ordering(embeddings: np.ndarray, qualities: np.ndarray, k: int = 5,
                     groups: np.ndarray | None = None) -> dict[str, float]:
    """How well embeddings order quality: |Spearman ρ| of the first principal component with Q,
    and leave-one-out k-NN accuracy of the quality level, exact and within ±10 (chance = 1 /
    number of levels). With ``groups`` (the source image of each row), also the mean
    within-image ρ of the same PC1: the ordering of one picture's qualities, whatever its content."""
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA

    q = np.asarray(qualities)
    pc1 = PCA(n_components=1).fit_transform(embeddings)[:, 0]
    rho = float(spearmanr(pc1, q).statistic)
    votes = q[_neighbours(embeddings, embeddings, k, leave_one_out=True)]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    out = {"spearman_pc1": abs(rho), "knn_accuracy": float((pred == q).mean()),
           "knn_within_10": float((np.abs(pred - q) <= 10).mean()),
           "chance": 1.0 / len(np.unique(q))}
    if groups is not None:
        within = [spearmanr(pc1[groups == g], q[groups == g]).statistic for g in np.unique(groups)]
        out["spearman_within_image"] = abs(float(np.nanmean(within)))
    return out


def _neighbours(queries: np.ndarray, points: np.ndarray, k: int, leave_one_out: bool = False) -> np.ndarray:
    """Indices of the ``k`` nearest ``points`` of each query (squared Euclidean distance)."""
    d = ((queries[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    if leave_one_out:
        np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1)[:, :k]


def unseen_between(trained: np.ndarray, trained_q: np.ndarray, unseen: np.ndarray,
                   unseen_q: np.ndarray, k: int = 5) -> float:
    """Share of crops at qualities never trained on whose k-NN estimate (the mean quality of
    their nearest trained crops) lies between the trained levels around them (below the
    lowest or above the highest level for qualities outside the range)."""
    est = trained_q[_neighbours(unseen, trained, k)].mean(axis=1)
    levels = np.unique(trained_q).astype(float)
    below = np.array([levels[levels < u].max(initial=-np.inf) for u in unseen_q])
    above = np.array([levels[levels > u].min(initial=np.inf) for u in unseen_q])
    return float(((est >= below) & (est <= above)).mean())
