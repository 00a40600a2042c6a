"""Restore an image of any size, dtype and channel layout with a restoration model.

The image is cut into overlapping tiles aligned to the model's stride (and so to the 8x8
JPEG grid), each tile runs through the network, and tiles are blended with linear ramps
across the overlap. Rows are finished one row of tiles at a time (:func:`restore_bands`), so
the float working memory is one band of tile height across the image, whatever its size.
"""
from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import numpy as np

from ..engines.net import Net, run_net
from ..engines.selection import open_net
from ..jpeg.consistency import JpegGrid, constrain
from ..pixels import UnitScale, split_alpha
from .compression import Compression, assess

if TYPE_CHECKING:
    from torch import nn

Progress = Callable[[int, int], None]
# Tiles overlap by this much: 16 and 32 px give the same PSNR on val-gray-bsd68 at Q10/Q40 with
# 128-px tiles (±0.002 dB) and agree with the untiled result to 49-55 dB; 16 computes about 10%
# fewer pixels with 512-px tiles (docs/speed.md).
TILE_OVERLAP = 16
# A band's rows are scaled back and kept consistent with the JPEG this many at a time: their
# float planes stay in the CPU's cache (a 2000-px colour band: 40 -> 27 ms, docs/speed.md).
FINISH_ROWS = 64


