"""Re-saved JPEGs: compressed hard once (Q_a), then saved again at a high quality (Q_b, same
8x8 grid), so the file's tables say Q_b while the pixels carry Q_a's artifacts. Scores the
default file path before and after the re-saved check (core.compression), on both validation
sets, with the PSNR gain over the re-saved JPEG:

- tables only (before): the restoration trusts the last tables, kept consistent with them and
  passed through where the model's calibration shows no gain at Q_b;
- default (now): the pixel estimate overrules tables of Q75+ when it reads Q50 or less, 20 under.

    python bench/resaved.py [--limit N] [--model NAME ...]

Writes bench/results/resaved.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.imageio.reading import load_images
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.jpeg.codec import compress
from napari_jpeg_restore.core.jpeg.consistency import JpegGrid
from napari_jpeg_restore.core.registry import load_model
from napari_jpeg_restore.core.restoration.compression import Compression, assess
from napari_jpeg_restore.core.restoration.image_restore import restore
from sections import RESULTS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
SETS = {"val-gray-bsd68": ("crl-lite-gray", 1), "val-cbsd68": ("crl-lite-color", 3)}
CASES = [(20, 95), (30, 90), (40, 95), (50, 90), (60, 95), (90, 95)]  # (first, last) quality


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="images per set (default: all 68)")
    a = ap.parse_args()
    lines = ["# Re-saved JPEGs: the tables say one quality, the pixels another", "",
             f"Machine: {describe()}", "", __doc__.split("\n\n")[0].replace("\n", " "), "",
             "Cells: mean PSNR gain over the re-saved JPEG (dB); 'read as' is the median quality "
             "the default path assumed (pixels) or the tables' quality where it kept them.", ""]
    for folder, (model_name, channels) in SETS.items():
        images = load_images(expand(str(SHARED / folder))[: a.limit], channels)
        model = load_model(model_name)
        lines += [f"## {folder} ({len(images)} images), {model_name}", "",
                  "| first, last Q | re-saved JPEG PSNR | tables only: gain dB | default: gain dB | read as (median) | overruled |",
                  "|---|---|---|---|---|---|"]
        for qa, qb in CASES:
            jpeg_db, before, after, read, overruled = [], [], [], [], 0
            for clean in images:
                saved = compress(compress(clean, qa), qb)
                grid = JpegGrid.ijg(qb)
                trusted = Compression(qb, "tables", grid)
                decided = assess(saved if saved.ndim == 3 else saved[..., None], grid)
                overruled += decided.source == "pixels"
                read.append(decided.quality)
                base = psnr(clean, saved)
                jpeg_db.append(base)
                before.append(psnr(clean, restore(saved, model, device="cpu", compression=trusted)) - base)
                after.append(psnr(clean, restore(saved, model, device="cpu", compression=decided)) - base)
            lines.append(f"| {qa}, {qb} | {np.mean(jpeg_db):.2f} | {np.mean(before):+.2f} | "
                         f"{np.mean(after):+.2f} | {np.median(read):.0f} | {overruled}/{len(images)} |")
            print(lines[-1], flush=True)
        lines.append("")
    out = RESULTS / "resaved.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
