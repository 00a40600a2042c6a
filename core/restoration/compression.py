"""What a restoration assumes about an image's compression, decided once per image: the
quality (for the skip-above-quality limit, the model's calibration and a table-conditioned
model), the luma table a conditioned model sees, and the grid the result is kept consistent
with. Sources, strongest first: the user's ``assume_quality``; the file's tables, unless the
pixels show much heavier compression than the last tables say (a re-saved JPEG: its earlier,
stronger compression is what needs removing); the quality encoder's estimate from the pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engines.selection import open_quality_net
from ..jpeg.codec import ijg_table
from ..jpeg.consistency import JpegGrid
from ..quality.reading import pixel_quality
from ..registry import MODELS, QUALITY_MODELS

RESAVED_FROM = 75  # files whose tables say this quality or more are checked against their pixels
RESAVED_GAP = 20  # pixels this much below the tables' quality: compressed harder before...
RESAVED_SEEN = 50  # ...and reading this or lower: never-compressed pictures read 64 and up
# (bundled samples; BSDS photos 87 and up; Q100 of them the same), so only a clearly heavy
# earlier compression overrules the tables


@dataclass(frozen=True)
class Compression:
    """``quality``: the IJG quality the restoration assumes (None: no compression known);
    ``source``: ``assumed``, ``tables``, ``pixels`` or ``none``; ``grid``: the JPEG the result
    is kept consistent with (only while its tables are what the pixels went through);
    ``tables_quality``: what the file's tables say, when they were overruled."""

    quality: int | None
    source: str
    grid: JpegGrid | None = None
    tables_quality: int | None = None

    @property
    def steps(self) -> np.ndarray:
        """The 8x8 luma table a conditioned restorer sees: the file's own while it is trusted,
        else the IJG table of the assumed quality (all ones without compression)."""
        if self.source == "tables" and self.grid is not None:
            return self.grid.luma.astype(np.float32)
        return ijg_table(self.quality or 100).astype(np.float32)

    def describe(self) -> str:
        """A few words for users: "Q37", "Q15 (assumed)", "Q20 (estimated from pixels; the
        tables say Q95)"."""
        if self.quality is None:
            return "no JPEG compression found"
        if self.source == "tables":
            return f"Q{self.quality}"
        also = f"; the tables say Q{self.tables_quality}" if self.tables_quality else ""
        return f"Q{self.quality} ({'assumed' if self.source == 'assumed' else 'estimated from pixels'}{also})"


def pixel_estimate(planes: np.ndarray, offset: tuple[int, int] | None = None,
                   device: str = "auto", engine: str = "auto") -> int:
    """The IJG quality the shipped quality encoder reads in HxWxC ``planes`` on the 8x8 grid at
    ``offset`` (default: the one found in the pixels; :func:`..quality.reading.pixel_quality`),
    run on ``engine`` (:func:`..engines.selection.open_quality_net`)."""
    net = open_quality_net(None, planes.shape[2], device=device, engine=engine)
    return int(round(np.clip(pixel_quality(net, planes, offset=offset), 1, 100)))


def can_estimate() -> bool:
    """Whether a quality encoder ships (the restorers' own encoders do not read quality across
    pictures: docs/embeddings.md), so pixel estimates may decide anything."""
    return any(MODELS[name].has_weights for name in QUALITY_MODELS.values())


def assess(planes: np.ndarray, jpeg: JpegGrid | None, assume_quality: int | None = None, *,
           estimate: bool = False, device: str = "auto", engine: str = "auto",
           seen: int | None = None) -> Compression:
    """Decide what restoring HxWxC ``planes`` assumes. ``jpeg``: the file's grid (or the one
    found in its pixels); ``estimate``: read the pixels when nothing else tells the quality
    (a table-conditioned model needs one). Files whose tables say Q75 or more are always checked
    against their pixels, so a re-saved JPEG is restored rather than passed through; ``seen``:
    that pixel reading (:func:`pixel_estimate` on the grid), when the caller already made it."""
    if assume_quality is not None:
        keep = jpeg if jpeg is not None and assume_quality >= jpeg.quality else None
        return Compression(int(assume_quality), "assumed", keep)
    if jpeg is not None:
        if jpeg.quality >= RESAVED_FROM and min(planes.shape[:2]) >= 32 and can_estimate():
            if seen is None:
                seen = pixel_estimate(planes, jpeg.offset, device, engine)
            if seen <= min(jpeg.quality - RESAVED_GAP, RESAVED_SEEN):
                return Compression(seen, "pixels", None, jpeg.quality)
        return Compression(jpeg.quality, "tables", jpeg)
    if estimate and min(planes.shape[:2]) >= 32 and can_estimate():
        return Compression(pixel_estimate(planes, device=device, engine=engine), "pixels")
    return Compression(None, "none")
