"""Same-budget comparison of trained runs (the ablation and ARCNN vs CRL-lite): evaluate each
run's ``model.pt`` on a shared validation set and write a Markdown table of PSNR gains.

    python bench/ablation.py LABEL=RUN [LABEL=RUN ...] [--out bench/results/ablation.md] [--title T]

RUN is a run folder holding ``model.pt``, a weights file or a registry name.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.evaluation.protocol import evaluate_model
from napari_jpeg_restore.core.imageio.reading import load_images
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.registry import load_model
from napari_jpeg_restore.core.training.lineage import total_cpu_hours
from sections import RESULTS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL=RUN (run folder, weights file or model name)")
    ap.add_argument("--data", default=str(SHARED / "val-gray-bsd68"))
    ap.add_argument("--quality", nargs="+", default=["10", "20", "30", "40", "10+30"])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=str(RESULTS / "ablation.md"))
    ap.add_argument("--title", default="Same-budget runs", help="the table's heading")
    a = ap.parse_args()
    runs = [r.split("=", 1) for r in a.runs]
    models = {label: load_model(Path(d) / "model.pt" if Path(d).is_dir() else d) for label, d in runs}
    channels = next(iter(models.values())).cfg.in_channels
    images = load_images(expand(a.data)[: a.limit], channels)
    jpeg = evaluate_model(images, a.quality, None, progress=False)
    head = ["run", "steps", "CPU-hours", *(f"Q{q} dB" for q in a.quality)]
    trained_on = sorted({m.meta.get("machine", "not recorded") for m in models.values()})
    lines = [f"Evaluated on: {describe()}", "",
             f"Trained on (last run of each chain): {'; '.join(trained_on)}", "",
             f"Validation: {Path(a.data).name}, {len(images)} images. JPEG PSNR: "
             + ", ".join(f"Q{r.quality} {r.jpeg['psnr']:.2f}" for r in jpeg)
             + ". Cells: PSNR gain over JPEG (dB).", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for label, model in models.items():
        rows = evaluate_model(images, a.quality, model, device="cpu", progress=False)
        gains = [f"{r.restored['psnr'] - j.jpeg['psnr']:+.2f}" for r, j in zip(rows, jpeg)]
        cells = [label, str(model.meta.get("steps", "?")), f"{total_cpu_hours(model.meta):.2f}", *gains]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    Path(a.out).write_text(f"# {a.title}\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
