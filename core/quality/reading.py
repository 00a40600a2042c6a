"""A picture's JPEG quality read from its pixels by a quality encoder, on whichever engine runs
the encoder (:func:`.selection.open_quality_net`): the re-saved check of ``restore`` and
``jpeg-restore quality`` read pictures here, and the napari inspector tiles them with the same
functions. Imports no PyTorch."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..jpeg.traces import find_jpeg_grid
from ..pixels import LUMA_WEIGHTS, UnitScale, split_alpha

if TYPE_CHECKING:
    from ..engines.net import QualityNet

PROBE_CROP = 96  # the side of the training crops the quality read-out is fitted on
BATCH = 32  # tiles per network run (OpenVINO: the last batch filled up, one shape compiled)


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


def encoder_uint8(planes: np.ndarray) -> np.ndarray:
    """8-bit planes as the quality encoder reads them: uint8 as is, other integers holding 8-bit
    values too; uint16 and floats mapped as the restorer maps them (:class:`.pixels.UnitScale`:
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


def encoder_input(image: np.ndarray, channels: int) -> np.ndarray:
    """A uint8/uint16 image (HxW, HxWxC; alpha dropped) as a ``channels``-plane CxHxW float32
    array in [0, 1]: luma for a gray encoder on colour, the plane repeated for a colour one on
    gray."""
    planes, _ = split_alpha(np.asarray(image))
    x = planes.astype(np.float32) / (65535.0 if planes.dtype == np.uint16 else 255.0)
    if channels == 1 and x.shape[2] == 3:
        x = x @ LUMA_WEIGHTS.astype(np.float32)[:, None]
    elif channels == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def tile_qualities(net: QualityNet, parts: list[np.ndarray]) -> np.ndarray:
    """The quality ``net`` reads in each of the equally sized ``parts``, cropped to its stride,
    in batches of :data:`BATCH`."""
    s = net.stride
    x = np.stack([encoder_input(p, net.in_channels) for p in parts])
    x = x[..., : x.shape[2] // s * s, : x.shape[3] // s * s]
    out = []
    for start in range(0, len(x), BATCH):
        batch = x[start:start + BATCH]
        n = len(batch)
        if net.engine == "openvino":  # a new shape would be compiled
            batch = np.concatenate([batch, np.repeat(batch[-1:], BATCH - n, axis=0)])
        out.append(net(batch)[:n])
    return np.concatenate(out).astype(np.float32)


def pixel_quality(net: QualityNet, image: np.ndarray, max_tiles: int = 256,
                  offset: tuple[int, int] | None = None) -> float:
    """A picture's quality estimated from its pixels by ``net``:
    the median of its estimates over tiles of the size its read-out was fitted on (one pooled
    embedding of a large image is biased: the read-out never saw one), at most ``max_tiles`` of
    them spread over the image. Tiles start on the 8x8 grid at ``offset`` (row, col) — by
    default the one found in the pixels, else the top left: the encoder reads the quantization
    lattice on its grid, and a cropped picture's or a shifted re-compression's grid is
    elsewhere. Any dtype: read as :func:`encoder_uint8` maps it."""
    planes = encoder_uint8(split_alpha(image)[0])  # the whole picture, before it is tiled
    if offset is None:
        found = find_jpeg_grid(planes[..., 0] if planes.shape[2] == 1 else planes)
        offset = found.offset if found is not None else (0, 0)
    image = planes[offset[0]:, offset[1]:]
    side = min(PROBE_CROP, *image.shape[:2]) // 8 * 8
    parts, _ = tiles(image, max(8, side))
    if len(parts) > max_tiles:
        parts = [parts[i] for i in np.linspace(0, len(parts) - 1, max_tiles).round().astype(int)]
    return float(np.median(tile_qualities(net, parts)))
