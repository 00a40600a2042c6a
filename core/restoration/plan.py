"""What restoring a picture assumes, decided once for the CLI, the napari widget and the Ray job:
its JPEG grid (the file's tables, else the traces in its pixels), the compression its restoration
assumes (:func:`.compression.assess`) and whether it is left as it is."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..jpeg.consistency import JpegGrid
from ..jpeg.traces import find_jpeg_grid
from ..pixels import split_alpha
from .compression import Compression, assess
from .options import RestoreOptions


@dataclass(frozen=True)
class Plan:
    """``compression``: what the restoration assumes; ``grid``: the JPEG grid known (from the
    tables, or found in the pixels; None: none); ``skip``: why the picture is left as it is
    (None: it is restored)."""

    compression: Compression
    grid: JpegGrid | None
    skip: str | None = None


def skip_reason(compression: Compression, skip_above_quality: int | None) -> str | None:
    """Why an image is left alone, or None: the quality its restoration assumes (from the file's
    tables, the traces in its pixels, the quality encoder's reading of a re-saved file, or the
    user) is above ``skip_above_quality``, or it shows no JPEG compression at all. A limit of
    None or 100 restores everything."""
    if skip_above_quality is None or skip_above_quality >= 100:
        return None
    if compression.quality is None:
        return "no JPEG compression found"
    if compression.quality > skip_above_quality:
        return f"JPEG quality above {skip_above_quality}"
    return None


def plan_image(image: np.ndarray, grid: JpegGrid | None = None,
               options: RestoreOptions | None = None, *, seen: int | None = None) -> Plan:
    """The plan for ``image`` as decoded (HxW or HxWxC, alpha allowed). ``grid``: the JPEG grid
    known already (its file's or layer's tables); None: looked for in the pixels. Only 8-bit
    pixels carry a JPEG's grid. ``options.assume_quality`` overrides what the pixels and tables
    say, ``options.skip_above_quality`` decides what is left alone; ``seen``: the quality
    encoder's reading of the pixels, when the caller made it already."""
    o = options or RestoreOptions()
    grid = grid or find_jpeg_grid(image)
    planes = split_alpha(np.asarray(image))[0]
    compression = assess(planes, grid if planes.dtype == np.uint8 else None, o.assume_quality,
                         device=str(o.device), engine=o.engine, seen=seen)
    return Plan(compression, grid, skip_reason(compression, o.skip_above_quality))
