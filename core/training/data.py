"""Training data: clean images from a folder or fsspec URL, degraded on the fly with libjpeg."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..imageio.reading import read_image
from ..jpeg.codec import (
    WEIGHTINGS,
    compress,
    double_compress,
    ijg_table,
    quality_levels,
    random_quality,
)
from ..pixels import to_channels


class ImageShard(Sequence):
    """Training images read on first use and kept while they fit in ``cache_mb`` (the least
    recently used leave first), so a worker's shard streams through memory instead of filling it.
    Decoding is deterministic: a cached and a re-read image are the same array."""

    def __init__(self, urls: Sequence[str], channels: int, storage_options: dict | None = None,
                 cache_mb: int = 4096) -> None:
        if not urls:
            raise ValueError("no training images")
        self.urls, self.channels, self.storage_options = list(urls), channels, storage_options
        self.limit = cache_mb * 2**20
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self.urls)

    def __getitem__(self, i: int) -> np.ndarray:  # type: ignore[override]
        image = self._cache.get(i)
        if image is not None:
            self._cache.move_to_end(i)
            return image
        image = to_channels(read_image(self.urls[i], storage_options=self.storage_options).array,
                            self.channels)
        self._cache[i] = image
        self._bytes += image.nbytes
        while self._bytes > self.limit and len(self._cache) > 1:
            self._bytes -= self._cache.popitem(last=False)[1].nbytes
        return image


def to_tensor(batch: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 NHW / NHWC arrays → float NCHW in [0, 1]."""
    a = np.stack(batch).astype(np.float32) / 255.0
    a = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(a))


def _augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(4))
    patch = np.rot90(patch, k, axes=(0, 1))
    return patch[:, ::-1] if rng.random() < 0.5 else patch


