"""Training data: clean images from a folder or fsspec URL, degraded on the fly with libjpeg."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..images import read_image
from ..jpeg import compress, random_quality

def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 HxW (gray) or HxWx3 from any 8-bit image; gray uses ITU-R 601 luma as Pillow."""
    if image.dtype != np.uint8:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if channels == 1:
        if image.ndim == 3:
            image = np.round(image @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
        return image
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def load_images(urls: Sequence[str], channels: int, storage_options: dict | None = None) -> list[np.ndarray]:
    return [to_channels(read_image(u, storage_options=storage_options).array, channels) for u in urls]


def to_tensor(batch: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 NHW / NHWC arrays → float NCHW in [0, 1]."""
    a = np.stack(batch).astype(np.float32) / 255.0
    a = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(a))


def _augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.integers(4))
    patch = np.rot90(patch, k, axes=(0, 1))
    return patch[:, ::-1] if rng.random() < 0.5 else patch


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
    """(JPEG, clean) patch pairs: augment a clean crop, compress it at a random quality."""

    images: Sequence[np.ndarray]
    patch: int = 96
    qualities: tuple[int, int, int] = (10, 90, 10)

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        clean, jpeg = [], []
        for _ in range(batch):
            img = self.images[int(rng.integers(len(self.images)))]
            c = np.ascontiguousarray(_augment(random_crop(img, self.patch, rng, align=8), rng))
            clean.append(c)
            jpeg.append(compress(c, random_quality(rng, *self.qualities)))
        return to_tensor(jpeg), to_tensor(clean)


@dataclass
class ContrastiveSampler:
    """Two crops from each of ``batch`` JPEGs, every JPEG at its own random quality."""

    images: Sequence[np.ndarray]
    patch: int = 64
    region: int = 160
    qualities: tuple[int, int, int] = (10, 90, 10)

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q_views, k_views, qualities = [], [], []
        for _ in range(batch):
            img = self.images[int(rng.integers(len(self.images)))]
            q = random_quality(rng, *self.qualities)
            region = compress(np.ascontiguousarray(_augment(random_crop(img, self.region, rng, 8), rng)), q)
            q_views.append(random_crop(region, self.patch, rng, align=8))
            k_views.append(random_crop(region, self.patch, rng, align=8))
            qualities.append(q)
        return to_tensor(q_views), to_tensor(k_views), torch.tensor(qualities)
