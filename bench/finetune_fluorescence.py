"""Fine-tuning on 16-bit gray pictures: fluorescence-like 12-bit camera frames (nuclei, filaments,
shot and read noise) made here, as 16-bit PNGs; `jpeg-restore finetune` from `crl-lite-gray`,
then the held-out frames' gain over JPEG before and after (8-bit views, mapped by 4095 as a
restore maps them), one held-out frame restored as 16-bit data end to end (PSNR in 12-bit
units), and what the model gives up on val-gray-bsd68.

    python bench/finetune_fluorescence.py --minutes 5

Writes bench/results/finetune_fluorescence.{json,md}, one section per machine.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.imageio.reading import load_images, read_image
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.imageio.writing import write_image
from napari_jpeg_restore.core.jpeg.codec import compress
from napari_jpeg_restore.core.pixels import to_channels
from napari_jpeg_restore.core.registry import load_model
from napari_jpeg_restore.core.restoration.image_restore import restore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_own_images import DATA, ROOT, gains, run_finetune  # noqa: E402
from sections import RESULTS, write_section  # noqa: E402

SOURCE = "crl-lite-gray"
FRAMES = ROOT / "runs" / "finetune-bench" / "fluorescence"
HELD_OUT = [str(q) for q in range(10, 100, 10)]
BSD = ["10", "20", "30", "40"]
TOP = 4095  # 12-bit camera data


def fluorescence_frame(seed: int, size: int = 384) -> np.ndarray:
    """A 12-bit frame in uint16: dark background, bright nuclei with texture, thin filaments,
    blurred by the optics, then Poisson shot noise and Gaussian read noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    light = np.full((size, size), 150.0, np.float32)
    for _ in range(int(rng.integers(15, 35))):  # nuclei: textured ellipses
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(6, 20, 2)
        turn = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dy * np.cos(turn) + dx * np.sin(turn)) / ry
        v = (-dy * np.sin(turn) + dx * np.cos(turn)) / rx
        inside = 1.0 / (1.0 + np.exp(np.minimum((u * u + v * v - 1.0) * 8.0, 50.0)))
        light += inside * rng.uniform(600, 2600) * (0.75 + 0.25 * rng.random((size, size)))
    filaments = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(10, 25))):  # filaments: smooth random walks
        y, x = rng.uniform(0, size, 2)
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(80, 300))):
            heading += rng.normal(0, 0.15)
            y, x = y + np.sin(heading), x + np.cos(heading)
            if 0 <= y < size and 0 <= x < size:
                filaments[int(y), int(x)] += rng.uniform(300, 900)
    light = gaussian_filter(light + gaussian_filter(filaments, 0.8) * 4, 1.2)
    frame = rng.poisson(np.clip(light, 0, None) / 2.0) * 2.0 + rng.normal(0, 12, light.shape)
    return np.clip(np.rint(frame), 0, TOP).astype(np.uint16)


def sixteen_bit_psnr(frame: np.ndarray, model: str | Path, quality: int) -> tuple[float, float]:
    """(JPEG, restored) PSNR in 12-bit units of ``frame`` whose 8-bit view was compressed at
    ``quality`` and decoded back to 12-bit values, restored as 16-bit data."""
    jpeg8 = compress(to_channels(frame, 1), quality)
    jpeg16 = np.rint(jpeg8.astype(np.float64) * TOP / 255).astype(np.uint16)
    out = restore(jpeg16, load_model(model), tile=256)
    assert out.dtype == np.uint16
    return psnr(frame, jpeg16, TOP), psnr(frame, out, TOP)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5)
    p.add_argument("--frames", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bsd-images", type=int, default=68, help="val-gray-bsd68 images scored")
    a = p.parse_args()
    FRAMES.mkdir(parents=True, exist_ok=True)
    for i in range(a.frames):
        if not (FRAMES / f"frame{i:02d}.png").is_file():
            write_image(FRAMES / f"frame{i:02d}.png", fluorescence_frame(i))
    name = f"bench-fluorescence-{a.minutes:g}min"
    weights = run_finetune(FRAMES, name, a.minutes, a.threads, "--from", SOURCE)
    meta = load_model(weights).meta
    held_urls = meta["finetune"]["held_out"]
    held = load_images(held_urls, 1)
    bsd = load_images(expand(str(DATA / "val-gray-bsd68"))[: a.bsd_images], 1)
    raw = read_image(held_urls[0]).array
    rows = {m: {"held_out": gains(m, held, HELD_OUT), "bsd68": gains(m, bsd, BSD),
                "sixteen_bit_q20": sixteen_bit_psnr(raw, m, 20)} for m in (SOURCE, str(weights))}
    machine = describe()
    point = {"machine": machine, "minutes": a.minutes, "steps": meta["steps"],
             "held_out_frames": [Path(u).name for u in held_urls], "models": rows}
    path = RESULTS / "finetune_fluorescence.json"
    points = [q for q in (json.loads(path.read_text()) if path.is_file() else [])
              if q["machine"] != machine] + [point]
    path.write_text(json.dumps(points, indent=1))
    head = ("| model | held-out " + " | ".join(f"Q{q}" for q in HELD_OUT) + " | val-gray-bsd68 "
            + " | ".join(f"Q{q}" for q in BSD) + " | 16-bit Q20: JPEG → restored (dB, 12-bit) |")
    lines = [head, "|---|" + "---|" * (len(HELD_OUT) + len(BSD) + 1)]
    for label, r in zip((SOURCE, f"fine-tuned {a.minutes:g} min ({meta['steps']} steps)"), rows.values()):
        j, o = r["sixteen_bit_q20"]
        lines.append(f"| {label} | " + " | ".join(f"{r['held_out'][q]:+.2f}" for q in HELD_OUT)
                     + " | " + " | ".join(f"{r['bsd68'][q]:+.2f}" for q in BSD)
                     + f" | {j:.2f} → {o:.2f} |")
    section = "\n".join([
        "## Fine-tuning on 16-bit fluorescence-like frames", "", f"Machine: {machine}", "",
        f"{a.frames} synthetic 12-bit frames ({FRAMES.name}/, 384 px, 16-bit PNG: nuclei, filaments, "
        f"shot and read noise) made by this script; `jpeg-restore finetune --from {SOURCE} "
        f"--minutes {a.minutes:g}` (its own split: held out {', '.join(point['held_out_frames'])}). "
        "Cells: PSNR gain over JPEG (dB) of the held-out frames' 8-bit views (mapped by 4095, as "
        "a restore maps 12-bit data) as `jpeg-restore eval` runs the model; val-gray-bsd68 shows "
        f"what it gives up on photographs; the last column restores {point['held_out_frames'][0]} "
        "as 16-bit data (its 8-bit view compressed at Q20, decoded back to 12-bit values).", "",
        *lines, ""])
    write_section(RESULTS / "finetune_fluorescence.md",
                  "# Fine-tuning on 16-bit pictures\n\nWritten by "
                  "`python bench/finetune_fluorescence.py`; one section per machine.", section)
    print(section)


if __name__ == "__main__":
    main()
