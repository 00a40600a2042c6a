"""Measure where each shipped model gains: fit its calibration on training images.

    python bench/calibrate.py                      # every shipped model
    python bench/calibrate.py --model runs/x/model.pt

For each model, 48 crops of 128 px on their source's 8x8 grid and 48 off it (train-bsds-color
and train-extra, never a validation image) are compressed at Q10...Q100 (steps of 5),
restored, clipped to the quantization intervals and scored. Writes the calibration beside
the weights (``<weights>.calibration.json``, read by ``load_model``) and bench/results/calibrate.md.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.jpeg.consistency import MIN_GAIN_DB
from napari_jpeg_restore.core.registry import available_models
from napari_jpeg_restore.core.restoration.calibration import QUALITIES, calibrate_weights
from sections import RESULTS
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="*", default=[m.name for m in available_models() if m.has_weights])
    ap.add_argument("--crops", type=int, default=48, help="crops of each kind (default 48)")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    files = expand(str(SHARED / "train-bsds-color"))[::8] + expand(str(SHARED / "train-extra"))[::6]
    md = ["# Where each model gains: calibration on training images", "",
          (f"Machine: {describe()}. `python bench/calibrate.py` (see its docstring); "
           "`jpeg-restore calibrate` does the same for any weights file."), "",
          ("PSNR gain (dB) after clipping to the quantization intervals, on 128 px training crops "
           "cut on their source's 8x8 grid (the source was a JPEG, as when a file is re-saved) and "
           f"off it. A quality is restored only where both gain at least {MIN_GAIN_DB} dB "
           "(neighbouring qualities included); elsewhere the image passes through unchanged."), ""]
    for name in a.model:
        with tqdm(desc=name, unit="crop", mininterval=5) as bar:
            def progress(done: int, total: int, bar: tqdm = bar) -> None:
                bar.total = total
                bar.update(done - bar.n)
            cal = calibrate_weights(name, files, a.crops, QUALITIES, progress=progress)
        md += [f"## {name}", "", "| Q | " + " | ".join(cal.gains) + " | restored |",
               "|---|" + "---|" * (len(cal.gains) + 1)]
        for i, q in enumerate(QUALITIES):
            md.append(f"| {q} | " + " | ".join(f"{g[i]:+.2f}" for g in cal.gains.values())
                      + f" | {'yes' if cal.restores(q) else 'no'} |")
        md.append("")
    (RESULTS / "calibrate.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
