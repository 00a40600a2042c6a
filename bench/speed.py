"""Speed and memory of restore() per model preset: megapixels/s on a 2-megapixel image and
peak RSS restoring a large image in a fresh process. Writes bench/speed.md.

    python bench/speed.py [--large-mp 24] [--threads N]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from napari_jpeg_restore.core import restore
from napari_jpeg_restore.core.machine import describe
from napari_jpeg_restore.core.models import count_parameters, create_model
from napari_jpeg_restore.core.precision import cpu_flags
from napari_jpeg_restore.core.registry import load_model

CASES = [("crl", "lite", 1), ("crl", "lite", 3), ("arcnn", "lite", 1), ("crl", "base", 1), ("crl", "paper", 1)]


def _image(h: int, w: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def megapixels_per_second(family: str, preset: str, channels: int, side: int = 1448,
                          precision: str = "fp32") -> float:
    model = create_model(family, preset, channels).eval()
    img = _image(side, side, channels)
    restore(img[:256, :256], model, precision=precision)  # warm-up
    t = time.perf_counter()
    restore(img, model, precision=precision)
    return side * side / 1e6 / (time.perf_counter() - t)


def peak_rss_child(mp: float, channels: int, name: str | None = None) -> None:
    """Runs in a fresh process: restore an ``mp``-megapixel image with the shipped model ``name``
    (default: an untrained crl lite), print peak RSS in MB and seconds."""
    side = int((mp * 1e6) ** 0.5)
    model = load_model(name) if name else create_model("crl", "lite", channels).eval()
    t = time.perf_counter()
    restore(_image(side, side, channels), model)
    seconds = time.perf_counter() - t
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large-mp", type=float, default=24.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)  # MP CHANNELS [MODEL]
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.child:
        peak_rss_child(float(a.child[0]), int(a.child[1]), *a.child[2:])
        return
    native = sorted({"avx512_bf16", "amx_bf16"} & cpu_flags()) or ["none: bf16 is emulated"]
    lines = [f"Machine: {describe()}; native bf16: {', '.join(native)}", "",
             "| model | preset | channels | parameters | MP/s fp32 | MP/s bf16 (2 MP image) |",
             "|---|---|---|---|---|---|"]
    for family, preset, ch in CASES:
        side = 724 if preset in ("paper", "base") else 1448
        mps = [megapixels_per_second(family, preset, ch, side, prec) for prec in ("fp32", "bf16")]
        n = count_parameters(create_model(family, preset, ch))
        lines.append(f"| {family} | {preset} | {ch} | {n / 1e6:.2f} M | {mps[0]:.2f} | {mps[1]:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Peak RSS restoring a {a.large_mp:g}-megapixel image (crl lite, tile 512, fresh process):", ""]
    for ch in (1, 3):
        out = subprocess.run([sys.executable, __file__, "--child", str(a.large_mp), str(ch)] +
                             (["--threads", str(a.threads)] if a.threads else []),
                             check=True, capture_output=True, text=True).stdout.split()
        lines.append(f"- {'gray' if ch == 1 else 'RGB'}: {float(out[0]):.0f} MB peak RSS, {float(out[1]):.1f} s")
        print(lines[-1], flush=True)
    out = Path(__file__).with_name("speed.md")
    kept = out.read_text().partition("\n## ")[2] if out.is_file() else ""  # later sections stay
    out.write_text("\n".join(lines) + "\n" + (f"\n## {kept}" if kept else ""))


if __name__ == "__main__":
    main()
