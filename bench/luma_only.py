"""Colour from the gray network (issue 34): how much of a colour model's gain does the gray
restorer give when it restores only the luma of a colour JPEG, its chroma left as decoded?

    python bench/luma_only.py [--qualities 10 20 30 40] [--images 68]

On val-cbsd68 (the benchmark protocol: libjpeg at Q, 4:2:0), three rows per quality as
`jpeg-restore eval` scores them: the JPEG, `crl-lite-color`, and `crl-lite-gray` on the JFIF luma
(Y rounded to 8 bits, restored with the luma table's consistency) put back with the JPEG's Cb and
Cr. If the luma alone comes close to the colour model, a light chroma branch on top of the gray
campaign's network can reach the colour target without a second campaign. Two oracle rows bound
what such a branch can add: the clean image's chroma put under the JPEG's luma, and under the
restored luma.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.engines.selection import open_net
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.evaluation.protocol import degrade, evaluate_model, grid_of
from napari_jpeg_restore.core.imageio.reading import load_images
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.pixels import RGB_TO_YCC
from napari_jpeg_restore.core.restoration.image_restore import restore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import RESULTS, write_section

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
YCC_TO_RGB = np.linalg.inv(RGB_TO_YCC)
OFFSET = np.array([0.0, 128.0, 128.0])


def to_ycc(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ RGB_TO_YCC.T + OFFSET


def to_rgb(ycc: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((ycc - OFFSET) @ YCC_TO_RGB.T), 0, 255).astype(np.uint8)


def luma_rows(images: list[np.ndarray], net, quality: str) -> dict[str, float]:
    """Mean PSNR of the JPEG and of three luma/chroma mixes: the restored luma (8-bit JFIF Y,
    restored with the luma table's consistency) under the JPEG's chroma, and the clean chroma
    under the JPEG's luma and under the restored luma (the oracles)."""
    rows: dict[str, list[float]] = {}
    for clean in images:
        jpeg = degrade(clean, quality)
        ycc, truth = to_ycc(jpeg), to_ycc(clean)
        y = np.clip(np.rint(ycc[..., 0]), 0, 255).astype(np.uint8)
        restored = restore(y, net, jpeg=grid_of(quality), precision="auto").astype(np.float64)
        mixes = {"jpeg": ycc, "luma": np.dstack([restored, ycc[..., 1:]]),
                 "clean chroma": np.dstack([ycc[..., :1], truth[..., 1:]]),
                 "luma, clean chroma": np.dstack([restored, truth[..., 1:]])}
        for name, planes in mixes.items():
            rows.setdefault(name, []).append(psnr(clean, to_rgb(planes)))
    return {name: float(np.mean(v)) for name, v in rows.items()}


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
             "| Q | JPEG PSNR | crl-lite-color | crl-lite-gray on luma, JPEG chroma | "
             "JPEG luma, clean chroma (oracle) | crl-lite-gray on luma, clean chroma (oracle) |",
             "|---|---|---|---|---|---|"]
    short, room = [], []
    for q in a.qualities:
        full = evaluate_model(images, [q], colour, device="cpu", precision="auto", progress=False)[0]
        mix = luma_rows(images, gray, q)
        gain = {k: v - mix["jpeg"] for k, v in mix.items()}
        short.append(full.restored["psnr"] - mix["luma"])
        room.append(gain["luma, clean chroma"] - gain["luma"])
        lines.append(f"| {q} | {mix['jpeg']:.2f} | {full.restored['psnr'] - full.jpeg['psnr']:+.3f} | "
                     f"{gain['luma']:+.3f} | {gain['clean chroma']:+.3f} | {gain['luma, clean chroma']:+.3f} |")
        print(lines[-1], flush=True)
    lines += ["", (f"Gains over JPEG in dB. The luma alone falls {min(short):.2f}-{max(short):.2f} dB "
                   f"short of the colour model (Q{a.qualities[0]}-{a.qualities[-1]}): a chroma branch has "
                   "that much to win back before the gray network's own gain over lite counts toward the "
                   f"colour target. A perfect chroma would add {min(room):.2f}-{max(room):.2f} dB over the "
                   "JPEG's chroma under the restored luma: the ceiling of any chroma branch.")]
    write_section(RESULTS / "luma_only.md", "# Colour from the gray network\n\nWritten by "
                  "`python bench/luma_only.py`; gain over JPEG in dB as `jpeg-restore eval` scores "
                  "it, one section per machine.", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
