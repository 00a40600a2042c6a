"""Gain over JPEG at every quality Q10...Q100 (steps of 5) and on never-compressed images, on
both validation sets: does a restorer do no harm at the top of the range?

    python bench/quality_curve.py \\
        --gray "crl-lite-gray alone (before)=crl-lite-gray@raw" "shipped crl-lite-gray=crl-lite-gray" \\
        --color "crl-lite-color alone (before)=crl-lite-color@raw" "shipped crl-lite-color=crl-lite-color"

A model is scored as ``jpeg-restore restore --skip-above-quality 100`` runs it: each output kept
consistent with its JPEG, passed through where its calibration shows no gain; ``MODEL@raw``
scores the network's output alone. Never-compressed images go through the default path: left
as they are when no JPEG traces are found in them (``@raw``: restored regardless).

Writes bench/results/quality_curve.md and docs/quality_curve.png. Finished (label, set) results are
kept in bench/results/quality_curve.json, so a rerun computes only what is missing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.evaluation.protocol import evaluate_model
from napari_jpeg_restore.core.imageio.reading import load_images, read_image
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.jpeg.codec import DEFAULT_SKIP_ABOVE_QUALITY
from napari_jpeg_restore.core.jpeg.traces import find_jpeg_grid
from napari_jpeg_restore.core.pixels import to_channels
from napari_jpeg_restore.core.registry import load_model
from napari_jpeg_restore.core.restoration.image_restore import restore
from sections import RESULTS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
SETS = {"gray": ("val-gray-bsd68", 1), "color": ("val-cbsd68", 3)}
QUALITIES = [str(q) for q in range(10, 101, 5)]
TOP = ["80", "85", "90", "95", "100"]
SAMPLES = sorted((ROOT / "core" / "data").glob("*.png"))


def curve(model: str, images: list[np.ndarray], qualities: list[str] = QUALITIES
          ) -> dict[str, dict[str, float]]:
    """Per quality: JPEG and restored PSNR; for "none" the restored image's PSNR against the
    untouched original and the share of pixels the restorer changed."""
    raw = model.endswith("@raw")
    net = load_model(model.removesuffix("@raw"))
    alone = (lambda im: restore(im, net, device="cpu")) if raw else None
    rows = evaluate_model(images, qualities, net, device="cpu", restorer=alone)
    out = {r.quality: {"jpeg": r.jpeg["psnr"], "restored": r.restored["psnr"],
                       "gain": r.restored["psnr"] - r.jpeg["psnr"]} for r in rows}
    out["none"] = never_compressed(net, images, raw)
    return out


def never_compressed(net, images: list[np.ndarray], raw: bool) -> dict[str, float]:
    """The images as they are (no new compression): how many come back unchanged, and the
    PSNR against the input of those that do not (a restorer should leave them alone unless
    they show JPEG traces of their own)."""
    found = [None if raw else find_jpeg_grid(im) for im in images]
    restored = [im if not raw and g is None else restore(im, net, device="cpu", jpeg=g)
                for im, g in zip(images, found)]
    changed = [(im, r) for im, r in zip(images, restored) if not np.array_equal(im, r)]
    return {"unchanged": len(images) - len(changed), "of": len(images),
            "traces": sum(g is not None for g in found),
            "changed_psnr": float(np.mean([psnr(im, r) for im, r in changed])) if changed else None}


def table(results: dict, kind: str, qualities: list[str] = QUALITIES) -> list[str]:
    labels = list(results)
    head = "| Q | JPEG PSNR | " + " | ".join(f"{lab}: gain dB" for lab in labels) + " |"
    lines = [head, "|" + "---|" * (len(labels) + 2)]
    first = results[labels[0]]
    for q in qualities:
        cells = [q, f"{first[q]['jpeg']:.2f}"] + [f"{results[lab][q]['gain']:+.2f}" for lab in labels]
        lines.append("| " + " | ".join(cells) + " |")
    def none(r: dict) -> str:
        if "changed" in r:  # the network alone, every image restored
            return f"{r['restored']:.1f} dB vs original, {r['changed']:.0%} of values changed"
        text = f"{r['unchanged']} of {r['of']} unchanged; JPEG traces found in {r['traces']}"
        if r["changed_psnr"] is not None:
            text += f" (restored, {r['changed_psnr']:.1f} dB vs input)"
        return text
    cells = ["never compressed", "∞"] + [none(results[lab]["none"]) for lab in labels]
    lines.append("| " + " | ".join(cells) + " |")
    worst = {lab: min(results[lab][q]["gain"] for q in qualities) for lab in labels}
    lines += ["", f"Lowest gain over Q{qualities[0]}-{qualities[-1]} ({kind}): " +
              ", ".join(f"{lab} {w:+.2f} dB" for lab, w in worst.items()), ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gray", nargs="*", default=[], metavar="LABEL=MODEL")
    ap.add_argument("--color", nargs="*", default=[], metavar="LABEL=MODEL")
    ap.add_argument("--limit", type=int, default=None, help="validation images (default: all 68)")
    ap.add_argument("--cache", default=str(RESULTS / "quality_curve.json"))
    a = ap.parse_args()
    cache_path = Path(a.cache)
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    md = ["# Gain over JPEG from Q10 to Q100, and on never-compressed images", "",
          f"Machine: {describe()}", "",
          "PSNR gain (restored minus JPEG, dB), mean over the validation set; JPEG by libjpeg "
          "through Pillow (4:2:0 for colour). `python bench/quality_curve.py` (see its docstring).",
          "",
          "The validation images are BSDS photographs, which were themselves published as JPEGs "
          "of about Q96: recompressing them at Q95 or Q100 on the same 8x8 grid changes almost "
          "nothing (the JPEG PSNR jumps to 50-60 dB), so there any change a restorer makes shows "
          "as a loss. The bundled samples (PNG) give the same comparison on pictures of another "
          "origin.", ""]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (kind, specs) in zip(axes, (("gray", a.gray), ("color", a.color))):
        folder, channels = SETS[kind]
        images = load_images(expand(str(SHARED / folder))[: a.limit], channels)
        results = {}
        for spec in specs:
            label, model = spec.split("=", 1)
            key = f"{kind}|{label}|{model}|{len(images)}"
            if key not in cache:
                cache[key] = curve(model, images)
                cache_path.write_text(json.dumps(cache, indent=1))
            if not model.endswith("@raw") and "changed" in cache[key]["none"]:  # older format
                cache[key]["none"] = never_compressed(load_model(model), images, False)
            results[label] = cache[key]
        if not results:
            continue
        md += [f"## {folder} ({len(images)} images, {kind})", "", *table(results, kind)]
        samples = [to_channels(read_image(p).array, channels) for p in SAMPLES]
        top = {}
        for spec in specs:
            label, model = spec.split("=", 1)
            key = f"{kind}|{label}|{model}|samples"
            if key not in cache:
                cache[key] = curve(model, samples, TOP)
                cache_path.write_text(json.dumps(cache, indent=1))
            if not model.endswith("@raw") and "changed" in cache[key]["none"]:  # older format
                cache[key]["none"] = never_compressed(load_model(model), samples, False)
            top[label] = cache[key]
        md += [f"### The bundled samples ({', '.join(p.name for p in SAMPLES)}, {kind})", "",
               *table(top, f"{kind}, samples", TOP)]
        for label, res in results.items():
            ax.plot([int(q) for q in QUALITIES], [res[q]["gain"] for q in QUALITIES], marker="o",
                    ms=3, label=label)
        ax.axhline(0, color="k", lw=0.8)
        ax.axvspan(DEFAULT_SKIP_ABOVE_QUALITY + 0.5, 101, color="0.85", zorder=0,
                   label=f"JPEGs skipped by default (> Q{DEFAULT_SKIP_ABOVE_QUALITY})")
        ax.set(title=f"{folder}", xlabel="JPEG quality", ylabel="PSNR gain (dB)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "quality_curve.png", dpi=110)
    (RESULTS / "quality_curve.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
