"""Pixel formats every layer shares: colour planes and alpha, values mapped to [0, 1] and back,
gray from colour, and the JFIF YCbCr matrix."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# JPEG/JFIF YCbCr: BT.601 luma weights, full range (Y, Cb, Cr all 0..255, chroma centred on 128).
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # also what Pillow's RGB -> L uses
RGB_TO_YCC = np.array([LUMA_WEIGHTS,
                       [-0.168736, -0.331264, 0.5],
                       [0.5, -0.418688, -0.081312]])  # offsets aside (ITU-T T.871)


@dataclass(frozen=True)
class UnitScale:
    """Maps an image's values to floats where ``low`` -> 0 and ``low + span`` -> 1 (per tile)
    and back to its dtype (per band), clipped to ``[floor, ceil]``."""

    dtype: np.dtype
    low: float
    span: float
    integer: bool
    floor: float = 0.0
    ceil: float = 1.0

    @classmethod
    def of(cls, image: np.ndarray, value_range: tuple[float, float] | None = None) -> UnitScale:
        """``value_range`` (e.g. a napari layer's contrast limits) maps to [0, 1], values beyond
        it pass through the network and are kept (clipped only to the dtype). Without it:
        uint8 by 255; uint16 by the bit depth its values use (8 to 16 bits: 12-bit camera
        data by 4095, so it is restored as its 8-bit version would be); floats by their range
        (or [0, 1] when inside it)."""
        integer = image.dtype in (np.uint8, np.uint16)
        if not integer and not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"unsupported dtype {image.dtype}; use uint8, uint16 or float")
        if not integer and not np.isfinite(image).all():
            raise ValueError("the image has NaN or infinite values; replace them (e.g. "
                             "np.nan_to_num) before restoring")
        if value_range is not None:
            lo, hi = map(float, value_range)
            span = hi - lo or 1.0
            if integer:
                top = float(np.iinfo(image.dtype).max)
                return cls(image.dtype, lo, span, True, -lo / span, (top - lo) / span)
            return cls(image.dtype, lo, span, False, -np.inf, np.inf)
        if image.dtype == np.uint8:
            return cls(image.dtype, 0.0, 255.0, True)
        if image.dtype == np.uint16:
            bits = max(8, int(image.max()).bit_length()) if image.size else 16
            return cls(image.dtype, 0.0, float(2 ** bits - 1), True, 0.0, 65535.0 / (2 ** bits - 1))
        lo, hi = float(image.min()), float(image.max())
        if lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
        return cls(image.dtype, lo, hi - lo or 1.0, False)

    def to_unit(self, a: np.ndarray) -> np.ndarray:
        return ((a.astype(np.float32) - self.low) / self.span).astype(np.float32, copy=False)

    def back(self, y: np.ndarray) -> np.ndarray:
        y = y.clip(self.floor, self.ceil) * self.span + self.low
        return np.round(y).astype(self.dtype) if self.integer else y.astype(self.dtype)


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(colour planes HxWxC with C in 1 or 3, alpha HxW or None) for HxW / HxWx{1,2,3,4}."""
    if image.ndim == 2:
        return image[..., None], None
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected a 2-D gray, RGB or RGBA image, got shape {image.shape}")
    if image.shape[2] in (2, 4):
        return image[..., :-1], image[..., -1]
    return image, None


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 HxW (gray) or HxWx3 from an 8- or 16-bit image (alpha dropped; 16-bit mapped by
    the bit depth its values use, as a restore maps them, so 12-bit data fills 0..255); gray
    uses ITU-R 601 luma as Pillow."""
    if image.ndim == 3 and image.shape[2] in (2, 4):
        image = image[..., :-1]
    if image.dtype != np.uint8:
        image = np.round(UnitScale.of(image).to_unit(image).clip(0, 1) * 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if channels == 1:
        if image.ndim == 3:
            image = np.round(image @ LUMA_WEIGHTS).clip(0, 255).astype(np.uint8)
        return image
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
