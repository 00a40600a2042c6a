"""Speed and memory of restore() per model and engine: megapixels/s of every shipped restorer and
of the larger presets (random weights) in PyTorch and OpenVINO, fp32 and bf16, beside the FBCNN
architecture's network measured in the same run; peak RSS restoring a large image in a fresh
process. Writes this machine's section of bench/results/speed.md (bench/sections.py).

    python bench/speed.py [--large-mp 24] [--threads N] [--note "machine otherwise idle"]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from napari_jpeg_restore.core import restore
from napari_jpeg_restore.core.engines.device import set_threads
from napari_jpeg_restore.core.engines.machine import describe, isa
from napari_jpeg_restore.core.engines.openvino_convert import openvino_cache
from napari_jpeg_restore.core.engines.selection import have_openvino
from napari_jpeg_restore.core.models import count_parameters, create_model
from napari_jpeg_restore.core.registry import MODELS, load_model, save_weights

sys.path.insert(0, str(Path(__file__).parent))
from fbcnn_arch import fbcnn_mps  # noqa: E402
from sections import RESULTS, write_section

PRESETS = [("crl", "base", 1), ("crl", "paper", 1)]  # not shipped for the CPU: random weights
ENGINES = ("torch", "openvino")


def _image(h: int, w: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def megapixels_per_second(weights: str, channels: int, side: int, engine: str, precision: str) -> float:
    """restore() of a ``side``-px square image with the weights file, the second time (the first
    loads the model and, for OpenVINO, converts it and compiles each tile shape)."""
    img = _image(side, side, channels)
    restore(img, weights, engine=engine, precision=precision, device="cpu")
    t = time.perf_counter()
    restore(img, weights, engine=engine, precision=precision, device="cpu")
    return side * side / 1e6 / (time.perf_counter() - t)


def peak_rss_child(mp: float, channels: int, engine: str) -> None:
    """Runs in a fresh process: restore an ``mp``-megapixel image with the shipped default model
    on ``engine`` (auto precision), print peak RSS in MB and seconds. The peak is this process's
    own (VmHWM): getrusage's would include the parent's RSS at fork."""
    side = int((mp * 1e6) ** 0.5)
    t = time.perf_counter()
    restore(_image(side, side, channels), engine=engine, precision="auto", device="cpu")
    seconds = time.perf_counter() - t
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1].split()
    print(int(status[0]) / 1024, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large-mp", type=float, default=24.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--note", default="", help="a word on the machine's load, for the table")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # MP CHANNELS ENGINE
    a = ap.parse_args()
    set_threads(a.threads)
    if a.child:
        peak_rss_child(float(a.child[0]), int(a.child[1]), a.child[2])
        return
    threads = a.threads or torch.get_num_threads()
    engines = [e for e in ENGINES if e == "torch" or have_openvino()]
    tmp = Path(tempfile.mkdtemp(prefix="speed-"))
    cases = [(m.name, str(m.path), m.channels) for m in MODELS.values() if m.has_weights and m.family != "cqe"]
    for family, preset, ch in PRESETS:
        path = tmp / f"{family}-{preset}.pt"
        save_weights(create_model(family, preset, ch), path)
        cases.append((f"{family} {preset} (random weights)", str(path), ch))
    kinds = [(e, p) for e in engines for p in ("fp32", "bf16")]
    names = {"torch": "PyTorch", "openvino": "OpenVINO"}
    lines = ["", f"## Per model, {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {describe()}; ISA: {isa()}; {threads} threads; {a.note or 'load not noted'}.",
             "restore() of a 2-MP random image (1-MP for the base and paper presets), MP/s:", "",
             "| model | parameters | " + " | ".join(f"{names[e]} {p}" for e, p in kinds) + " |",
             "|---|---|" + "---|" * len(kinds)]
    for name, weights, ch in cases:
        side = 1024 if "random" in name else 1448
        mps = [megapixels_per_second(weights, ch, side, e, p) for e, p in kinds]
        n = count_parameters(load_model(weights))
        lines.append(f"| {name} | {n / 1e6:.2f} M | " + " | ".join(f"{v:.2f}" for v in mps) + " |")
        print(lines[-1], flush=True)
    for path in tmp.glob("*.pt"):  # the random presets' conversions are no use to anyone later
        shutil.rmtree(openvino_cache(path), ignore_errors=True)
    fb = [fbcnn_mps(threads, p, e) for e, p in kinds]
    lines.append("| FBCNN architecture, network alone on a 512-px tile (bench/fbcnn_arch.py) | 71.92 M | "
                 + " | ".join(f"{v:.3f}" for v in fb) + " |")
    print(lines[-1], flush=True)
    lines += ["", f"Peak RSS restoring a {a.large_mp:g}-megapixel image (shipped default model, "
              "tile 512, auto precision, fresh process):", ""]
    for engine in engines:
        for ch in (1, 3):
            out = subprocess.run([sys.executable, __file__, "--child", str(a.large_mp), str(ch), engine] +
                                 (["--threads", str(a.threads)] if a.threads else []),
                                 check=True, capture_output=True, text=True).stdout.split()
            lines.append(f"- {names[engine]}, {'gray' if ch == 1 else 'RGB'}: {float(out[-2]):.0f} MB "
                         f"peak RSS, {float(out[-1]):.1f} s")
            print(lines[-1], flush=True)
    write_section(RESULTS / "speed.md", "# Speed per model", "\n".join(lines).strip())


if __name__ == "__main__":
    main()
