"""The live preview of a restoration: the part of one plane in view, restored with the widget's
settings by the same generator as a full run (no Qt)."""
from __future__ import annotations

import copy
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ._restore_steps import LayerJob, RestoreResult, restore_layer_steps

if TYPE_CHECKING:
    from napari_jpeg_restore.core.restoration.compression import Compression
    from napari_jpeg_restore.core.restoration.options import RestoreOptions

PREVIEW_SIDE = 512  # pixels per side at most: a preview takes well under a second on a laptop
BLOCK = 8
MIN_SIDE = 64  # a view zoomed in further still gets this much, for the network's context


@dataclass(frozen=True)
class PreviewRegion:
    """One plane's crop: ``index`` of the plane in the leading axes, then the crop's box."""

    index: tuple[int, ...]
    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def _span(start: int, stop: int, n: int, offset: int, side: int) -> tuple[int, int]:
    """(start, size) along one axis: the view's span (at least ``MIN_SIDE``), at most ``side``
    around its centre, its start on the 8x8 grid whose first whole block starts at ``offset``."""
    size = min(max(stop - start, MIN_SIDE), side, n)
    first = max(0, (start + stop) // 2 - size // 2)
    first = offset + BLOCK * ((first - offset) // BLOCK)
    if first < 0:
        first += BLOCK
    first = max(0, min(first, n - size))
    return int(first), int(min(size, n - first))


def preview_region(index: tuple[int, ...], plane_hw: tuple[int, int], corners: Any,
                   offset: tuple[int, int] = (0, 0), side: int = PREVIEW_SIDE) -> PreviewRegion:
    """The region of plane ``index`` to preview: the view's box (``corners``: napari's
    ``corner_pixels`` of the two displayed axes, ``[[y0, x0], [y1, x1]]``; an empty box, as
    before the first draw, means the whole plane), at most ``side`` per side around its centre,
    starting on the JPEG's 8x8 grid (``offset``) where the plane allows."""
    (y0, x0), (y1, x1) = np.asarray(corners, dtype=int).reshape(2, 2)
    h, w = plane_hw
    if y1 <= y0 or x1 <= x0:
        y0, x0, y1, x1 = 0, 0, h, w
    top, height = _span(y0, y1, h, offset[0], side)
    left, width = _span(x0, x1, w, offset[1], side)
    return PreviewRegion(tuple(index), top, left, height, width)


def _moved(offset: tuple[int, int], region: PreviewRegion) -> tuple[int, int]:
    return (offset[0] - region.top) % BLOCK, (offset[1] - region.left) % BLOCK


def crop_metadata(metadata: dict[str, Any], region: PreviewRegion) -> dict[str, Any]:
    """The layer's metadata for the crop: its JPEG grid moved to the crop's corner."""
    meta = copy.deepcopy(dict(metadata))
    grid = meta.get("jpeg_grid")
    if grid:
        grid["offset"] = _moved(grid.get("offset", (0, 0)), region)
    return meta


def crop_compression(compression: Compression, region: PreviewRegion) -> Compression:
    """What the plane's restoration assumes, for the crop: the same quality, its grid moved."""
    grid = compression.grid
    return replace(compression, grid=replace(grid, offset=_moved(grid.offset, region))) if grid else compression


def preview_steps(job: LayerJob, region: PreviewRegion, options: RestoreOptions
                  ) -> Generator[tuple[int, int, int, int], None, RestoreResult]:
    """Restore ``region`` of ``job``'s layer as a run with these ``options`` restores that part
    (:func:`._restore_steps.restore_layer_steps` on the crop, assuming what the run assumes for
    the first plane when that is the one shown); yields its progress."""
    plane = job.data[region.index] if region.index else job.data
    crop = np.asarray(plane[region.slices])
    first = job.first if job.first is not None and not any(region.index) else None
    return (yield from restore_layer_steps(crop, (), job.rgb, job.model_spec, options,
                                           metadata=crop_metadata(job.metadata, region),
                                           value_range=job.value_range,
                                           first=first and crop_compression(first, region)))
