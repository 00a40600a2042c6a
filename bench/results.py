"""The benchmark table: JPEG vs ffmpeg's ``spp`` deblocking filter (when ffmpeg is installed) vs
ARCNN vs CRL-lite on both shared validation sets (PSNR / SSIM / PSNR-B per quality), plus speed
and peak RSS restoring a 12-megapixel image with each shipped model. Writes bench/results/results.md
and bench/results/results.json.

spp has no notion of JPEG quality: its quantizer ``qp`` and ``mode`` are chosen per quality by a
grid search on training images (never on the validation sets).

    python bench/results.py [--limit N] [--quality 10 20 30 40]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.evaluation.protocol import degrade, evaluate_model
from napari_jpeg_restore.core.imageio.reading import load_images
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.registry import MODELS
from sections import RESULTS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
SETS = [("val-gray-bsd68", 1), ("val-cbsd68", 3)]
FAMILIES = [("arcnn", "ARCNN"), ("crl", "CRL-lite")]
SPP_QP = [1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28]
SPP_MODES = ["hard", "soft"]


def has_spp() -> bool:
    """ffmpeg is on PATH and was built with the (GPL) spp filter."""
    exe = shutil.which("ffmpeg")
    if not exe:
        return False
    out = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == ["spp"] for line in out.splitlines())


def spp(image: np.ndarray, qp: int, mode: str) -> np.ndarray:
    """ffmpeg's simple postprocessing filter (quality 6: all 64 DCT shifts) on raw pixels; colour
    goes through planar RGB so no YUV round trip is added."""
    h, w = image.shape[:2]
    fmt = "gray" if image.ndim == 2 else "rgb24"
    chain = f"spp=quality=6:qp={qp}:mode={mode}"
    if image.ndim == 3:
        chain = f"format=gbrp,{chain},format=rgb24"
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", fmt, "-s", f"{w}x{h}", "-i", "-",
         "-vf", chain, "-f", "rawvideo", "-pix_fmt", fmt, "-"],
        input=np.ascontiguousarray(image).tobytes(), capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(image.shape)


def tune_spp(images: list[np.ndarray], quality: str) -> tuple[int, str]:
    """The (qp, mode) with the best mean PSNR on ``images`` at ``quality``."""
    pairs = [(im, degrade(im, quality)) for im in images]
    scores = {(qp, mode): np.mean([psnr(c, spp(j, qp, mode)) for c, j in pairs])
              for qp in SPP_QP for mode in SPP_MODES}
    return max(scores, key=scores.get)


def shipped(family: str, channels: int) -> str | None:
    names = [m.name for m in MODELS.values() if m.family == family and m.channels == channels and m.has_weights]
    return names[0] if names else None


def speed_12mp(name: str, channels: int, repeats: int = 3) -> tuple[float, float]:
    """(MP/s, peak RSS in MB) restoring a 12-MP image in a fresh process (bench/speed.py); the
    median of ``repeats`` runs, as shared cloud cores vary by 10-25% from run to run."""
    runs = [subprocess.run([sys.executable, str(Path(__file__).with_name("speed.py")), "--child", "12",
                            str(channels), name], check=True, capture_output=True, text=True).stdout.split()
            for _ in range(repeats)]
    rss, seconds = (float(np.median([float(r[i]) for r in runs])) for i in (0, 1))
    side = int(12e6 ** 0.5)
    return side * side / 1e6 / seconds, rss


def cell(scores: dict[str, float] | None) -> str:
    return "-" if scores is None else f"{scores['psnr']:.2f} / {scores['ssim']:.4f} / {scores['psnr_b']:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="validation images per set (default: all)")
    ap.add_argument("--quality", nargs="+", default=["10", "20", "30", "40"])
    ap.add_argument("--tune-images", type=int, default=6, help="training images for the spp grid search")
    a = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"error: {SHARED} not found (the shared validation sets sit beside the checkout)")
    use_spp = has_spp()
    train_urls = expand(str(SHARED / "train-bsds-color"))[: a.tune_images]
    lines = [f"Machine: {describe()}", "",
             "Cells are PSNR (dB) / SSIM / PSNR-B (dB), means over the validation set; colour metrics "
             "on RGB. JPEG by libjpeg through Pillow (4:2:0 for colour).", ""]
    record: dict = {"machine": describe(), "sets": {}}
    for folder, channels in SETS:
        images = load_images(expand(str(SHARED / folder))[: a.limit], channels)
        methods: list[tuple[str, dict[str, dict | None]]] = []
        jpeg_rows = evaluate_model(images, a.quality, None, progress=False)
        methods.append(("JPEG", {r.quality: r.jpeg for r in jpeg_rows}))
        notes = []
        if use_spp:
            tune = load_images(train_urls, channels)
            spp_scores = {}
            for q in a.quality:
                qp, mode = tune_spp(tune, q)
                notes.append(f"Q{q}: qp={qp} {mode}")
                spp_scores[q] = evaluate_model(images, [q], None, restorer=partial(spp, qp=qp, mode=mode),
                                               progress=False)[0].restored
            methods.append(("ffmpeg spp", spp_scores))
        for family, label in FAMILIES:
            name = shipped(family, channels)
            rows = evaluate_model(images, a.quality, name, device="cpu", progress=False) if name else []
            methods.append((f"{label} (`{name}`)" if name else f"{label} (not shipped)",
                            {r.quality: r.restored for r in rows}))
        lines += [f"## {folder} ({len(images)} images, {'gray' if channels == 1 else 'RGB'})", "",
                  "| Q | " + " | ".join(m for m, _ in methods) + " |", "|---" * (len(methods) + 1) + "|"]
        for q in a.quality:
            lines.append(f"| {q} | " + " | ".join(cell(s.get(q)) for _, s in methods) + " |")
        lines += ["", (f"spp settings (grid search on {len(train_urls)} training images): " + ", ".join(notes))
                  if use_spp else "ffmpeg with the spp filter is not installed: its column is left out.", ""]
        record["sets"][folder] = {m: s for m, s in methods}
        print("\n".join(lines[-len(a.quality) - 6:]), flush=True)
    lines += ["## Speed and memory: one 12-megapixel image, fresh process, tile 512, median of 3 runs", "",
              "| model | MP/s | peak RSS (MB) |", "|---|---|---|"]
    for name, info in sorted(MODELS.items()):
        if info.has_weights:
            mps, rss = speed_12mp(name, info.channels)
            lines.append(f"| `{name}` | {mps:.2f} | {rss:.0f} |")
            record.setdefault("speed", {})[name] = {"mp_per_s": mps, "peak_rss_mb": rss}
            print(lines[-1], flush=True)
    out = RESULTS / "results.md"
    out.write_text("# Benchmark results\n\n" + "\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
