"""Inference on the device at hand (CUDA when present): MP/s of each model in fp32 and bf16
autocast, tiled (512) and whole-image; PSNR of the device's output against the CPU's; peak GPU
memory restoring a 24-MP image. Writes a Markdown table (issue 18, section 4).

    python bench/gpu_inference.py --out bench/results/gpu_inference.md [--weights runs/x/model.pt ...]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.engines.precision import autocast
from napari_jpeg_restore.core.evaluation.demo import SAMPLE
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.imageio.reading import read_image
from napari_jpeg_restore.core.jpeg.codec import compress
from napari_jpeg_restore.core.pixels import to_channels
from napari_jpeg_restore.core.registry import MODELS, load_model
from napari_jpeg_restore.core.restoration.image_restore import restore


def test_pair(channels: int, megapixels: float) -> tuple[np.ndarray, np.ndarray]:
    """(clean, JPEG Q30): the bundled sample tiled out to about ``megapixels``."""
    clean = to_channels(read_image(SAMPLE).array, channels)
    side = int(np.sqrt(megapixels * 1e6)) // 8 * 8
    reps = [-(-side // n) for n in clean.shape[:2]]
    big = np.ascontiguousarray(np.tile(clean, reps + [1] * (clean.ndim - 2))[:side, :side])
    return big, compress(big, 30)


def speed(model, image: np.ndarray, device: torch.device, precision: str, tile: int) -> float:
    def run() -> None:
        with autocast(precision, device):
            restore(image, model, tile=tile, device=device, calibrated=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
    run()  # warm-up (cudnn autotuning, first allocations)
    t = time.perf_counter()
    run()
    return image.shape[0] * image.shape[1] / 1e6 / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--weights", nargs="*", default=[], help="more weights files to measure")
    p.add_argument("--megapixels", type=float, default=4.0)
    p.add_argument("--large-megapixels", type=float, default=24.0)
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = device.type == "cuda"
    names = [m.name for m in MODELS.values() if m.has_weights] + a.weights
    lines = [f"# Inference on {device.type.upper()}", "", f"Machine: {describe()}", "",
             (f"Test image: the bundled sample mirrored to {a.megapixels:g} MP, JPEG Q30. "
             "MP/s of the whole restore() call, second run."), "",
             ("| model | fp32 tile 512 | fp32 whole | bf16 tile 512 | bf16 whole | "
             "bf16 − fp32 PSNR (dB) | device − CPU PSNR (dB) |"), "|---|---|---|---|---|---|---|"]
    for name in names:
        model = load_model(name).to(device)
        channels = model.cfg.in_channels
        _, image = test_pair(channels, a.megapixels)
        side = max(image.shape[:2])
        cells = [f"{speed(model, image, device, prec, tile):.2f}" for prec in ("fp32", "bf16")
                 for tile in (512, side)]
        clean, small = test_pair(channels, 0.25)
        out = {}
        for prec in ("fp32", "bf16"):
            with autocast(prec, device):
                out[prec] = psnr(clean, restore(small, model, device=device, calibrated=False))
        on_cpu = psnr(clean, restore(small, model.to("cpu"), device="cpu", calibrated=False))
        model.to(device)
        cells += [f"{out['bf16'] - out['fp32']:+.3f}", f"{out['fp32'] - on_cpu:+.4f}"]
        label = Path(name).parent.name if name.endswith(".pt") else name  # a run folder's name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    if device.type == "cuda":
        _, big = test_pair(1, a.large_megapixels)
        torch.cuda.reset_peak_memory_stats()
        heaviest = names[-1]
        restore(big, load_model(heaviest).to(device), tile=512, device=device, calibrated=False)
        lines += ["", (f"Peak GPU memory restoring a {a.large_megapixels:g}-MP image with {heaviest} "
                      f"(tile 512): {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
