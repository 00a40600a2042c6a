"""napari reader for JPEG files that keeps what the compression left behind.

The pixels come from :func:`napari_jpeg_restore.core.imageio.reading.read_image` (EXIF orientation
applied, CMYK converted to RGB); the layer metadata gets the file's quantization tables and the
IJG quality factor they correspond to, which the quality inspector widget shows and uses.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

JPEG_SUFFIXES = (".jpg", ".jpeg")

PathLike = str | os.PathLike
LayerData = tuple[np.ndarray, dict[str, Any], str]


def _is_jpeg_name(path: PathLike) -> bool:
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(JPEG_SUFFIXES)


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable[..., list[LayerData]] | None:
    """The reader function when every path names a .jpg/.jpeg file, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_is_jpeg_name(p) for p in paths):
        return None
    return read_jpeg


def jpeg_metadata(tables: dict[int, np.ndarray] | None, source_path: str,
                  grid_offset: tuple[int, int] = (0, 0), transposed: bool = False) -> dict[str, Any]:
    """Layer metadata: ``jpeg_quality`` (int), ``jpeg_quality_exact`` (bool), ``quant_tables``
    (table id -> 64 ints, natural row-major order, as stored), ``jpeg_grid`` (where the 8x8
    grid starts in the layer and whether the image was transposed for display, from EXIF)
    and ``source_path``."""
    from napari_jpeg_restore.core.jpeg.codec import estimate_quality

    meta: dict[str, Any] = {"source_path": source_path}
    if tables:
        est = estimate_quality(tables)
        meta.update(jpeg_quality=int(est.quality), jpeg_quality_exact=bool(est.exact),
                    quant_tables={int(k): np.asarray(v).reshape(-1).astype(int).tolist()
                                  for k, v in tables.items()},
                    jpeg_grid={"offset": [int(o) for o in grid_offset], "transposed": transposed})
    return meta


def read_jpeg(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """One Image layer per file; raises ImageReadError (one line naming the file) on a bad file."""
    from napari_jpeg_restore.core.imageio.reading import read_image

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        loaded = read_image(p)
        array = loaded.array
        grid = loaded.jpeg_grid
        meta = jpeg_metadata(loaded.quant_tables, os.fspath(p), grid.offset if grid else (0, 0),
                             grid.transposed if grid else False)
        layers.append((array, {"name": Path(os.fspath(p)).stem, "rgb": array.ndim == 3,
                               "metadata": meta}, "image"))
    return layers
