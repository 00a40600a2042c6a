"""JPEG through Pillow/libjpeg: encode, decode, degrade, and read back quantization tables.

Quality factors are IJG (libjpeg) quality factors: :func:`estimate_quality` rebuilds the
luma table ``jpeg_set_quality`` writes for every quality 1..100 and finds the file's.
"""
from __future__ import annotations

import argparse
import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

# JPEGs whose tables say they are above this quality are left alone by the CLI, the napari
# widget and the archive job unless told otherwise: the shipped models gain at Q90 and lose PSNR
# from Q95 up (bench/results/quality_curve.md).
DEFAULT_SKIP_ABOVE_QUALITY = 90


def quality_factor(text: str) -> int:
    """An argparse type: a JPEG quality factor, 1..100."""
    try:
        q = int(text)
    except ValueError:
        q = 0
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"a JPEG quality must be a whole number in 1..100, got {text!r}")
    return q


SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}

# IJG standard luminance table (ITU-T T.81 Annex K, table K.1), natural (row-major) order.
IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64).reshape(8, 8)


def _check_quality(quality: int) -> None:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) \
            or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality!r}")


def ijg_table(quality: int, base: np.ndarray = IJG_LUMA) -> np.ndarray:
    """``base`` scaled as libjpeg's ``jpeg_set_quality(cinfo, quality, force_baseline=TRUE)``."""
    _check_quality(quality)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255).astype(np.uint16)


_LUMA_TABLES = np.stack([ijg_table(q) for q in range(1, 101)])  # [q - 1] -> 8x8


@dataclass(frozen=True)
class QualityEstimate:
    """IJG quality factor of a luma table; ``exact`` when libjpeg writes exactly that table,
    otherwise the nearest one with its mean absolute difference as ``distance``."""

    quality: int
    distance: float
    exact: bool


def encode_jpeg(image: np.ndarray, quality: int, subsampling: str = "4:2:0") -> bytes:
    """Baseline JPEG bytes of a uint8 HxW (gray) or HxWx3 (RGB) image. ``subsampling`` is the
    chroma subsampling of colour images (gray images have no chroma)."""
    _check_quality(quality)
    if subsampling not in SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {sorted(SUBSAMPLING)}, got {subsampling!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.shape[2:] not in ((), (3,)):
        raise ValueError(f"expected a uint8 HxW or HxWx3 image, got {image.dtype} {image.shape}")
    options = {"quality": int(quality)}
    if image.ndim == 3:
        options["subsampling"] = SUBSAMPLING[subsampling]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", **options)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """uint8 HxW (gray) or HxWx3 (anything else, CMYK included, converted to RGB)."""
    with Image.open(io.BytesIO(data)) as im:
        if im.format != "JPEG":
            raise ValueError(f"not a JPEG ({im.format})")
        return np.array(im if im.mode in ("L", "RGB") else im.convert("RGB"))


def compress(image: np.ndarray, quality: int) -> np.ndarray:
    """One JPEG round trip at ``quality`` (4:2:0 for colour)."""
    return decode_jpeg(encode_jpeg(image, quality))


def double_compress(image: np.ndarray, q1: int, q2: int,
                    shift: tuple[int, int] = (4, 4)) -> np.ndarray:
    """Compress at ``q1``, then compress ``first[dy:, dx:]`` at ``q2`` (its 8x8 grid is shifted
    by ``shift = (dy, dx)``) and paste it back: the output has the input's shape."""
    dy, dx = shift
    h, w = np.shape(image)[:2]
    if not (0 <= dy < h and 0 <= dx < w):
        raise ValueError(f"shift {shift} must be non-negative and inside the {w}x{h} image")
    out = compress(image, q1)
    out[dy:, dx:] = compress(np.ascontiguousarray(out[dy:, dx:]), q2)
    return out


# how training draws a quality from its levels: p(q) ~ q ** -power
WEIGHTINGS = {"uniform": 0.0, "inverse": 1.0, "inverse-sqrt": 0.5}


def quality_levels(low: int = 10, high: int = 90, step: int = 10) -> np.ndarray:
    """The qualities ``low, low + step, ..., <= high``."""
    if step < 1 or not 1 <= low <= high <= 100:
        raise ValueError(f"need 1 <= low <= high <= 100 and step >= 1, got {low}, {high}, {step}")
    return np.arange(low, high + 1, step)


def random_quality(rng: np.random.Generator, low: int = 10, high: int = 90, step: int = 10) -> int:
    """A quality drawn uniformly from ``quality_levels(low, high, step)``."""
    levels = quality_levels(low, high, step)
    return int(levels[rng.integers(len(levels))])


def read_quant_tables(source: bytes | str | os.PathLike | Image.Image) -> dict[int, np.ndarray]:
    """The JPEG's quantization tables by table id, each 8x8 uint16 in natural (row-major) order.

    Pillow's ``Image.quantization`` is already de-zigzagged (natural order); the tests check it
    against the IJG table. Accepts bytes, a path, or an opened Pillow image. Raises ValueError
    when the source is not a JPEG.
    """
    if isinstance(source, Image.Image):
        if source.format != "JPEG":
            raise ValueError(f"not a JPEG ({source.format})")
        return {int(k): np.asarray(v, dtype=np.uint16).reshape(8, 8)
                for k, v in sorted(source.quantization.items())}
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return read_quant_tables(im)
    except UnidentifiedImageError:
        raise ValueError("not a JPEG (unrecognised file)") from None


def estimate_quality(tables: dict[int, np.ndarray] | np.ndarray) -> QualityEstimate:
    """IJG quality of the luma table (table 0 of a :func:`read_quant_tables` dict, or a single
    8x8 / 64-entry table in natural order)."""
    if isinstance(tables, dict):
        if not tables:
            raise ValueError("no quantization tables")
        tables = tables[min(tables)]
    luma = np.asarray(tables, dtype=np.float64)
    if luma.size != 64:
        raise ValueError(f"a quantization table has 64 entries, got {luma.size}")
    distance = np.abs(_LUMA_TABLES - luma.reshape(8, 8)).mean(axis=(1, 2))
    best = int(np.argmin(distance))
    return QualityEstimate(quality=best + 1, distance=float(distance[best]),
                           exact=bool(distance[best] == 0))
