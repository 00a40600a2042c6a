"""Restore an image of any size, dtype and channel layout with a restoration model.

The image is cut into overlapping tiles aligned to the model's stride (and so to the 8x8
JPEG grid), each tile runs through the network, and tiles are blended with linear ramps
across the overlap. Rows are finished one row of tiles at a time (:func:`restore_bands`), so
the float working memory is one band of tile height across the image, whatever its size.
"""
from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engines.net import Net, run_net
from ..engines.selection import open_net
from ..generators import finish, relay
from ..jpeg.consistency import JpegGrid, constrain
from ..pixels import UnitScale, split_alpha
from .compression import Compression, assess
from .options import RestoreOptions

if TYPE_CHECKING:
    from torch import nn

Progress = Callable[[int, int], None]
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


def _run_tile(net: Net, patch: np.ndarray, ensemble: bool, tables: np.ndarray | None
              ) -> np.ndarray:
    """The network's CxHxW output for one HxWxC tile in [0, 1] (a colour model on one plane:
    the plane three times, the outputs averaged)."""
    x = patch.transpose(2, 0, 1)[None]
    if net.in_channels == 3 and x.shape[1] == 1:
        return run_net(net, np.repeat(x, 3, axis=1), ensemble, tables).mean(1, keepdims=True)[0]
    return run_net(net, x, ensemble, tables)[0]


def _finished(image: np.ndarray, planes: np.ndarray, alpha: np.ndarray | None, acc: np.ndarray,
              wsum: np.ndarray, scale: UnitScale, jpeg: JpegGrid | None, top: int) -> np.ndarray:
    """Rows ``top..`` of the result from the weighted sum ``acc`` (CxNxW) of the tiles' outputs
    and their weights ``wsum`` (NxW): blended, back in the image's dtype, consistent with
    ``jpeg``, a neutral picture's one plane copied to all three, alpha passed through; finished
    :data:`FINISH_ROWS` at a time (their float planes stay in the CPU's cache)."""
    n, w = acc.shape[1:]
    out = np.empty((n, *image.shape[1:]), image.dtype)
    out_c = out.reshape(n, w, -1)  # HxW as HxWx1
    for a, b in _finishing_spans(top, n, jpeg):
        rows = scale.back((acc[:, a:b] / wsum[a:b]).transpose(1, 2, 0))
        if jpeg is not None:
            rows = constrain(rows, planes[top + a:top + b], jpeg, top + a)
        out_c[a:b, :, :out_c.shape[2] - (alpha is not None)] = rows  # neutral: 1 -> 3 planes
    if alpha is not None:
        out_c[..., -1] = alpha[top:top + n]
    return out