def _windows(size: int, tile: int, overlap: int, align: int) -> list[tuple[int, int]]:
    """(start, end) spans covering ``size``: as few spans of at most ``tile`` px as alignment
    allows, overlapping their neighbours by at least ``overlap``, each as short as that allows
    (less work than full tiles with a short remainder). Starts are multiples of ``align``; the
    last span ends at ``size`` (it may be up to ``align - 1`` px longer than ``tile``)."""
    if size < tile + align:
        return [(0, size)]
    slack = align - 1  # the last span may be this much longer
    n = max(2, -(-(size - overlap - slack) // (tile - overlap)))
    while True:
        shortest = -(-(size + (n - 1) * overlap - slack) // n)
        for t in range(-(-shortest // align) * align, tile + 1, align):
            last = (size - t) // align * align
            starts = [round(i * last / (n - 1) / align) * align for i in range(n)]
            if all(a + t - b >= overlap for a, b in zip(starts, starts[1:])):
                return [(s, s + t) for s in starts[:-1]] + [(last, size)]
        n += 1


def _finishing_spans(top: int, n: int, jpeg: JpegGrid | None) -> list[tuple[int, int]]:
    """Spans of about FINISH_ROWS rows covering rows ``0..n`` of a band that starts at image
    row ``top``, each after the first starting on ``jpeg``'s 8x8 grid (as
    :func:`.consistency.constrain` wants)."""
    spans, a = [], 0
    while a < n:
        b = min(n, a + FINISH_ROWS)
        if jpeg is not None and b < n:
            b -= (top + b - jpeg.offset[0]) % 8
        spans.append((a, b))
        a = b
    return spans


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    w = np.ones(n, np.float32)
    r = min(overlap, n // 2)
    if r > 0:
        ramp = (np.arange(r, dtype=np.float32) + 1) / (r + 1)
        if not at_start:
            w[:r] = ramp
        if not at_end:
            w[n - r:] = ramp[::-1]
    return w


def is_neutral(planes: np.ndarray, band_rows: int = 256) -> bool:
    """Whether the HxWxC planes are three equal channels (checked a band of rows at a time,
    stopping at the first difference)."""
    if planes.shape[2] != 3:
        return False
    return all(np.array_equal(b[..., 0], b[..., 1]) and np.array_equal(b[..., 0], b[..., 2])
               for b in (planes[y:y + band_rows] for y in range(0, planes.shape[0], band_rows)))


Band = tuple[int, np.ndarray]  # (first row, final rows of the restored image)


def passes_through(net: Net, compression: Compression) -> bool:
    """Whether an image of this compression is left unchanged: the model's calibration shows
    no gain at its quality (:class:`.consistency.Calibration`)."""
    cal = net.calibration
    return compression.quality is not None and cal is not None and not cal.restores(compression.quality)


def restore_bands(image: np.ndarray, model: str | nn.Module | Net | None = None, *, tile: int = 512,
                  overlap: int = TILE_OVERLAP, device: str = "auto", ensemble: bool = False,
                  jpeg: JpegGrid | None = None, calibrated: bool = True,
                  value_range: tuple[float, float] | None = None, precision: str = "fp32",
                  assume_quality: int | None = None, compression: Compression | None = None,
                  engine: str = "auto") -> Generator[tuple[int, int, Band | None], None, None]:
    """Restore ``image`` one row of tiles at a time: yields ``(tiles_done, tiles_total, band)``
    after every tile, where ``band`` is None or ``(y, rows)``, rows of the result (in the
    input's dtype, alpha passed through) that no later tile touches, top to bottom. Working
    memory is a band of tile height across the image, never a full-size float copy.

    ``jpeg``: how a uint8 image was compressed (its file's tables); each band is then kept
    consistent with it (:func:`.consistency.constrain`), so the result never strays from
    what the file allows, and where the model's calibration shows no gain at the file's
    quality (``calibrated``) the image passes through unchanged. None: the model's output.
    ``value_range``: the values that map to the network's 0..1 (see :class:`UnitScale`).
    ``precision``: fp32, bf16 (autocast) or auto (bf16 where the device runs it natively:
    :mod:`.precision`; within 0.02 dB of fp32 for the shipped models, bench/speed.md).
    ``engine``: auto, torch or openvino (:mod:`.engines`; a module always runs in PyTorch).
    ``assume_quality``: restore as if compressed at this quality (the strength control);
    ``compression``: what :func:`.compression.assess` decided already (e.g. for a file); by
    default it is decided here from ``jpeg``, ``assume_quality`` and, where needed, the pixels."""
    image = np.asarray(image)
    if image.ndim < 2 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a non-empty 2-D gray, RGB or RGBA image, got shape {image.shape}")
    planes, alpha = split_alpha(image)
    neutral = is_neutral(planes)
    if neutral:  # R = G = B (a gray picture stored as RGB): restore one plane, no colour cast
        planes = planes[..., :1]
    net = open_net(model, planes.shape[2], device=str(device), precision=precision, engine=engine)
    scale = UnitScale.of(planes, value_range)
    c_model, c_img = net.in_channels, planes.shape[2]
    # Gray model on colour input: restore each plane; colour model on gray: replicate, average.
    groups = [slice(i, i + 1) for i in range(c_img)] if c_model == 1 and c_img == 3 else [slice(None)]
    h, w = planes.shape[:2]
    align = net.stride
    tile = max(align, tile // align * align)
    overlap = min(overlap, tile // 2)
    ys, xs = _windows(h, tile, overlap, align), _windows(w, tile, overlap, align)
    total = len(ys) * len(xs) * len(groups)
    eight_bit = planes.dtype == np.uint8  # JPEG's grid and tables apply to 8-bit pixels only
    if compression is None:
        compression = assess(planes, jpeg if eight_bit else None, assume_quality,
                             estimate=net.conditioned, device=str(device), engine=engine)
    jpeg = compression.grid if eight_bit else None
    if calibrated and passes_through(net, compression):
        yield total, total, (0, image)
        return
    tables = compression.steps.reshape(1, 64) if net.conditioned else None
    done = 0
    top = 0  # first row not yet handed out
    acc = np.zeros((c_img, 0, w), np.float32)  # planar: a tile's CxHxW output adds in place
    wsum = np.zeros((0, w), np.float32)
    for i, (y, y_end) in enumerate(ys):
        # Keep the rows of the previous window that this one overlaps; add new rows below.
        grow = y_end - top - acc.shape[1]
        acc = np.concatenate([acc, np.zeros((c_img, grow, w), np.float32)], axis=1)
        wsum = np.concatenate([wsum, np.zeros((grow, w), np.float32)])
        wy = _ramp(y_end - y, overlap, y == 0, y_end == h)
        for g in groups:
            for x, x_end in xs:
                patch = scale.to_unit(planes[y:y_end, x:x_end, g])
                x_t = patch.transpose(2, 0, 1)[None]
                if c_model == 3 and x_t.shape[1] == 1:
                    res = run_net(net, np.repeat(x_t, 3, axis=1), ensemble, tables).mean(1, keepdims=True)
                else:
                    res = run_net(net, x_t, ensemble, tables)
                wx = _ramp(x_end - x, overlap, x == 0, x_end == w)
                wt = wy[:, None] * wx[None, :]
                acc[g, y - top:y_end - top, x:x_end] += res[0] * wt
                if g == groups[0]:
                    wsum[y - top:y_end - top, x:x_end] += wt
                done += 1
                if not (g == groups[-1] and x_end == w):
                    yield done, total, None
        final = ys[i + 1][0] if i + 1 < len(ys) else h  # rows no later window touches
        if jpeg is not None and final < h:  # bands end on the 8x8 grid
            final -= (final - jpeg.offset[0]) % 8
        n = final - top
        if n <= 0:
            yield done, total, None
            continue
        out = np.empty((n, *image.shape[1:]), image.dtype)
        out_c = out.reshape(n, w, -1)  # HxW as HxWx1
        for a, b in _finishing_spans(top, n, jpeg):
            rows = scale.back((acc[:, a:b] / wsum[a:b]).transpose(1, 2, 0))
            if jpeg is not None:
                rows = constrain(rows, planes[top + a:top + b], jpeg, top + a)
            out_c[a:b, :, :out_c.shape[2] - (alpha is not None)] = rows  # neutral: 1 -> 3 planes
        if alpha is not None:
            out_c[..., -1] = alpha[top:final]
        yield done, total, (top, out)
        acc, wsum, top = acc[:, n:], wsum[n:], final


def restore_steps(image: np.ndarray, model: str | nn.Module | Net | None = None, *, tile: int = 512,
                  overlap: int = TILE_OVERLAP, device: str = "auto", ensemble: bool = False,
                  jpeg: JpegGrid | None = None, calibrated: bool = True,
                  value_range: tuple[float, float] | None = None, precision: str = "fp32",
                  assume_quality: int | None = None, compression: Compression | None = None,
                  engine: str = "auto") -> Generator[tuple[int, int], None, np.ndarray]:
    """Generator form of :func:`restore`: yields ``(tiles_done, tiles_total)``, returns the image.

    Stopping the generator early (e.g. a napari worker's cancel) abandons the work cleanly.
    """
    image = np.asarray(image)
    out = np.empty_like(image)
    for done, total, band in restore_bands(image, model, tile=tile, overlap=overlap,
                                           device=device, ensemble=ensemble, jpeg=jpeg,
                                           calibrated=calibrated, value_range=value_range,
                                           precision=precision, assume_quality=assume_quality,
                                           compression=compression, engine=engine):
        if band is not None:
            out[band[0]:band[0] + len(band[1])] = band[1]
        yield done, total
    return out


def restore(image: np.ndarray, model: str | nn.Module | Net | None = None, *, tile: int = 512,
            overlap: int = TILE_OVERLAP, device: str = "auto", ensemble: bool = False,
            progress: Progress | None = None, jpeg: JpegGrid | None = None,
            calibrated: bool = True, value_range: tuple[float, float] | None = None,
            precision: str = "fp32", assume_quality: int | None = None,
            compression: Compression | None = None, engine: str = "auto") -> np.ndarray:
    """Remove JPEG artifacts from ``image`` (HxW, HxWx3 or HxWx4; uint8, uint16 or float).

    Returns an array of the same shape, dtype and value range; alpha passes through.
    ``model`` is a registry name, a weights file or a module; None picks the shipped default
    for gray or colour input. Deterministic; uses CUDA when ``device='auto'`` finds one.
    ``ensemble`` averages over the eight rotations and flips (slower by 8x, a little better).
    ``jpeg`` keeps the result consistent with the JPEG the image was decoded from and
    ``calibrated`` lets it pass unchanged where the model does not gain (:func:`restore_bands`).
    ``precision``: fp32 (default), bf16 or auto (bf16 where the device runs it natively).
    ``assume_quality``: restore as if the image were compressed at this quality, whatever its
    tables say (lower: stronger; the strength control for re-saved pictures); ``compression``:
    what :func:`.compression.assess` decided already (replaces ``jpeg`` and ``assume_quality``).
    ``engine``: auto (OpenVINO on the CPU where installed, else PyTorch), torch or openvino.
    """
    steps = restore_steps(image, model, tile=tile, overlap=overlap, device=device,
                          ensemble=ensemble, jpeg=jpeg, calibrated=calibrated,
                          value_range=value_range, precision=precision,
                          assume_quality=assume_quality, compression=compression,
                          engine=engine)
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)
