"""Training in fp32 and bf16 autocast on this machine: step time of the crl-lite restorer (batch 16,
96-px patches, frozen encoder; contiguous and channels-last), then the same short run from scratch
in both precisions, validated in fp32. Writes this machine's section of bench/results/train_precision.md.

    python bench/train_precision.py [--steps 300] [--data ../shared/datasets/train-bsds-color]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from napari_jpeg_restore.core.engines.machine import describe, isa
from napari_jpeg_restore.core.engines.precision import autocast
from napari_jpeg_restore.core.models import create_model
from napari_jpeg_restore.core.training.loop import fit
from napari_jpeg_restore.core.training.losses import restoration_loss
from napari_jpeg_restore.core.training.options import TrainOptions
from napari_jpeg_restore.core.training.stages import prepare, validator
from sections import RESULTS, write_section

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def step_ms(precision: str, channels_last: bool, steps: int = 10) -> float:
    torch.manual_seed(0)
    device = torch.device("cpu")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model("crl", "lite", 1).to(memory_format=fmt)
    model.encoder.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-4)
    x, y = torch.rand(16, 1, 96, 96).to(memory_format=fmt), torch.rand(16, 1, 96, 96)
    for i in range(steps + 3):
        if i == 3:
            t = time.perf_counter()
        with autocast(precision, device):
            loss = restoration_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps * 1000


def short_run(precision: str, steps: int, data: str, val: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        opts = TrainOptions(stage="restorer", data=data, out=tmp, encoder_mode="none", steps=steps,
                            batch=16, patch=96, lr=5e-4, val_data=val, val_images=8, precision=precision,
                            log_every=steps, ckpt_every=steps)
        model, task, _, meta = prepare(opts)
        validate = validator(opts, model)
        t = time.perf_counter()
        fit(task, out_dir=tmp, device=torch.device("cpu"), meta=meta, steps=steps, lr=opts.lr,
            precision=precision, log_every=steps, ckpt_every=steps)
        seconds = time.perf_counter() - t
        model.eval()
        return {**validate(), "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--data", default=str(SHARED / "train-bsds-color"))
    p.add_argument("--val", default=str(SHARED / "val-gray-bsd68"))
    a = p.parse_args()
    lines = ["", f"## {time.strftime('%Y-%m-%d')}", "", f"Machine: {describe()}; ISA: {isa()}",
             "", "Step time, crl-lite gray restorer, batch 16, 96-px patches, frozen encoder:", "",
             "| layout | fp32 ms/step | bf16 ms/step |", "|---|---|---|"]
    for cl in (False, True):
        lines.append(f"| {'channels-last' if cl else 'contiguous'} | {step_ms('fp32', cl):.0f} | "
                     f"{step_ms('bf16', cl):.0f} |")
        print(lines[-1], flush=True)
    lines += ["", f"The same {a.steps}-step run from scratch (no encoder, lr 5e-4, train-bsds-color, "
                  "seed 0), validated in fp32 on 8 val-gray-bsd68 images:", "",
              "| precision | seconds | PSNR Q10 | PSNR Q40 |", "|---|---|---|---|"]
    for prec in ("fp32", "bf16"):
        r = short_run(prec, a.steps, a.data, a.val)
        lines.append(f"| {prec} | {r['seconds']:.0f} | {r['val_psnr_q10']:.3f} | {r['val_psnr_q40']:.3f} |")
        print(lines[-1], flush=True)
    lines += ["", f"JPEG: {r['val_jpeg_q10']:.3f} dB at Q10, {r['val_jpeg_q40']:.3f} dB at Q40."]
    write_section(RESULTS / "train_precision.md", "# Training precision on the CPU",
                  "\n".join(lines).strip())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