def restore_bands(image: np.ndarray, model: str | nn.Module | Net | None = None,
                  options: RestoreOptions | None = None, *, jpeg: JpegGrid | None = None,
                  value_range: tuple[float, float] | None = None,
                  compression: Compression | None = None
                  ) -> Generator[tuple[int, int, Band | None], None, None]:
    """Restore ``image`` one row of tiles at a time: yields ``(tiles_done, tiles_total, band)``
    after every tile, where ``band`` is None or ``(y, rows)``, rows of the result (in the
    input's dtype, alpha passed through) that no later tile touches, top to bottom. Working
    memory is a band of tile height across the image, never a full-size float copy.

    ``options``: how (:class:`.options.RestoreOptions`; a module always runs in PyTorch).
    ``jpeg``: how a uint8 image was compressed (its file's tables); each band is then kept
    consistent with it (:func:`.consistency.constrain`), so the result never strays from
    what the file allows, and where the model's calibration shows no gain at the file's
    quality (``options.calibrated``) the image passes through unchanged. None: the model's
    output. ``value_range``: the values that map to the network's 0..1 (see
    :class:`.pixels.UnitScale`). ``compression``: what :func:`.compression.assess` decided
    already (e.g. for a file); by default it is decided here from ``jpeg``,
    ``options.assume_quality`` and, where needed, the pixels."""
    o = options or RestoreOptions()
    image = np.asarray(image)
    if image.ndim < 2 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a non-empty 2-D gray, RGB or RGBA image, got shape {image.shape}")
    planes, alpha = split_alpha(image)
    neutral = is_neutral(planes)
    if neutral:  # R = G = B (a gray picture stored as RGB): restore one plane, no colour cast
        planes = planes[..., :1]
    net = open_net(model, planes.shape[2], device=str(o.device), precision=o.precision,
                   engine=o.engine)
    scale = UnitScale.of(planes, value_range)
    c_img = planes.shape[2]
    # Gray model on colour input: restore each plane; colour model on gray: replicate, average.
    groups = ([slice(i, i + 1) for i in range(c_img)] if net.in_channels == 1 and c_img == 3
              else [slice(None)])
    h, w = planes.shape[:2]
    align = net.stride
    tile = max(align, o.tile // align * align)
    overlap = min(o.overlap, tile // 2)
    ys, xs = _windows(h, tile, overlap, align), _windows(w, tile, overlap, align)
    total = len(ys) * len(xs) * len(groups)
    eight_bit = planes.dtype == np.uint8  # JPEG's grid and tables apply to 8-bit pixels only
    if compression is None:
        compression = assess(planes, jpeg if eight_bit else None, o.assume_quality,
                             estimate=net.conditioned, device=str(o.device), engine=o.engine)
    jpeg = compression.grid if eight_bit else None
    if o.calibrated and passes_through(net, compression):
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
                res = _run_tile(net, scale.to_unit(planes[y:y_end, x:x_end, g]), o.ensemble, tables)
                wx = _ramp(x_end - x, overlap, x == 0, x_end == w)
                wt = wy[:, None] * wx[None, :]
                acc[g, y - top:y_end - top, x:x_end] += res * wt
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
        rows = _finished(image, planes, alpha, acc[:, :n], wsum[:n], scale, jpeg, top)
        yield done, total, (top, rows)
        acc, wsum, top = acc[:, n:], wsum[n:], final


def restore_steps(image: np.ndarray, model: str | nn.Module | Net | None = None,
                  options: RestoreOptions | None = None, *, jpeg: JpegGrid | None = None,
                  value_range: tuple[float, float] | None = None,
                  compression: Compression | None = None
                  ) -> Generator[tuple[int, int], None, np.ndarray]:
    """Generator form of :func:`restore`: yields ``(tiles_done, tiles_total)``, returns the image.

    Stopping the generator early (e.g. a napari worker's cancel) abandons the work cleanly.
    """
    image = np.asarray(image)
    out = np.empty_like(image)
    for done, total, band in restore_bands(image, model, options, jpeg=jpeg,
                                           value_range=value_range, compression=compression):
        if band is not None:
            out[band[0]:band[0] + len(band[1])] = band[1]
        yield done, total
    return out


def restore(image: np.ndarray, model: str | nn.Module | Net | None = None,
            options: RestoreOptions | None = None, *, jpeg: JpegGrid | None = None,
            value_range: tuple[float, float] | None = None,
            compression: Compression | None = None, progress: Progress | None = None,
            **settings: Any) -> np.ndarray:
    """Remove JPEG artifacts from ``image`` (HxW, HxWx3 or HxWx4; uint8, uint16 or float).

    Returns an array of the same shape, dtype and value range; alpha passes through.
    ``model`` is a registry name, a weights file or a module; None picks the shipped default
    for gray or colour input. Deterministic; uses CUDA when ``device='auto'`` finds one.
    How it runs: ``options`` (:class:`.options.RestoreOptions`), or any of its fields as
    keywords (``restore(image, tile=256, precision="bf16")``; they override ``options``), e.g.
    ``ensemble`` (the mean over the eight rotations and flips: 8x slower, a little better),
    ``assume_quality`` (restore as if compressed at this quality: the strength control),
    ``engine`` (auto: OpenVINO on the CPU where installed, else PyTorch). ``jpeg`` keeps the
    result consistent with the JPEG the image was decoded from; where the model does not gain
    it passes unchanged (:func:`restore_bands`). ``compression``: what
    :func:`.compression.assess` decided already (replaces ``jpeg`` and ``assume_quality``).
    ``progress(done, total)`` is called after every tile.
    """
    o = replace(options or RestoreOptions(), **settings)
    steps = restore_steps(image, model, o, jpeg=jpeg, value_range=value_range,
                          compression=compression)
    return finish(relay(steps, lambda step: progress and progress(*step)))
