"""The benchmark protocol: compress clean images with libjpeg at quality Q, restore, and score
PSNR / SSIM / PSNR-B of JPEG and restored images against the originals."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..jpeg.codec import compress, double_compress
from ..jpeg.consistency import JpegGrid
from ..restoration.image_restore import restore
from .metrics import evaluate as score

if TYPE_CHECKING:
    from torch import nn

    from ..engines.net import Net

METRICS = ("psnr", "ssim", "psnr_b")


@dataclass
class EvalRow:
    quality: str
    jpeg: dict[str, float]
    restored: dict[str, float] | None = None
    seconds: float = 0.0
    megapixels: float = 0.0


def degrade(image: np.ndarray, quality: str | int) -> np.ndarray:
    """``"10"`` → one pass at Q10; ``"10+30"`` → Q10 then Q30 on a grid shifted by (4, 4);
    ``"none"`` → the image as it is (never compressed: a restorer should leave it alone)."""
    if str(quality) == "none":
        return image.copy()
    parts = [int(p) for p in str(quality).split("+")]
    return compress(image, parts[0]) if len(parts) == 1 else double_compress(image, parts[0], parts[1])


def grid_of(quality: str | int) -> JpegGrid | None:
    """The JPEG a single pass of :func:`degrade` writes (IJG tables, grid from the top left);
    None for double compression (two grids) and for ``"none"``."""
    q = str(quality)
    return JpegGrid.ijg(int(q)) if q.isdigit() else None


def _mean(scores: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([s[m] for s in scores])) for m in METRICS}


def evaluate_model(images: Sequence[np.ndarray], qualities: Sequence[str | int],
                   model: str | nn.Module | Net | None, *, device: str = "auto", tile: int = 512,
                   ensemble: bool = False,
                   restorer: Callable[[np.ndarray], np.ndarray] | None = None,
                   progress: bool = True, precision: str = "fp32") -> list[EvalRow]:
    """Mean metrics per quality. ``model=None`` and no ``restorer`` scores the JPEG row only;
    ``restorer`` replaces the model (e.g. an external filter) when given. The model sees the
    JPEG's grid (:func:`grid_of`), as it does when it restores a file."""
    rows = []
    def run(im: np.ndarray, q: str | int) -> np.ndarray:
        if restorer is not None:
            return restorer(im)
        return restore(im, model, tile=tile, device=device, ensemble=ensemble, jpeg=grid_of(q),
                       precision=precision)
    for q in qualities:
        jpeg_scores, rest_scores, seconds, mp = [], [], 0.0, 0.0
        for clean in tqdm(images, desc=f"Q{q}", unit="img", disable=not progress, leave=False):
            jpeg = degrade(clean, q)
            jpeg_scores.append(score(clean, jpeg))
            if restorer is not None or model is not None:
                t = time.perf_counter()
                out = run(jpeg, q)
                seconds += time.perf_counter() - t
                mp += clean.shape[0] * clean.shape[1] / 1e6
                rest_scores.append(score(clean, out))
        rows.append(EvalRow(str(q), _mean(jpeg_scores), _mean(rest_scores) if rest_scores else None,
                            seconds, mp))
    return rows


def format_table(rows: Sequence[EvalRow], name: str = "restored") -> str:
    """A Markdown table: JPEG and restored metrics and the PSNR gain per quality."""
    head = ("| Q | JPEG PSNR | JPEG SSIM | JPEG PSNR-B | "
            f"{name} PSNR | {name} SSIM | {name} PSNR-B | gain dB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        j = r.jpeg
        cells = [r.quality, f"{j['psnr']:.2f}", f"{j['ssim']:.4f}", f"{j['psnr_b']:.2f}"]
        if r.restored:
            o = r.restored
            cells += [f"{o['psnr']:.2f}", f"{o['ssim']:.4f}", f"{o['psnr_b']:.2f}", f"{o['psnr'] - j['psnr']:+.2f}"]
        else:
            cells += ["-"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
