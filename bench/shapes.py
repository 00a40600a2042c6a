"""Screen the multi-scale restorer presets (issue 34) at equal compute and write bench/results/shapes.md.

Each shape trains (gray, every training image of ../shared/datasets/train-*, the shipped recipe:
Q10-90 step 1, inverse weighting, 20% double compression, batch 16 x 128 px, bf16) for the steps
that 10 minutes give it on a quiet 2-core machine at its step time measured beforehand
(``STEPS``), so that a loaded machine does not change the comparison. Then each is scored
on val-gray-bsd68 at Q10 and Q40 (``jpeg-restore eval``, 68 images) and timed in ``restore()``
(OpenVINO bf16, a 2048-px picture, 2 threads). Runs are kept in runs/shapes/<preset>/ and reused.

    python bench/shapes.py [--presets unet unet-deep unet-narrow]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from sections import RESULTS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
JR = str(Path(sys.executable).with_name("jpeg-restore"))
# 10 minutes at the seconds per step measured on the quiet 2-core AMD EPYC (batch 16 x 128 px,
# bf16 autocast, 2 threads): 0.61, 0.56 and 0.454
STEPS = {"unet": 980, "unet-deep": 1070, "unet-narrow": 1320}
# how each shape starts: from scratch with the shipped lite restorer's frozen encoder, or grown
# from the shipped lite restorer (same widths; its new blocks start as identities)
START = {"unet": ["--encoder", "crl-lite-gray", "--lr", "5e-4"],
         "unet-deep": ["--encoder", "crl-lite-gray", "--lr", "5e-4"],
         "unet-narrow": ["--init", "crl-lite-gray", "--lr", "2e-4"]}
REFERENCE = "crl-lite-gray"


def train_and_score(preset: str) -> Path:
    out = ROOT / "runs" / "shapes" / preset
    out.mkdir(parents=True, exist_ok=True)
    with (out / "stdout.log").open("a") as log:
        if not (out / "model.pt").is_file():
            subprocess.run([JR, "train", "restorer", "--threads", "2",
                            "--data", str(DATA / "train-*" / "*.jpg"), "--preset", preset,
                            "--channels", "1", "--steps", str(STEPS[preset]), "--batch", "16",
                            "--patch", "128", *START[preset], "--qualities", "10", "90", "1",
                            "--weighting", "inverse", "--double", "0.2", "--resume",
                            "--val-data", str(DATA / "val-gray-bsd68"), "--val-every", "100000",
                            "--log-every", "100", "--out", str(out)],
                           check=True, stdout=log, stderr=subprocess.STDOUT)
        score(out / "model.pt", out / "eval.json", log)
    return out


def score(model: str | Path, dest: Path, log, data: str = "val-gray-bsd68",
          qualities: tuple[str, ...] = ("10", "40")) -> None:
    """``jpeg-restore eval`` of ``model`` on a validation set into ``dest`` (JSON), unless it
    holds every quality asked for already."""
    if not (dest.is_file() and set(qualities) <= set(gains(dest))):
        subprocess.run([JR, "eval", "--data", str(DATA / data), "--quality", *qualities,
                        "--model", str(model), "--json", str(dest)],
                       check=True, stdout=log, stderr=subprocess.STDOUT)


def gains(path: Path) -> dict[str, float]:
    return {str(r["quality"]): r["restored"]["psnr"] - r["jpeg"]["psnr"] for r in json.loads(path.read_text())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=list(STEPS))
    a = p.parse_args()

    import torch
    from napari_jpeg_restore.core.engines.device import set_threads
    from napari_jpeg_restore.core.engines.machine import describe, isa
    from napari_jpeg_restore.core.models import count_parameters
    from napari_jpeg_restore.core.registry import load_model

    sys.path.insert(0, str(Path(__file__).parent))
    from speed import megapixels_per_second

    runs = {preset: train_and_score(preset) for preset in a.presets}
    ref = ROOT / "runs" / "shapes" / f"{REFERENCE}.eval.json"
    with (ROOT / "runs" / "shapes" / "reference.log").open("a") as log:
        score(REFERENCE, ref, log)
    set_threads(2)
    rows = []
    for name, weights, start, history in [(REFERENCE, REFERENCE, "shipped (4.9 CPU-hours)", None)] + [
            (preset, str(out / "model.pt"),
             "grown from crl-lite-gray" if "--init" in START[preset] else "scratch (lite's encoder)",
             [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()])
            for preset, out in runs.items()]:
        model = load_model(weights)
        g = gains(ref if history is None else runs[name] / "eval.json")
        train = "" if history is None else (
            f"{history[-1]['step']} | {16 * 128 * 128 * history[-1]['step'] / 1e9:.2f} | "
            f"{history[-1]['wall_h'] * 60:.0f}")
        rows.append(f"| {name} | {start} | {count_parameters(model) / 1e6:.2f} | "
                    f"{macs_per_pixel(model, torch) / 1e3:.0f} | "
                    f"{megapixels_per_second(weights, 1, 2048, 'openvino', 'bf16'):.2f} | "
                    f"{train or ' | | '} | {g['10']:+.2f} | {g['40']:+.2f} |")
    text = ["# Multi-scale restorer shapes at equal compute (10 quiet minutes each)", "",
            f"Machine: {describe()}; {isa()}. Written by `python bench/shapes.py`.", "",
            "| preset | start | M params | kMAC/px | restore() MP/s (OpenVINO bf16) | steps | "
            "GPx of patches | wall min | Q10 gain dB | Q40 gain dB |",
            "|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
    (RESULTS / "shapes.md").write_text("\n".join(text))
    print("\n".join(text))


def macs_per_pixel(model, torch, side: int = 256) -> float:
    """Multiply-adds of the convolutions per input pixel."""
    total = [0]

    def hook(m, _inputs, out):
        total[0] += out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.rand(1, model.cfg.in_channels, side, side))
    for h in hooks:
        h.remove()
    return total[0] / side**2


if __name__ == "__main__":
    main()
