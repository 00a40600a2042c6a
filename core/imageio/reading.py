"""Robust image reading, for local paths, fsspec URLs and bytes (writing: ``image_writing``).

Reading (:func:`read_image`) turns every failure into one :class:`ImageReadError` line, refuses
images over ``MAX_PIXELS`` from the header before decoding (decompression bombs), applies the
EXIF orientation, keeps the ICC profile and a JPEG's quantization tables, and returns uint8 or
uint16 arrays shaped HxW, HxWx3 or HxWx4 (CMYK, palette and gray+alpha images become RGB(A)).
16-bit gray, RGB and RGBA PNG/TIFF stay 16-bit; 16-bit gray+alpha PNG is read at 8 bits (Pillow).
"""
from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

import fsspec
import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from ..error_text import one_line
from ..jpeg.codec import QualityEstimate, estimate_quality, read_quant_tables
from ..jpeg.consistency import JpegGrid
from ..pixels import to_channels
from .writing import icc_matching

MAX_PIXELS = 100_000_000  # refuse larger images unless allow_large (--allow-large)

_PILLOW_LIMIT = threading.Lock()
_MAGIC = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"II*\x00": "TIFF",
          b"MM\x00*": "TIFF", b"GIF8": "GIF", b"BM": "BMP"}
_ORIENT = {  # EXIF orientation -> the numpy equivalent of ImageOps.exif_transpose
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1),
}


class ImageReadError(ValueError):
    """An input that cannot be read as an image; ``str()`` is one line naming the source."""


@dataclass
class LoadedImage:
    array: np.ndarray  # HxW, HxWx3 or HxWx4; uint8 or uint16; upright (EXIF applied)
    path: str
    format: str  # Pillow's format name: "JPEG", "PNG", "TIFF", ...
    icc_profile: bytes | None = None  # only when it matches the array's colour space
    quant_tables: dict[int, np.ndarray] | None = None  # JPEG only, 8x8 natural order
    quality: QualityEstimate | None = None  # JPEG only, from table 0
    has_alpha: bool = False
    jpeg_grid: JpegGrid | None = None  # JPEG only: its luma table and 8x8 grid, as oriented


def _fetch(source: str | os.PathLike | bytes, storage_options: dict | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    name = os.fspath(source)
    try:
        with fsspec.open(name, "rb", **(storage_options or {})) as f:
            return f.read(), name
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{name}: is a folder, not an image") from None
    except PermissionError:
        raise ImageReadError(f"{name}: permission denied") from None
    except Exception as err:  # any backend failure becomes one line
        raise ImageReadError(f"{name}: cannot read ({one_line(err)})") from err


def _sniff(data: bytes) -> str | None:
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def _open(data: bytes, name: str) -> Image.Image:
    """Identify the image from its header. Pillow's global pixel limit is lifted for this call
    only (under a lock, restored after): the caller checks MAX_PIXELS instead."""
    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            kind = _sniff(data)
            why = (f"corrupt {kind} (unreadable header)" if kind
                   else "not an image (unrecognised file format)")
            raise ImageReadError(f"{name}: {why}") from None
        except Exception as err:  # a plugin failing inside the header
            raise ImageReadError(f"{name}: truncated or corrupt {_sniff(data) or 'image'} "
                                 f"({one_line(err)})") from err
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _png16_colour(im: Image.Image, data: bytes, name: str) -> np.ndarray:
    """16-bit RGB(A) PNG. Pillow unpacks only the high byte of each sample ("RGB;16B"); decoding
    a second time as little-endian ("RGB;16L") yields the low bytes; together they are exact."""
    codec, extents, offset, rawmode = im.tile[0]
    im.load()
    low = _open(data, name)
    low.tile = [(codec, extents, offset, rawmode.replace(";16B", ";16L"))]
    low.load()
    return np.asarray(im).astype(np.uint16) << 8 | np.asarray(low)


def _tiff_deep_colour(data: bytes, name: str) -> np.ndarray:
    """Multi-sample TIFF deeper than 8 bits (Pillow would truncate it) through tifffile."""
    import tifffile  # only for these files: 11 ms of every start-up otherwise

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        a, axes = page.asarray(), page.axes
    if axes.startswith("S"):  # planar configuration
        a = np.moveaxis(a, 0, -1)
    if a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] < 2:
        raise ImageReadError(f"{name}: unsupported TIFF ({a.dtype}, shape {a.shape}); "
                             "expected 8- or 16-bit gray or RGB(A)")
    if a.shape[2] == 2:  # gray + alpha
        return np.concatenate([np.repeat(a[..., :1], 3, axis=2), a[..., 1:]], axis=2)
    return a[..., :4]


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """Through the embedded CMYK profile when there is one, else Pillow's plain conversion."""
    profile = im.info.get("icc_profile")
    if profile:
        with suppress(ImageCms.PyCMSError, OSError):
            return ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                             ImageCms.createProfile("sRGB"), outputMode="RGB")
    return im.convert("RGB")


