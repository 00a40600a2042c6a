"""The interface every engine's network offers: :class:`Net` (a restorer) and :class:`QualityNet`
(a quality encoder's read-out), and :func:`run_net`, which runs a restorer on an array of any size."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..jpeg.consistency import Calibration

NOT_A_RESTORER = ("that model is a quality encoder: it estimates quality (jpeg-restore quality, the "
                  "napari inspector) but restores nothing; choose a restorer")


class Net(Protocol):
    """A restoration network ready to run: ``net(x, tables)`` -> the restored NCHW float32 array.
    ``tables``: (N, 64) luma steps for a table-conditioned network (others ignore them)."""

    engine: str
    precision: str
    in_channels: int
    stride: int
    conditioned: bool
    calibration: Calibration | None

    def __call__(self, x: np.ndarray, tables: np.ndarray | None = None) -> np.ndarray: ...


class QualityNet(Protocol):
    """A quality encoder's read-out ready to run: ``net(x)`` -> (N,) JPEG quality 1..100 for an
    NCHW float32 batch in [0, 1] whose sides are multiples of its ``stride``."""

    engine: str
    in_channels: int
    stride: int

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def run_net(net: Net, x: np.ndarray, ensemble: bool = False, tables: np.ndarray | None = None
            ) -> np.ndarray:
    """Run ``net`` on an NCHW float32 array of any size: padded (reflect) to its stride and
    cropped back. ``ensemble``: the mean over the eight rotations and flips of the input (x8
    self-ensemble, eight times the work); the padded sides are multiples of 8, so every
    transform keeps the 8x8 JPEG grid where it was (a quarter turn transposes the table)."""
    s = net.stride
    h, w = x.shape[-2:]
    ph, pw = (-h) % s, (-w) % s
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect" if ph < h and pw < w else "edge")
    if not ensemble:
        return net(x, tables)[..., :h, :w]
    turned = None if tables is None else tables.reshape(-1, 8, 8).transpose(0, 2, 1).reshape(-1, 64)
    out = np.zeros(x.shape, np.float32)
    for flip in (False, True):
        xf = x[..., ::-1] if flip else x
        for k in range(4):
            y = np.rot90(net(np.rot90(xf, k, (-2, -1)), turned if k % 2 else tables), -k, (-2, -1))
            out += y[..., ::-1] if flip else y
    return (out / 8)[..., :h, :w]
