"""The fine-tune widget's work, apart from Qt: the chosen layers' planes as the image files
``core.training.finetune`` trains on (large planes cut into tiles, so one big picture is enough
to hold some out), and the generator its thread worker runs."""
from __future__ import annotations

import tempfile
from collections.abc import Generator, Sequence
from dataclasses import replace
from pathlib import Path
from threading import Event

import numpy as np

from napari_jpeg_restore.core.imageio.writing import write_image
from napari_jpeg_restore.core.pixels import UnitScale
from napari_jpeg_restore.core.training.finetune import (
    FinetuneOptions,
    FinetuneProgress,
    FinetuneResult,
    finetune_steps,
)

TILE = 256  # planes twice this size or more are cut into tiles of this side (on the 8x8 grid)
MAX_IMAGES = 200  # tiles kept, evenly spread, from very large layers


def _storable(plane: np.ndarray) -> np.ndarray:
    """uint8/uint16 as they are; other values scaled by their range to 16 bits."""
    if plane.dtype in (np.uint8, np.uint16):
        return plane
    values = plane.astype(np.float32)
    return np.round(UnitScale.of(values).to_unit(values).clip(0, 1) * 65535).astype(np.uint16)


def _starts(size: int) -> list[int]:
    """Corners of tiles along one axis: every TILE pixels, none overlapping (the held-out
    tiles share no pixel with the training ones); the rest of the axis is left out."""
    return list(range(0, max(size - TILE, 0) + 1, TILE))


def plane_tiles(planes: Sequence[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    """(name, tile) of every plane (HxW or HxWxC), at most ``MAX_IMAGES``, evenly spread."""
    tiles = []
    for name, plane in planes:
        if max(plane.shape[:2]) < 2 * TILE:
            tiles.append((name, plane))
            continue
        tiles += [(f"{name}-y{y}-x{x}", plane[y:y + TILE, x:x + TILE])
                  for y in _starts(plane.shape[0]) for x in _starts(plane.shape[1])]
    keep = np.unique(np.linspace(0, len(tiles) - 1, min(len(tiles), MAX_IMAGES)).round().astype(int))
    return [tiles[i] for i in keep] if tiles else []


def write_tiles(planes: Sequence[tuple[str, np.ndarray]], folder: Path) -> list[str]:
    """The planes' tiles as lossless PNGs in ``folder``; their paths."""
    paths = []
    for i, (name, tile) in enumerate(plane_tiles(planes)):
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80]
        path = folder / f"{i:04d}-{safe}.png"
        write_image(path, _storable(np.ascontiguousarray(tile)))
        paths.append(str(path))
    return paths


def finetune_layer_steps(planes: Sequence[tuple[str, np.ndarray]], options: FinetuneOptions,
                         stop: Event) -> Generator[FinetuneProgress, None, FinetuneResult]:
    """Fine-tune on ``planes`` (name, HxW or HxWxC array; none: on ``options.images``) as
    :func:`finetune_steps` does; their tiles live in a temporary folder meanwhile."""
    with tempfile.TemporaryDirectory(prefix="jpeg-restore-finetune-") as tmp:
        if planes:
            options = replace(options, images=tuple(write_tiles(planes, Path(tmp))))
        return (yield from finetune_steps(options, stop))
