"""Fine-tuning on a user's own kind of images: `jpeg-restore finetune` on the shared H&E
histology tiles for some minutes each, then the held-out tiles' gain over JPEG before (the
shipped colour model) and after, and what the fine-tuned model gives up on val-cbsd68
(forgetting); both as `jpeg-restore eval` runs a model (calibrated, engine and precision auto).

    python bench/finetune_own_images.py --minutes 5 20 60 [--no-recolour]

Each run is the command a user types (its own held-out split: 6 of the 30 tiles); the models go
to runs/finetune-bench/models, never the user's folder. Points accumulate in
bench/results/finetune_own_images.json (a new run of the same minutes on the same machine
replaces its point); the .md's section and the .png of this machine are written from its points.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.engines.selection import open_net
from napari_jpeg_restore.core.evaluation.protocol import evaluate_model
from napari_jpeg_restore.core.imageio.reading import load_images
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.registry import USER_MODELS_ENV, load_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
MODELS = ROOT / "runs" / "finetune-bench" / "models"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sections import RESULTS, write_section  # noqa: E402

SOURCE = "crl-lite-color"
HELD_OUT = [str(q) for q in range(10, 100, 10)]  # every quality: the calibration must hold
CBSD = ["10", "20", "30", "40"]
POINTS = RESULTS / "finetune_own_images.json"
TARGET = 0.3  # dB over the shipped model at Q20 and Q30 after 20 minutes (issue 36)


def gains(model: str | Path, images: list, qualities: list[str]) -> dict[str, float]:
    """Gain over JPEG (dB) per quality, as `jpeg-restore eval` runs ``model``."""
    net = open_net(model, device="cpu", precision="auto", engine="auto")
    rows = evaluate_model(images, qualities, net, device="cpu", precision="auto", progress=False)
    return {r.quality: round(r.restored["psnr"] - r.jpeg["psnr"], 3) for r in rows}


def run_finetune(images: Path, name: str, minutes: float, threads: int, *flags: str) -> Path:
    """`jpeg-restore finetune IMAGES` as a user runs it (into the bench's models folder); the
    registered weights file."""
    env = {**os.environ, USER_MODELS_ENV: str(MODELS)}
    subprocess.run([str(Path(sys.executable).with_name("jpeg-restore")), "finetune", str(images),
                    "--name", name, "--minutes", str(minutes), "--threads", str(threads),
                    "--replace", *flags], check=True, env=env)
    return MODELS / f"{name}.pt"


def table(points: list[dict]) -> str:
    held_qs, cbsd_qs = (" | ".join(f"Q{q}" for q in qs) for qs in (HELD_OUT, CBSD))
    lines = [f"| model | minutes | hues turned | steps | held-out {held_qs} | val-cbsd68 {cbsd_qs} |",
             "|---|---|---|---|" + "---|" * (len(HELD_OUT) + len(CBSD))]
    for p in sorted(points, key=lambda p: (p["minutes"], p.get("recolour", False))):
        held = " | ".join(f"{p['held_out'][q]:+.2f}" for q in HELD_OUT)
        cbsd = " | ".join(f"{p['cbsd68'][q]:+.2f}" for q in CBSD)
        turned = "" if not p["minutes"] else "yes" if p.get("recolour") else "no"
        lines.append(f"| {p['model']} | {p['minutes']:g} | {turned} | {p['steps']} | {held} | {cbsd} |")
    return "\n".join(lines)


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, recolour in zip(axes, (False, True)):
        curve = sorted((p for p in points if not p["minutes"] or p.get("recolour", False) == recolour),
                       key=lambda p: p["minutes"])
        for i, q in enumerate(CBSD[:3]):
            ax.plot([p["minutes"] for p in curve], [p["held_out"][q] for p in curve], "o-",
                    color=f"C{i}", label=f"held-out histology Q{q}")
            ax.plot([p["minutes"] for p in curve], [p["cbsd68"][q] for p in curve], "s:",
                    color=f"C{i}", alpha=0.6, label=f"val-cbsd68 Q{q}")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("fine-tuning minutes (0: the shipped model)")
        ax.set_title("hues turned (--recolour)" if recolour else "colours learned (--no-recolour)",
                     fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gain over JPEG, dB")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{SOURCE} fine-tuned on 24 histology tiles")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, nargs="+", default=[5, 20, 60])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cbsd-images", type=int, default=68, help="val-cbsd68 images scored (default: all)")
    p.add_argument("--recolour", action=argparse.BooleanOptionalAction, default=True,
                   help="fine-tune with turned hues, as the command does by default")
    a = p.parse_args()
    machine = describe()
    every = json.loads(POINTS.read_text()) if POINTS.is_file() else []
    others = [q for q in every if q["machine"] != machine]  # kept in the file as they are
    points = [q for q in every if q["machine"] == machine]
    cbsd = load_images(expand(str(DATA / "val-cbsd68"))[: a.cbsd_images], 3)
    held_out = None
    for minutes in a.minutes:
        weights = run_finetune(DATA / "domain-histology",
                               f"bench-histology-{minutes:g}min{'-recolour' if a.recolour else ''}",
                               minutes, a.threads, "--recolour" if a.recolour else "--no-recolour")
        meta = load_model(weights).meta
        held_out = meta["finetune"]["held_out"]
        held = load_images(held_out, 3)
        if not any(q["minutes"] == 0 for q in points):
            points.append({"model": SOURCE, "minutes": 0, "steps": 0, "machine": machine,
                           "held_out": gains(SOURCE, held, HELD_OUT), "cbsd68": gains(SOURCE, cbsd, CBSD)})
        points = [q for q in points if (q["minutes"], q.get("recolour", False)) != (minutes, a.recolour)] + [{
            "model": weights.stem, "minutes": minutes, "recolour": a.recolour, "steps": meta["steps"],
            "machine": machine,
            "held_out": gains(weights, held, HELD_OUT), "cbsd68": gains(weights, cbsd, CBSD)}]
        POINTS.write_text(json.dumps(others + points, indent=1))  # after each run: a crash keeps the rest
    base = next(q for q in points if q["minutes"] == 0)["held_out"]
    twenty = next((q for q in points if q["minutes"] == 20 and q.get("recolour", False) == a.recolour),
                  None)
    verdict = ("" if twenty is None else
               f"After 20 minutes{' with turned hues' if a.recolour else ''}: " + ", ".join(
                   f"Q{q} {twenty['held_out'][q] - base[q]:+.2f} dB over the shipped model"
                   for q in ("20", "30")) + f" (target: +{TARGET} at both); the smallest held-out "
               f"gain at any quality {min(twenty['held_out'].values()):+.2f} dB (target: no loss).")
    slug = re.sub("[^a-z0-9]+", "-", machine.split(",")[0].lower()).strip("-")
    picture = f"finetune_own_images-{slug}.png"
    plot(points, RESULTS / picture)  # this machine's points, as its section
    section = "\n".join([
        "## Fine-tuning on 24 histology tiles, held-out gain and forgetting", "",
        f"Machine: {machine}", "",
        f"`jpeg-restore finetune {DATA.name}/domain-histology --minutes M` from `{SOURCE}` "
        "(its own split: 24 tiles trained on, 6 held out: "
        f"{', '.join(Path(u).name for u in held_out or [])}). The tiles carry an earlier Q80 "
        "compression, so training compresses them at Q10-70. Cells: PSNR gain over JPEG (dB), "
        "whole images as `jpeg-restore eval` runs the model.", "",
        table(points), "", verdict, "", f"![gain against minutes]({picture})", ""])
    write_section(RESULTS / "finetune_own_images.md",
                  "# Fine-tuning on a user's own images\n\nWritten by "
                  "`python bench/finetune_own_images.py`; one section per machine.", section)
    print(section)


if __name__ == "__main__":
    main()
