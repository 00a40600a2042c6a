"""Colour from the gray network (issue 34): how much of a colour model's gain does the gray
restorer give when it restores only the luma of a colour JPEG, its chroma left as decoded?

    python bench/luma_only.py [--qualities 10 20 30 40] [--images 68]

On val-cbsd68 (the benchmark protocol: libjpeg at Q, 4:2:0), three rows per quality as
`jpeg-restore eval` scores them: the JPEG, `crl-lite-color`, and `crl-lite-gray` on the JFIF luma
(Y rounded to 8 bits, restored with the luma table's consistency) put back with the JPEG's Cb and
Cr. If the luma alone comes close to the colour model, a light chroma branch on top of the gray
campaign's network can reach the colour target without a second campaign.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.engines.selection import open_net
from napari_jpeg_restore.core.evaluation.protocol import evaluate_model, grid_of
from napari_jpeg_restore.core.imageio.reading import load_images
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.pixels import RGB_TO_YCC
from napari_jpeg_restore.core.restoration.image_restore import restore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import RESULTS, write_section

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
YCC_TO_RGB = np.linalg.inv(RGB_TO_YCC)
OFFSET = np.array([0.0, 128.0, 128.0])


def luma_restorer(net, quality: str):
    """RGB JPEG -> RGB with the luma restored by ``net`` and the chroma kept."""
    def run(rgb: np.ndarray) -> np.ndarray:
        ycc = rgb.astype(np.float64) @ RGB_TO_YCC.T + OFFSET
        y = np.clip(np.rint(ycc[..., 0]), 0, 255).astype(np.uint8)
        ycc[..., 0] = restore(y, net, jpeg=grid_of(quality), precision="auto")
        return np.clip(np.rint((ycc - OFFSET) @ YCC_TO_RGB.T), 0, 255).astype(np.uint8)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qualities", nargs="+", default=["10", "20", "30", "40"])
    p.add_argument("--images", type=int, default=68, help="val-cbsd68 images scored (default: all)")
    a = p.parse_args()
    images = load_images(expand(str(DATA / "val-cbsd68"))[: a.images], 3)
    colour = open_net("crl-lite-color", device="cpu", precision="auto")
    gray = open_net("crl-lite-gray", device="cpu", precision="auto")
    lines = ["## Gray restorer on the luma of colour JPEGs, val-cbsd68", "",
             f"Machine: {describe()}", "", f"{len(images)} images.", "",
             "| Q | JPEG PSNR | crl-lite-color gain | crl-lite-gray on luma, JPEG chroma: gain |",
             "|---|---|---|---|"]
    short = []
    for q in a.qualities:
        full = evaluate_model(images, [q], colour, device="cpu", precision="auto", progress=False)[0]
        luma = evaluate_model(images, [q], None, restorer=luma_restorer(gray, q), progress=False)[0]
        short.append(full.restored["psnr"] - luma.restored["psnr"])
        lines.append(f"| {q} | {full.jpeg['psnr']:.2f} | {full.restored['psnr'] - full.jpeg['psnr']:+.3f} | "
                     f"{luma.restored['psnr'] - luma.jpeg['psnr']:+.3f} |")
        print(lines[-1], flush=True)
    lines += ["", (f"The luma alone falls {min(short):.2f}-{max(short):.2f} dB short of the colour "
                   f"model (Q{a.qualities[0]}-{a.qualities[-1]}): a chroma branch has that much to win "
                   "back before the gray network's own gain over lite counts toward the colour target.")]
    write_section(RESULTS / "luma_only.md", "# Colour from the gray network\n\nWritten by "
                  "`python bench/luma_only.py`; gain over JPEG in dB as `jpeg-restore eval` scores "
                  "it, one section per machine.", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