def rotate_hue(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 patch with its colours turned by a random angle about the gray axis (gray
    stays gray, the mean of the channels is kept): a picture of every hue from one of a few."""
    theta = rng.uniform(0.0, 2.0 * np.pi)
    k = np.full(3, 1.0 / np.sqrt(3.0))
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    turn = np.cos(theta) * np.eye(3) + np.sin(theta) * cross + (1.0 - np.cos(theta)) * np.outer(k, k)
    return np.clip(np.rint(patch.astype(np.float32) @ turn.T.astype(np.float32)), 0, 255).astype(np.uint8)


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator, align: int = 1) -> np.ndarray:
    """A ``size`` square crop whose corner sits on a multiple of ``align`` (8: the JPEG grid)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"image {w}x{h} is smaller than the {size}px crop")
    y = int(rng.integers((h - size) // align + 1)) * align
    x = int(rng.integers((w - size) // align + 1)) * align
    return image[y:y + size, x:x + size]


@dataclass
class PairSampler:
    """(JPEG, clean) patch pairs: augment a clean crop, compress it at a random quality.

    ``weighting="inverse"`` draws quality ``q`` with probability proportional to ``1/q`` (more
    low-quality samples, whose errors dominate), ``"inverse-sqrt"`` proportional to ``1/sqrt(q)``
    (between that and uniform); ``double`` is the share of pairs compressed twice
    (second quality at least the first, on an 8x8 grid shifted by a random offset); ``clean`` is
    the share of identity pairs (the clean crop as input), which teaches the model to leave
    never-compressed and near-lossless inputs as they are; ``recolour`` turns each RGB crop's
    hues by a random angle (:func:`rotate_hue`), so that a model trained on pictures of a few
    colours (stained tissue) does not learn those colours. With ``tables`` a batch also carries
    each input's luma table (N, 64), for a conditioned restorer: the table of the strongest
    compression it went through (what the pixel estimate finds in a re-saved file), all ones
    for an identity pair."""

    images: Sequence[np.ndarray]
    patch: int = 96
    qualities: tuple[int, int, int] = (10, 90, 10)
    weighting: str = "uniform"
    double: float = 0.0
    clean: float = 0.0
    tables: bool = False
    recolour: bool = False

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {tuple(WEIGHTINGS)}, got {self.weighting!r}")
        if not 0.0 <= self.double <= 1.0:
            raise ValueError(f"double must be a fraction in [0, 1], got {self.double}")
        if not 0.0 <= self.clean <= 1.0:
            raise ValueError(f"clean must be a fraction in [0, 1], got {self.clean}")
        self._levels = quality_levels(*self.qualities)
        w = self._levels.astype(np.float64) ** -WEIGHTINGS[self.weighting]
        self._p = w / w.sum()

    def _quality(self, rng: np.random.Generator) -> int:
        return int(rng.choice(self._levels, p=self._p))

    def degrade(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """(the degraded crop, the quality of its strongest compression; 100 for none)."""
        if self.clean and rng.random() < self.clean:
            return clean.copy(), 100
        q = self._quality(rng)
        if self.double and rng.random() < self.double:
            q2 = max(q, self._quality(rng))
            shift = (int(rng.integers(8)), int(rng.integers(8)))
            return double_compress(clean, q, q2, shift), q
        return compress(clean, q), q

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """(JPEG patches, clean patches), and with ``tables`` their luma tables (N, 64)."""
        clean, jpeg, quality = [], [], []
        for _ in range(batch):
            img = self.images[int(rng.integers(len(self.images)))]
            c = np.ascontiguousarray(_augment(random_crop(img, self.patch, rng, align=8), rng))
            if self.recolour and c.ndim == 3:
                c = rotate_hue(c, rng)
            clean.append(c)
            j, q = self.degrade(c, rng)
            jpeg.append(j)
            quality.append(q)
        if not self.tables:
            return to_tensor(jpeg), to_tensor(clean)
        steps = np.stack([ijg_table(q).reshape(-1) for q in quality]).astype(np.float32)
        return to_tensor(jpeg), to_tensor(clean), torch.from_numpy(steps)


@dataclass
class ContrastiveSampler:
    """MoCo views of ``batch`` JPEGs, each at its own random quality q. ``positives="image"``
    (the paper): the key is a second crop of the query's compressed picture.
    ``positives="tables"``: the key is a crop of another picture compressed with the same
    tables (what any archive offers without labels: every JPEG file carries its tables), so
    content cannot match a pair (the default, as ``--positives``). Either way the key's region
    recompressed at another quality is a hard negative: same content, other tables."""

    images: Sequence[np.ndarray]
    patch: int = 64
    region: int | None = None  # side of the compressed region both views come from; 2.5 x patch
    qualities: tuple[int, int, int] = (10, 90, 10)
    positives: str = "tables"  # the default of training's --positives

    def __post_init__(self) -> None:
        self.region = self.region or self.patch * 5 // 2 // 8 * 8

    def _region(self, index: int, rng: np.random.Generator) -> np.ndarray:
        img = self.images[index]
        return np.ascontiguousarray(_augment(random_crop(img, self.region, rng, 8), rng))

    def _crop_box(self, rng: np.random.Generator) -> tuple[int, int]:
        n = (self.region - self.patch) // 8 + 1
        return int(rng.integers(n)) * 8, int(rng.integers(n)) * 8

    def sample(self, batch: int, rng: np.random.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(query views, key views, hard negatives, qualities): the last is (batch, 2), the
        quality of the query and key, then of the hard negative."""
        views: tuple[list, list, list] = ([], [], [])
        qualities = []
        p, n = self.patch, len(self.images)
        for _ in range(batch):
            a = int(rng.integers(n))
            clean = self._region(a, rng)
            q = random_quality(rng, *self.qualities)
            other = q
            while other == q:
                other = random_quality(rng, *self.qualities)
            jpeg = compress(clean, q)
            if self.positives == "tables" and n > 1:
                b = (a + 1 + int(rng.integers(n - 1))) % n  # another picture
                clean = self._region(b, rng)
                key = compress(clean, q)
            else:
                key = jpeg
            hard = compress(clean, other)
            (y0, x0), (y1, x1) = self._crop_box(rng), self._crop_box(rng)
            views[0].append(jpeg[y0:y0 + p, x0:x0 + p])
            views[1].append(key[y1:y1 + p, x1:x1 + p])
            views[2].append(hard[y1:y1 + p, x1:x1 + p])
            qualities.append((q, other))
        return (*(to_tensor(v) for v in views), torch.tensor(qualities))