def _rows_copied(im: Image.Image, band_bytes: int = 64 << 20) -> np.ndarray:
    """``np.asarray(im)`` for an 8-bit L/RGB/RGBA image, copied out in bands of rows so that a
    huge image costs its pixels twice (Pillow's and the array), not three times."""
    w, h = im.size
    bands = len(im.getbands())
    out = np.empty((h, w) if bands == 1 else (h, w, bands), np.uint8)
    step = max(1, band_bytes // (w * bands))
    for y in range(0, h, step):
        out[y:y + step] = np.asarray(im.crop((0, y, w, min(h, y + step))))
    return out


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup v2 limit; None
    where neither can be read (not Linux)."""
    found = []
    with suppress(OSError, ValueError, StopIteration), open("/proc/meminfo") as f:
        found.append(int(next(line for line in f if line.startswith("MemAvailable:")).split()[1])
                     * 1024)
    with (suppress(OSError, ValueError), open("/sys/fs/cgroup/memory.max") as f,
          open("/sys/fs/cgroup/memory.current") as g):
        limit = f.read().strip()
        if limit != "max":
            found.append(int(limit) - int(g.read()))
    return min(found) if found else None


def _check_memory(im: Image.Image, name: str) -> None:
    """Refuse, in one line, an image whose decoding needs more memory than is available."""
    w, h = im.size
    deep = im.mode.startswith("I") or im.mode == "F" or "16" in str(im.tile[0][3] if im.tile else "")
    need = 2 * w * h * len(im.getbands()) * (2 if deep else 1) + (256 << 20)
    free = available_memory()
    if free is not None and need > free:
        raise ImageReadError(f"{name}: {w}x{h} pixels need about {need / 2**30:.1f} GiB of memory "
                             f"to decode and restore, {free / 2**30:.1f} GiB are available")


def _to_array(im: Image.Image, name: str) -> np.ndarray:
    """A loaded Pillow image as uint8/uint16 HxW, HxWx3 or HxWx4."""
    mode = im.mode
    if mode in ("L", "RGB", "RGBA"):
        return _rows_copied(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)  # I;16B is big-endian
    if mode in ("I", "F"):
        a = np.asarray(im)
        if mode == "F" or a.min() < 0 or a.max() > 65535:
            raise ImageReadError(f"{name}: unsupported pixel values ({mode}: 32-bit "
                                 f"{'float' if mode == 'F' else 'integers beyond 16 bits'})")
        return a.astype(np.uint16)
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(im))
    return np.asarray(im.convert("RGBA" if im.has_transparency_data else "RGB"))


def _pixels(im: Image.Image, data: bytes, name: str) -> np.ndarray:
    if im.format == "PNG" and im.tile and im.tile[0][3] in ("RGB;16B", "RGBA;16B"):
        return _png16_colour(im, data, name)
    if im.format == "JPEG" and im.mode == "CMYK" and "adobe" not in im.info:
        # Pillow assumes Adobe's inverted CMYK; without an Adobe APP14 marker the data is plain.
        im.tile = [(*im.tile[0][:3], ("CMYK", ""))]
    elif (im.format == "TIFF" and len(im.getbands()) > 1
          and max(np.atleast_1d(im.tag_v2.get(258, 8))) > 8):  # BitsPerSample
        return _tiff_deep_colour(data, name)
    im.load()
    return _to_array(im, name)


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the stored orientation
        return 1


def oriented_grid(tables: dict[int, np.ndarray], orientation: int, h: int, w: int) -> JpegGrid:
    """The JPEG grid of a stored ``h`` x ``w`` image after its EXIF ``orientation`` is applied:
    a flipped axis starts with a partial block, a transposed one swaps the table's axes."""
    turn = _ORIENT.get(orientation)
    if turn is None or min(h, w) < 2:
        return JpegGrid.from_tables(tables)
    rows = turn(np.broadcast_to(np.arange(h)[:, None], (h, w)))  # views: no full-size copies
    cols = turn(np.broadcast_to(np.arange(w)[None, :], (h, w)))
    transposed = rows[1, 0] == rows[0, 0]
    along_y, along_x = (cols[:, 0], rows[0, :]) if transposed else (rows[:, 0], cols[0, :])

    def first_block(stored: np.ndarray) -> int:
        return 0 if stored[1] > stored[0] else (int(stored[0]) + 1) % 8
    return JpegGrid.from_tables(tables, (first_block(along_y), first_block(along_x)), transposed)


def _decode(data: bytes, name: str, allow_large: bool) -> LoadedImage:
    if not data:
        raise ImageReadError(f"{name}: empty file")
    im = _open(data, name)
    w, h = im.size
    if w * h > MAX_PIXELS and not allow_large:
        raise ImageReadError(f"{name}: {w}x{h} pixels ({w * h / 1e6:.0f} MP) is over the "
                             f"{MAX_PIXELS / 1e6:.0f} MP limit (possible decompression bomb); "
                             "use --allow-large (allow_large=True) to read it")
    _check_memory(im, name)
    fmt = im.format or "image"
    try:
        array = _pixels(im, data, name)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{name}: not enough memory to decode {w}x{h} pixels") from None
    except Exception as err:  # Pillow/libjpeg/zlib errors all mean a bad file
        raise ImageReadError(f"{name}: truncated or corrupt {fmt} ({one_line(err)})") from err
    orientation = _orientation(im)
    array = np.require(_ORIENT.get(orientation, lambda a: a)(array), requirements=["C", "W"])
    tables = read_quant_tables(im) if fmt == "JPEG" else None
    grid = oriented_grid(tables, orientation, h, w) if tables else None
    return LoadedImage(array=array, path=name, format=fmt,
                       icc_profile=icc_matching(im.info.get("icc_profile"),
                                                array.shape[2] if array.ndim == 3 else 1),
                       quant_tables=tables, quality=estimate_quality(tables) if tables else None,
                       has_alpha=array.ndim == 3 and array.shape[2] == 4, jpeg_grid=grid)


def read_image(source: str | os.PathLike | bytes, *, allow_large: bool = False,
               storage_options: dict | None = None) -> LoadedImage:
    """Read a local path, an fsspec URL (``s3://``, ``memory://``, ``file://``...) opened with
    ``storage_options``, or raw bytes. Any failure raises :class:`ImageReadError`."""
    data, name = _fetch(source, storage_options)
    try:
        return _decode(data, name, allow_large)
    except ImageReadError:
        raise
    except Exception as err:  # never let a decoder traceback through
        raise ImageReadError(f"{name}: cannot read image ({one_line(err)})") from err


def load_images(urls: Sequence[str], channels: int, storage_options: dict | None = None
                ) -> list[np.ndarray]:
    """The images at ``urls`` as uint8 gray (``channels`` 1) or RGB (3), e.g. a validation set."""
    return [to_channels(read_image(u, storage_options=storage_options).array, channels) for u in urls]
