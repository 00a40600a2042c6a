"""Peak memory and time of `jpeg-restore restore --allow-large` on large gray JPEGs.

    python bench/large_images.py [--sizes 24 100 900] [--model crl-lite-gray]

Each size is a gray JPEG (Q30) tiled from the bundled astronaut sample, written once into
runs/large/ by a separate process; the restore command runs in a fresh process whose peak
resident memory (VmHWM, read from the kernel when it exits) and wall time are recorded.
Rows are added to bench/results/large_images.md, with the machine.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from sections import RESULTS

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "large"
MAKE = """
import sys
import numpy as np
from PIL import Image
from napari_jpeg_restore.core.evaluation.demo import SAMPLE
side = int(sys.argv[2])
tile = np.asarray(Image.open(SAMPLE).convert("L"))
reps = -(-side // tile.shape[0])
Image.fromarray(np.tile(tile, (reps, reps))[:side, :side]).save(sys.argv[1], quality=30)
"""
# Runs the CLI in-process and reports its own peak (VmHWM) at exit: exact for this process,
# unlike a child's ru_maxrss, which starts at the forking parent's peak.
RUN = """
import atexit, sys
from napari_jpeg_restore.core.cli import main
def peak():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print("PEAK_KB", line.split()[1], file=sys.stderr)
atexit.register(peak)
sys.exit(main(sys.argv[1:]))
"""


def measure(megapixels: int, model: str) -> tuple[float, float, int]:
    side = int((megapixels * 1e6) ** 0.5) // 8 * 8
    src = WORK / f"gray-{megapixels}mp.jpg"
    if not src.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", MAKE, str(src), str(side)], check=True)
    out = WORK / f"out-{megapixels}"
    for old in out.glob("*"):
        old.unlink()
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUN, "restore", str(src), "-o", str(out),
                           "--model", model, "--allow-large"], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    peak_kb = int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0])
    return side * side / 1e6, seconds, peak_kb * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[24, 100, 900], help="megapixels")
    ap.add_argument("--model", default="crl-lite-gray")
    ap.add_argument("--note", default="", help="e.g. what else ran on the machine")
    a = ap.parse_args()
    from napari_jpeg_restore.core.engines.machine import describe

    md = RESULTS / "large_images.md"
    if not md.is_file():
        md.write_text("# Large images: peak memory and time of `jpeg-restore restore --allow-large`\n\n"
                      "Gray JPEG (Q30) tiled from the bundled sample; fresh process each; peak = the "
                      "process's VmHWM; `python bench/large_images.py`.\n\n"
                      "| megapixels | model | wall s | MP/s | peak RSS (GiB) | machine | note |\n"
                      "|---|---|---|---|---|---|---|\n")
    for mp in a.sizes:
        size, seconds, peak = measure(mp, a.model)
        row = (f"| {size:.0f} | `{a.model}` | {seconds:.0f} | {size / seconds:.2f} | "
               f"{peak / 2**30:.2f} | {describe()} | {a.note} |")
        print(row, flush=True)
        with md.open("a") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
