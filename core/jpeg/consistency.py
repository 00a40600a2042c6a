"""Keep a restoration consistent with the JPEG it came from: the "do no harm" layer.

Every 8x8 block of a JPEG stores its DCT coefficients as multiples of the quantization steps
(the file's tables), so the original's coefficients lay within half a step of the decoded
ones. Each band of a restoration is clipped back into that set in the DCT domain (luma:
the steps of the luma table; chroma, subsampled by most encoders, is left as restored).
Clipping can only move a coefficient towards every image the file could have come from.

Where a model does not reliably gain (Q95 and up, where the steps are 1-3 grey levels and
any change shows), its :class:`Calibration` says so and the image passes through unchanged.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..pixels import RGB_TO_YCC
from .block_dct import BLOCK, blocks_dct, blocks_idct
from .codec import estimate_quality, ijg_table

# JFIF RGB -> YCbCr with the offsets removed (Y - 128, Cb - 128, Cr - 128), in float32
_TO_YCC = RGB_TO_YCC.astype(np.float32)
_FROM_YCC = np.linalg.inv(_TO_YCC).astype(np.float32)


@dataclass(frozen=True)
class JpegGrid:
    """How the pixels were compressed: the luma table in the pixels' orientation, its IJG
    quality, and the top-left corner ``(row, col)`` in 0..7 of the first whole 8x8 block."""

    luma: np.ndarray
    quality: int
    offset: tuple[int, int] = (0, 0)
    transposed: bool = False  # the stored image's axes were swapped (EXIF orientation 5-8)

    @classmethod
    def ijg(cls, quality: int, offset: tuple[int, int] = (0, 0)) -> JpegGrid:
        """The grid libjpeg writes at ``quality`` (its standard luma table)."""
        return cls(ijg_table(int(quality)).astype(np.float32), int(quality), offset)

    @classmethod
    def from_tables(cls, tables: dict[int, np.ndarray], offset: tuple[int, int] = (0, 0),
                    transposed: bool = False) -> JpegGrid:
        """From a file's tables (table id -> 8x8 or 64 values as stored)."""
        luma = np.asarray(tables[min(tables)], np.float32).reshape(BLOCK, BLOCK)
        return cls(luma.T.copy() if transposed else luma, estimate_quality(luma).quality,
                   (offset[0] % BLOCK, offset[1] % BLOCK), transposed)


MIN_GAIN_DB = 0.05  # a quality is restored only where the model gains at least this


@dataclass(frozen=True)
class Calibration:
    """A model's measured PSNR gain (dB, after clipping) per JPEG quality on training crops
    of two kinds: cut on their source's 8x8 grid (the photograph was a JPEG before, as most
    are) and off it (it never was). A quality is restored only where both gain."""

    qualities: np.ndarray  # (n,) ascending IJG qualities
    gains: dict[str, np.ndarray]  # kind -> (n,) gain in dB

    def restores(self, quality: int) -> bool:
        """Whether the model gains at ``quality``: both fitted neighbours gain >= MIN_GAIN_DB
        for every kind of crop (beyond the fitted range: the nearest one)."""
        q = np.asarray(self.qualities)
        worst = np.min(np.stack(list(self.gains.values())), axis=0)
        near = q[np.abs(q - quality).argmin()]
        lo, hi = q[q <= quality], q[q >= quality]
        around = [lo[-1] if len(lo) else near, hi[0] if len(hi) else near]
        return bool(all(worst[q == a][0] >= MIN_GAIN_DB for a in around))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({
            "min_gain_db": MIN_GAIN_DB, "qualities": [int(q) for q in self.qualities],
            "gains_db": {k: np.round(v, 3).tolist() for k, v in self.gains.items()}},
            indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        blob = json.loads(Path(path).read_text())
        return cls(np.asarray(blob["qualities"]),
                   {k: np.asarray(v, np.float64) for k, v in blob["gains_db"].items()})


def calibration_path(weights_path: str | Path) -> Path:
    """Where a weights file's calibration lives: ``model.pt`` -> ``model.calibration.json``."""
    p = Path(weights_path)
    return p.with_name(p.stem + ".calibration.json")


def ycc_planes(pixels: np.ndarray) -> np.ndarray:
    """HxWx1 (gray) or HxWx3 (RGB) 0..255 values as level-shifted float32 planes (C, H, W):
    gray - 128, or JFIF Y/Cb/Cr - 128."""
    a = pixels.astype(np.float32)
    if a.shape[2] == 1:
        return a.transpose(2, 0, 1) - 128
    return np.einsum("pc,hwc->phw", _TO_YCC, a - 128, optimize=True)


def _luma(pixels: np.ndarray) -> np.ndarray:
    """The level-shifted gray or JFIF Y plane of HxWx1 / HxWx3 pixels (first of :func:`ycc_planes`)."""
    a = pixels.astype(np.float32)
    return a[..., 0] - 128 if a.shape[2] == 1 else (a - 128) @ _TO_YCC[0]


def _from_ycc(planes: np.ndarray) -> np.ndarray:
    if planes.shape[0] == 1:
        return planes.transpose(1, 2, 0) + 128
    return np.einsum("cp,phw->hwc", _FROM_YCC, planes, optimize=True) + 128


def _padded(plane: np.ndarray, pad: tuple[int, int]) -> np.ndarray:
    """``plane`` with ``pad = (rows, cols)`` of edge padding above and to the left (to complete
    partial blocks there) and as much below and to the right as completes the last blocks
    (as libjpeg pads)."""
    (h, w), (top, left) = plane.shape, pad
    return np.pad(plane, ((top, (-(top + h)) % BLOCK), (left, (-(left + w)) % BLOCK)), mode="edge")


def constrain(restored: np.ndarray, jpeg: np.ndarray, grid: JpegGrid, first_row: int = 0
              ) -> np.ndarray:
    """``restored`` (uint8 HxWxC, C in 1 or 3, rows ``first_row..`` of the image) with its
    luma clipped to the quantization intervals of the decoded ``jpeg`` of the same rows. A
    band below the top of the image must start on a block boundary of the grid. Only luma
    goes through the DCT; chroma planes are kept as restored."""
    oy, ox = grid.offset
    if first_row and (first_row - oy) % BLOCK:
        raise ValueError(f"band at row {first_row} does not start on the 8x8 grid (offset {oy})")
    pad = ((-oy) % BLOCK if first_row == 0 else 0, (-ox) % BLOCK)
    planes = ycc_planes(restored)
    c = blocks_dct(_padded(_luma(jpeg), pad))
    r = blocks_dct(_padded(planes[0], pad))
    q = np.round(c / grid.luma)  # the quantized coefficients; r within half a step of them
    r = np.clip(r / grid.luma, q - 0.5, q + 0.5, out=q)
    r *= grid.luma
    h, w = restored.shape[:2]
    planes[0] = blocks_idct(r)[pad[0]:pad[0] + h, pad[1]:pad[1] + w]
    return np.clip(np.round(_from_ycc(planes)), 0, 255).astype(np.uint8)
