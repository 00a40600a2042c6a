"""Find the traces of JPEG compression in decoded pixels: the 8x8 grid and the luma steps.

For images without a file's tables (a PNG that was once a JPEG, a napari layer, a crop):
on the JPEG's grid, most high-frequency DCT coefficients of the decoded pixels sit at 0 and
the low ones at multiples of the quantization steps; on any other grid, and in an image that
was never compressed, they do not. The table is the coarsest IJG table (libjpeg's, used by
nearly every encoder) whose steps the low-frequency coefficients sit on.
"""
from __future__ import annotations

import numpy as np

from .block_dct import BLOCK, blocks_dct
from .codec import ijg_table
from .consistency import JpegGrid, ycc_planes

CROP = 512  # px of the image's centre examined (enough blocks; bounded time)
SEARCH = 256  # px of it tried on each of the 64 grids
HIGH = np.add.outer(np.arange(BLOCK), np.arange(BLOCK)) >= 6  # frequencies mostly zeroed
LOW = [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0)]
# The grid must stand out from the other 63: more high-frequency zeros by this share, or
# (smooth pictures, zeros everywhere) at most this ratio of the others' non-zeros.
MIN_CONTRAST = 0.1
MAX_NONZERO_RATIO = 0.5
MIN_AWAY = 50  # coefficients off zero needed to judge a table
NOISE = 0.4  # spread of decoded coefficients around the lattice (pixel rounding), DCT units
MAX_QUALITY = 94  # above, IJG steps are mostly 1: any picture fits, so nothing can be told


def _centre(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Y (or gray) plane of the image's centre, level-shifted, and where any channel
    is clipped (0 or 255: off the lattice). The cut keeps the image's 8x8 phase."""
    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):  # alpha is not compressed by JPEG
        pixels = pixels[..., :-1]
    h, w = pixels.shape[:2]
    top, left = max(0, (h - CROP) // 2) // BLOCK * BLOCK, max(0, (w - CROP) // 2) // BLOCK * BLOCK
    centre = pixels[top:top + CROP + BLOCK, left:left + CROP + BLOCK]
    centre = centre.reshape(centre.shape[0], centre.shape[1], -1)
    return ycc_planes(centre)[0], ((centre == 0) | (centre == 255)).any(axis=2)


def _coefficients(y: np.ndarray, clipped: np.ndarray, oy: int, ox: int) -> np.ndarray:
    """(blocks, 8, 8) coefficients of the whole blocks from (oy, ox) without clipped pixels."""
    nb_y, nb_x = (y.shape[0] - oy) // BLOCK, (y.shape[1] - ox) // BLOCK
    a = y[oy:oy + nb_y * BLOCK, ox:ox + nb_x * BLOCK]
    bad = clipped[oy:oy + nb_y * BLOCK, ox:ox + nb_x * BLOCK]
    bad = bad.reshape(nb_y, BLOCK, nb_x, BLOCK).any(axis=(1, 3)).reshape(-1)
    return blocks_dct(a).reshape(-1, BLOCK, BLOCK)[~bad]


def _fits(coef: np.ndarray, steps: np.ndarray) -> bool:
    """Whether the low-frequency coefficients (blocks, len(LOW)) sit on multiples of
    ``steps``: those away from 0 average ``cos(2 pi x / q)`` within 0.1 of what the rounding
    of decoded pixels leaves (``exp(-2 pi^2 NOISE^2 / q^2)``)."""
    away = np.abs(coef) >= steps / 2
    if away.sum() < MIN_AWAY:
        return False
    q = np.broadcast_to(steps, coef.shape)[away]
    score = np.cos(2 * np.pi * coef[away] / q).mean()
    return bool(score >= np.exp(-2 * np.pi ** 2 * NOISE ** 2 / q ** 2).mean() - 0.1)


def find_jpeg_grid(pixels: np.ndarray) -> JpegGrid | None:
    """The JPEG grid and IJG-equivalent luma table of uint8 HxW / HxWx3 pixels, or None when
    they show no JPEG compression (never compressed, resized, or quality 100)."""
    if pixels.dtype != np.uint8 or min(pixels.shape[:2]) < 4 * BLOCK:
        return None
    y, clipped = _centre(pixels)
    near = (slice(0, SEARCH + BLOCK),) * 2
    zeros = np.array([[(np.abs(_coefficients(y[near], clipped[near], oy, ox)[:, HIGH]) < 1).mean()
                       for ox in range(BLOCK)] for oy in range(BLOCK)])
    if np.isnan(zeros).any():  # no block free of clipping
        return None
    oy, ox = np.unravel_index(zeros.argmax(), zeros.shape)
    others = np.median(zeros)
    if zeros[oy, ox] - others < MIN_CONTRAST and 1 - zeros[oy, ox] > MAX_NONZERO_RATIO * (1 - others):
        return None
    coef = _coefficients(y, clipped, oy, ox)[:, [f[0] for f in LOW], [f[1] for f in LOW]]
    for quality in range(1, MAX_QUALITY + 1):  # the coarsest table the coefficients fit
        table = ijg_table(quality)
        if _fits(coef, np.array([table[f] for f in LOW], np.float32)):
            return JpegGrid.ijg(quality, (int(oy), int(ox)))
    return None
