"""Measure where a model helps: its :class:`.consistency.Calibration` from training images.

For every quality, crops are compressed, restored, clipped to the file's quantization
intervals (:func:`.consistency.constrain`) and scored against the original. Two kinds of
crop are scored apart: cut on the source's own 8x8 grid (a photograph that was a JPEG
before, recompressed on the same grid, as when a file is re-saved) and off it (a picture
that never was a JPEG); a model must gain on both to be used at a quality.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from ..jpeg.codec import compress
from ..jpeg.consistency import Calibration, JpegGrid, calibration_path
from .image_restore import restore

KINDS = ("on_grid", "off_grid")
QUALITIES = tuple(range(10, 101, 5))


def calibration_crops(images: Sequence[np.ndarray], count: int, size: int,
                      rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """``count`` crops of ``size`` px of each kind, cycling through ``images``."""
    crops: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    for i in range(2 * count):
        im = images[i // 2 % len(images)]
        h, w = im.shape[:2]
        if h < size + 16 or w < size + 16:
            raise ValueError(f"calibration images must be larger than {size + 16} px, got {w}x{h}")
        y, x = rng.integers(0, h - size - 8) // 8 * 8, rng.integers(0, w - size - 8) // 8 * 8
        kind = KINDS[i % 2]
        if kind == "off_grid":
            y, x = y + rng.integers(1, 8), x + rng.integers(1, 8)
        crops[kind].append(np.ascontiguousarray(im[y:y + size, x:x + size]))
    return crops


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b) ** 2))


def fit_calibration(model: nn.Module, crops: dict[str, list[np.ndarray]],
                    qualities: Sequence[int], device: str = "auto",
                    progress: Callable[[int, int], None] | None = None) -> Calibration:
    """PSNR gain per quality and kind of crop (uint8 HxW or HxWx3 crops, the model's kind)."""
    gains = {k: np.zeros(len(qualities)) for k in crops}
    total, done = len(qualities) * sum(map(len, crops.values())), 0
    for i, q in enumerate(qualities):
        grid = JpegGrid.ijg(q)
        for kind, group in crops.items():
            before = after = 0.0
            for crop in group:
                jpeg = compress(crop, int(q))
                out = restore(jpeg, model, tile=max(crop.shape[:2]), device=device, jpeg=grid,
                              calibrated=False)
                before, after = before + _mse(jpeg, crop), after + _mse(out, crop)
                done += 1
                if progress is not None:
                    progress(done, total)
            gains[kind][i] = 10 * np.log10(before / max(after, 1e-12))
    return Calibration(np.asarray(qualities), gains)


def calibrate_weights(weights: str | Path, sources: Sequence[str], crops: int = 48,
                      qualities: Sequence[int] = QUALITIES, seed: int = 0, device: str = "cpu",
                      progress: Callable[[int, int], None] | None = None,
                      storage_options: dict | None = None) -> Calibration:
    """Fit the calibration of a weights file (a path or a registry name) on training images
    (paths or URLs; never validation images) and save it beside the weights, where
    :func:`.registry.load_model` finds it."""
    from ..imageio.reading import load_images
    from ..registry import load_model, resolve_weights

    path = resolve_weights(weights)
    net = load_model(path)
    images = load_images(list(sources), net.cfg.in_channels, storage_options)
    cal = fit_calibration(net, calibration_crops(images, crops, 128, np.random.default_rng(seed)),
                          qualities, device=device, progress=progress)
    cal.save(calibration_path(path))
    return cal
