"""What a user waits for: the whole `jpeg-restore restore` command on a 4-megapixel gray JPEG and
on the same picture in colour (process start, imports, model load, decode, restore, PNG write),
each run in a fresh process, per engine and precision, against the FBCNN architecture's network
alone measured in the same run (random weights, the same threads; PyTorch fp32 and its fastest
engine here). Also the fixed cost (the same command on a 64x64 JPEG: start-up, imports, model
load, write), the same picture saved at Q80 (tables at Q75 and up: the quality encoder reads the
pixels first, in case it was re-saved), peak RSS and how busy the cores were (CPU seconds / wall /
threads). Writes this machine's section of bench/results/whole_command.md (bench/sections.py).

    python bench/whole_command.py [--threads 2] [--repeats 3] [--note "machine otherwise idle"]
    python bench/whole_command.py --model crl-gray --color-model crl-color   # candidate models

An AVX2 machine is emulated on an AVX-512 one with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
(the kernels such a machine runs; its clock and caches are not).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from napari_jpeg_restore.core.engines.default_model import default_model_name
from napari_jpeg_restore.core.engines.machine import describe, isa
from napari_jpeg_restore.core.engines.precision import resolve_precision
from napari_jpeg_restore.core.engines.selection import have_openvino
from napari_jpeg_restore.core.jpeg.codec import encode_jpeg
from napari_jpeg_restore.core.registry import DEFAULT_MODELS
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fbcnn_arch import fbcnn_mps  # noqa: E402
from sections import RESULTS, write_section

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
SIDE = 2000  # 4 megapixels
QUALITY = 30
CHECKED = 80  # tables at Q75 and up: the quality encoder reads the pixels first (a re-saved file?)


def four_megapixels(folder: Path, mode: str = "L") -> np.ndarray:
    """A 2000x2000 mosaic of four training photos (1000x1000 each, centre crops), gray (``L``)
    or ``RGB``."""
    quads = []
    for path in sorted(folder.glob("*.jpg"))[:4]:
        im = Image.open(path).convert(mode)
        scale = max(1.0, 1000 / min(im.size))
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        left, top = (im.width - 1000) // 2, (im.height - 1000) // 2
        quads.append(np.asarray(im.crop((left, top, left + 1000, top + 1000))))
    return np.concatenate([np.concatenate(quads[:2], axis=1), np.concatenate(quads[2:], axis=1)])


# Runs in a small process of its own (its peak RSS is what the command inherits at fork: a few
# MB, where this script's, with torch loaded, would be hundreds): times the command given as
# arguments and prints wall s, CPU s and the command's peak RSS MB as JSON.
MEASURE = """import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "cpu": use.ru_utime + use.ru_stime, "rss_mb": use.ru_maxrss / 1024}))
"""


def timed(cmd: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {res['rc']}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each command; the median counts")
    ap.add_argument("--note", default="", help="a word on the machine's load, for the table")
    ap.add_argument("--out", default=str(RESULTS / "whole_command.md"))
    ap.add_argument("--model", help="restore the gray inputs with this model (a name or weights file) "
                    "instead of the default; a section with other models than lite's names them")
    ap.add_argument("--color-model", help="the same for the colour input")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="whole-command-"))
    big = four_megapixels(SHARED / "train-extra")
    (tmp / "big.jpg").write_bytes(encode_jpeg(big, QUALITY))
    (tmp / "checked.jpg").write_bytes(encode_jpeg(big, CHECKED))
    (tmp / "small.jpg").write_bytes(encode_jpeg(big[:64, :64], QUALITY))
    (tmp / "colour.jpg").write_bytes(encode_jpeg(four_megapixels(SHARED / "train-extra", "RGB"), QUALITY))
    exe = str(Path(sys.executable).with_name("jpeg-restore"))
    models = {"gray": a.model or default_model_name(1, "cpu"), "colour": a.color_model or default_model_name(3, "cpu")}
    named = "" if list(models.values()) == [DEFAULT_MODELS[1], DEFAULT_MODELS[3]] else \
        "".join(f", {kind} `{m}`" for kind, m in models.items())  # lite's sections stay unnamed
    lines = ["", f"## Whole command{named}, {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {describe()}; ISA: {isa()}; `--threads {a.threads}`; {a.note or 'load not noted'}.",
             f"Input: a {SIDE}x{SIDE} gray JPEG (Q{QUALITY}, four training photos; the same in colour "
             "for the RGB column); each command in a "
             f"fresh process, median of {a.repeats} (the kinds of run interleaved); engines "
             "converted and cached beforehand. FBCNN: its architecture's network alone on a "
             "512x512 tile in this run (bench/fbcnn_arch.py, 71.92 M parameters), in PyTorch fp32 "
             "(its own implementation's engine) and in the fastest engine and precision measured "
             "here for it.", "",
             f"| engine | precision | whole command s | MP/s | RGB s | RGB MP/s | fixed cost s (64x64 "
             f"input) | Q{CHECKED} file s | cores busy | peak RSS MB | x FBCNN PyTorch fp32 | x FBCNN fastest |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    kinds = [(e, p) for e in ("torch", "openvino") for p in ("fp32", "auto")
             if e == "torch" or have_openvino()]
    runs: dict = {k: ([], [], [], []) for k in kinds}
    for r in range(a.repeats + 1):  # the first round warms caches (conversion, compiled blobs)
        for engine, precision in kinds:
            for name, store in zip(("big", "small", "checked", "colour"), runs[engine, precision]):
                out = tmp / f"out-{engine}-{precision}-{name}-{r}"
                res = timed([exe, "restore", str(tmp / f"{name}.jpg"), "-o", str(out), "--device", "cpu",
                             "--engine", engine, "--precision", precision, "--threads", str(a.threads),
                             "--model", models["colour" if name == "colour" else "gray"]])
                if r:
                    store.append(res)
    numeric = resolve_precision("auto", "cpu")
    fbcnn = {("torch", "fp32"): fbcnn_mps(a.threads, "fp32"),
             ("torch", numeric): fbcnn_mps(a.threads, numeric)}
    if have_openvino():
        fbcnn["openvino", numeric] = fbcnn_mps(a.threads, numeric, "openvino")
    best = max(fbcnn, key=fbcnn.get)
    for engine, precision in kinds:
        big, small, checked, colour = runs[engine, precision]
        run = sorted(big, key=lambda x: x["wall"])[len(big) // 2]
        cost, high, rgb = (sorted(x["wall"] for x in r)[len(r) // 2] for r in (small, checked, colour))
        mps = SIDE * SIDE / 1e6 / run["wall"]
        lines.append(f"| {engine} | {precision} | {run['wall']:.2f} | {mps:.2f} | {rgb:.2f} | "
                     f"{SIDE * SIDE / 1e6 / rgb:.2f} | {cost:.2f} | {high:.2f} | "
                     f"{run['cpu'] / run['wall'] / a.threads:.0%} | {run['rss_mb']:.0f} | "
                     f"{mps / fbcnn['torch', 'fp32']:.1f}x | {mps / fbcnn[best]:.1f}x |")
        print(lines[-1], flush=True)
    lines += ["", "FBCNN network MP/s: " + ", ".join(f"{e} {p} {v:.3f}" for (e, p), v in fbcnn.items())
              + f" (fastest: {best[0]} {best[1]})."]
    write_section(Path(a.out), "# The whole command", "\n".join(lines).strip())
    print(f"wrote this machine's section of {a.out}")


if __name__ == "__main__":
    main()
