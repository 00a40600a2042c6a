"""Lossless, atomic, streaming image writing: PNG or TIFF, 8 or 16 bits, local paths or URLs.

Rows arrive in bands, top to bottom (:func:`write_image_bands`), so an output never has to be in
memory whole: PNG rows are Sub-filtered and deflated as they come; TIFF goes out as 256x256
deflate tiles through tifffile (BigTIFF when the pixels pass 4 GB). :func:`write_image` is the
one-band case. Local destinations get ``.<name>.tmp-<random>`` beside them, then ``os.replace``;
fsspec URLs a ``<dest>.tmp-<uuid>`` key, then a move. Nothing half-written remains on failure.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np

from ..error_text import one_line
from .filesystem import write_atomically
from .output_paths import extension

Band = tuple[int, np.ndarray]  # (first row, rows): HxW, HxWx3 or HxWx4 slices of the image
TIFF_TILE = 256
_PNG_COLOUR = {1: 0, 2: 4, 3: 2, 4: 6}  # samples per pixel -> PNG colour type
_IDAT_BYTES = 1 << 20


class ImageWriteError(OSError):
    """An output that cannot be written; ``str()`` is one line naming the destination."""


class _BandsFailed(Exception):
    """The producer of the bands failed (not the writing); carries its exception."""


def _guarded(bands: Iterable[Band]) -> Iterator[Band]:
    it = iter(bands)
    while True:
        try:
            band = next(it)
        except StopIteration:
            return
        except Exception as err:
            raise _BandsFailed() from err
        yield band


def icc_matching(profile: bytes | None, samples: int) -> bytes | None:
    """``profile`` if its colour space (ICC header bytes 16..19) fits gray (1-2 samples per
    pixel) or RGB(A) (3-4), else None."""
    space = b"GRAY" if samples <= 2 else b"RGB "
    return profile if profile and profile[16:20] == space else None


def _deflater() -> Any:
    """A streaming deflate compressor (``compress``, ``flush``) for PNG rows: ISA-L's level 2
    (6-10x zlib's level 4, 1-12% more bytes: docs/speed.md), zlib's level 4 where ISA-L has no
    wheel."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.compressobj(4)
    return isal_zlib.compressobj(2)


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _png(f: BinaryIO, shape: tuple[int, ...], dtype: np.dtype, bands: Iterable[Band],
         icc: bytes | None) -> None:
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    depth = 16 if dtype == np.uint16 else 8
    bpp = c * depth // 8
    f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth,
                                                                _PNG_COLOUR[c], 0, 0, 0)))
    if icc:
        f.write(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    z = _deflater()
    pending = bytearray()
    for _, rows in bands:
        raw = np.ascontiguousarray(rows, ">u2" if depth == 16 else np.uint8).view(np.uint8)
        raw = raw.reshape(len(rows), w * bpp)
        lines = np.empty((len(rows), 1 + w * bpp), np.uint8)
        lines[:, 0] = 1  # filter type 1 (Sub): each byte minus the one a pixel before it
        lines[:, 1:] = raw
        lines[:, 1 + bpp:] -= raw[:, :-bpp]  # uint8 arithmetic wraps modulo 256, as PNG wants
        pending += z.compress(lines.data)
        if len(pending) >= _IDAT_BYTES:
            f.write(_chunk(b"IDAT", bytes(pending)))
            pending.clear()
    pending += z.flush()
    f.write(_chunk(b"IDAT", bytes(pending)) + _chunk(b"IEND", b""))


def _tiles(shape: tuple[int, ...], dtype: np.dtype, bands: Iterable[Band]) -> Iterator[np.ndarray]:
    """Row-major TIFF tiles (zero-padded at the edges) from bands of any height."""
    t = TIFF_TILE
    w = shape[1]
    buf = np.zeros((t, -(-w // t) * t, *shape[2:]), dtype)
    filled = 0
    for _, rows in bands:
        i = 0
        while i < len(rows):
            take = min(t - filled, len(rows) - i)
            buf[filled:filled + take, :w] = rows[i:i + take]
            filled, i = filled + take, i + take
            if filled == t:
                yield from (buf[:, x:x + t].copy() for x in range(0, w, t))
                filled = 0
    if filled:
        buf[filled:] = 0
        yield from (buf[:, x:x + t].copy() for x in range(0, w, t))


def _tiff(f: BinaryIO, shape: tuple[int, ...], dtype: np.dtype, bands: Iterable[Band],
          icc: bytes | None) -> None:
    import tifffile  # only for TIFF output: 11 ms of every start-up otherwise

    nbytes = int(np.prod(shape)) * dtype.itemsize
    tifffile.imwrite(f, _tiles(shape, dtype, bands), shape=shape, dtype=dtype,
                     tile=(TIFF_TILE, TIFF_TILE), bigtiff=nbytes > 2**32 - 2**27,
                     photometric="minisblack" if len(shape) == 2 else "rgb",
                     extrasamples=["unassalpha"] if len(shape) == 3 and shape[2] == 4 else None,
                     compression="zlib", predictor=True, iccprofile=icc, metadata=None)


def write_image_bands(dest: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype | type,
                      bands: Iterable[Band], *, format: str = "png",
                      icc_profile: bytes | None = None, storage_options: dict | None = None) -> None:
    """Write an image of ``shape`` (HxW, HxWx3 or HxWx4) and ``dtype`` (uint8/uint16) whose rows
    come from ``bands`` in order, losslessly and atomically. ``icc_profile`` is embedded when its
    colour space fits (a mismatched one is left out). I/O failures raise
    :class:`ImageWriteError`, a bad shape or format ValueError."""
    fmt = extension(format)
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    if dtype not in (np.uint8, np.uint16) or not (
            len(shape) == 2 or (len(shape) == 3 and shape[2] in (3, 4))) or min(shape[:2]) < 1:
        raise ValueError(f"expected a uint8/uint16 HxW, HxWx3 or HxWx4 image, got {dtype} {shape}")
    icc = icc_matching(icc_profile, shape[2] if len(shape) == 3 else 1)
    encode = _png if fmt == ".png" else _tiff
    dest = os.fspath(dest)

    def fill(f: BinaryIO) -> None:
        encode(f, shape, dtype, _guarded(bands), icc)

    try:
        write_atomically(dest, fill, storage_options)
    except _BandsFailed as failed:  # e.g. the restorer: its own error, not a write error
        raise failed.__cause__ from None
    except OSError as err:
        raise ImageWriteError(f"{dest}: cannot write ({err.strerror or one_line(err)})") from err
    except (ValueError, TypeError):
        raise
    except Exception as err:  # any backend failure becomes one line
        raise ImageWriteError(f"{dest}: cannot write ({one_line(err)})") from err


def write_image(dest: str | os.PathLike, array: np.ndarray, *, format: str = "png",
                icc_profile: bytes | None = None, storage_options: dict | None = None) -> None:
    """Write ``array`` (uint8/uint16 HxW, HxWx3, HxWx4) losslessly and atomically (see
    :func:`write_image_bands`)."""
    array = np.asarray(array)
    write_image_bands(dest, array.shape, array.dtype, [(0, array)], format=format,
                      icc_profile=icc_profile, storage_options=storage_options)
