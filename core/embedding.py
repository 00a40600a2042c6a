"""Compression-quality embeddings: compute them, project them to 2-D, score how well they
order quality, and map image tiles to a quality heatmap."""
from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .engines import resolve_device
from .inference import UnitScale, split_alpha
from .jpeg_traces import find_jpeg_grid
from .metrics import LUMA_WEIGHTS
from .models import QualityEncoder


def as_encoder(model: nn.Module) -> QualityEncoder:
    """The CQE of a restorer, or the encoder itself."""
    enc = model if isinstance(model, QualityEncoder) else getattr(model, "encoder", None)
    if enc is None:
        raise ValueError("this model has no compression quality encoder (ARCNN and encoder-free restorers have none)")
    return enc


def _tensor(image: np.ndarray, channels: int) -> torch.Tensor:
    planes, _ = split_alpha(np.asarray(image))
    x = planes.astype(np.float32) / (65535.0 if planes.dtype == np.uint16 else 255.0)
    if channels == 1 and x.shape[2] == 3:
        x = x @ LUMA_WEIGHTS.astype(np.float32)[:, None]
    elif channels == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


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
    tensors = [_tensor(im, enc.cfg.in_channels) for im in images]
    tensors = [t[:, : t.shape[1] // s * s, : t.shape[2] // s * s] for t in tensors]
    embs = []
    same = len({tuple(t.shape) for t in tensors}) == 1
    groups = [tensors[i:i + batch] for i in range(0, len(tensors), batch)] if same else [[t] for t in tensors]
    for g in tqdm(groups, desc="embed", unit="batch", disable=not progress, delay=2,
                  file=sys.stderr):
        embs.append(enc(torch.stack(g).to(dev)).embedding.float().cpu())
    e = torch.cat(embs)
    return e.numpy(), enc.quality(e.to(dev)).cpu().numpy()


def tiles(image: np.ndarray, size: int, cover: bool = False
          ) -> tuple[list[np.ndarray], tuple[int, int]]:
    """``size`` tiles on a grid from the top left, and the grid's (rows, cols). The remainder
    at the right/bottom is dropped, or with ``cover`` has a tile of its own, overlapping its
    neighbour and ending within 7 px of the edge (it starts on the 8x8 JPEG grid, as every
    tile does for sizes that are multiples of 8), so a heatmap of the tiles covers the image."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image {w}x{h} is smaller than one {size}px tile")
    rows, cols = (-(-h // size), -(-w // size)) if cover else (h // size, w // size)
    ys = [min(r * size, (h - size) // 8 * 8) for r in range(rows)]
    xs = [min(c * size, (w - size) // 8 * 8) for c in range(cols)]
    return [image[y:y + size, x:x + size] for y in ys for x in xs], (rows, cols)


PROBE_CROP = 96  # the side of the training crops the quality read-out is fitted on


def encoder_uint8(planes: np.ndarray) -> np.ndarray:
    """8-bit planes as the quality encoder reads them: uint8 as is, other integers holding 8-bit
    values too; uint16 and floats mapped as the restorer maps them (:class:`.inference.UnitScale`:
    16-bit data by the bits it uses, floats by their range); other integers by their range;
    NaN as the lowest value."""
    if planes.dtype == np.uint8:
        return planes
    if np.issubdtype(planes.dtype, np.integer) and planes.dtype != np.uint16:
        if planes.size and planes.min() >= 0 and planes.max() <= 255:
            return planes.astype(np.uint8)
        planes = planes.astype(np.float32)
    if np.issubdtype(planes.dtype, np.floating):
        planes = np.nan_to_num(planes, nan=float(np.nanmin(planes)) if planes.size else 0.0)
    return np.round(UnitScale.of(planes).to_unit(planes).clip(0, 1) * 255).astype(np.uint8)


def pixel_quality(model: nn.Module, image: np.ndarray, device: str = "auto",
                  max_tiles: int = 256, offset: tuple[int, int] | None = None) -> float:
    """A picture's quality estimated from its pixels: the median of the encoder's estimates over
    tiles of the size its read-out was fitted on (one pooled embedding of a large image is
    biased: the read-out never saw one), at most ``max_tiles`` of them spread over the image.
    Tiles start on the 8x8 grid at ``offset`` (row, col) — by default the one found in the
    pixels, else the top left: the encoder reads the quantization lattice on its grid, and a
    cropped picture's or a shifted re-compression's grid is elsewhere. Any dtype: read as
    :func:`encoder_uint8` maps it."""
    planes = encoder_uint8(split_alpha(image)[0])  # the whole picture, before it is tiled
    if offset is None:
        found = find_jpeg_grid(planes[..., 0] if planes.shape[2] == 1 else planes)
        offset = found.offset if found is not None else (0, 0)
    image = planes[offset[0]:, offset[1]:]
    side = min(PROBE_CROP, *image.shape[:2]) // 8 * 8
    parts, _ = tiles(image, max(8, side))
    if len(parts) > max_tiles:
        parts = [parts[i] for i in np.linspace(0, len(parts) - 1, max_tiles).round().astype(int)]
    return float(np.median(embed(model, parts, device)[1]))


def quality_heatmap(model: nn.Module, image: np.ndarray, tile: int = 64, device: str = "auto") -> np.ndarray:
    """Per-tile estimated quality (rows x cols float32): low values mark degraded regions."""
    parts, (rows, cols) = tiles(image, tile, cover=True)
    _, q = embed(model, parts, device)
    return q.reshape(rows, cols).astype(np.float32)


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
