"""Write docs/models/<name>.md for a shipped model: training facts from its weights file and
the validation table (OpenCV/libjpeg protocol via Pillow's libjpeg) on the shared sets.

    python bench/model_card.py crl-lite-gray [--limit N]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from napari_jpeg_restore.core.evaluation.protocol import evaluate_model, format_table
from napari_jpeg_restore.core.imageio.reading import load_images
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.models import takes_tables
from napari_jpeg_restore.core.registry import MODELS, load_model
from napari_jpeg_restore.core.training.lineage import run_chain, total_cpu_hours

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
QUALITIES = [str(q) for q in range(10, 101, 10)] + ["10+30"]


def describe_run(meta: dict) -> str:
    o = meta.get("options", {})
    low, high, step = o.get("qualities", (10, 90, 10))
    text = (f"{meta.get('steps', '?')} steps (batch {o.get('batch', '?')}, {o.get('patch', '?')} px, Adam lr "
            f"{o.get('lr', '?')} cosine; Q{low}-{high} step {step}, {o.get('weighting', 'uniform')} weighting, "
            f"{o.get('double', 0.0):.0%} double-compressed, {o.get('clean', 0.0):.0%} clean identity pairs); {meta.get('cpu_hours', 0):.2f} CPU-hours")
    grown = (meta.get("init") or {}).get("grown") or []
    blocks = [name for name in grown if name != "condition"]
    if blocks:
        text += f"; grown from the run before by {len(blocks)} identity-initialised residual blocks ({', '.join(blocks)})"
    if "condition" in grown:
        text += "; the run before's network given a table conditioning that starts as the identity"
    return text


def crl_architecture(preset: str, cfg) -> str:
    """The card's one line on a CRL restorer's shape: widths, blocks per path, attention."""
    multi = any(cfg.enc_blocks) or any(cfg.dec_blocks)
    paths = (f", residual blocks {'/'.join(map(str, cfg.enc_blocks))} on the contracting and "
             f"{'/'.join(map(str, cfg.dec_blocks))} on the expanding path" if multi else "")
    return (f"CRL {preset} preset, widths {'/'.join(map(str, cfg.widths))}, {cfg.top_blocks} top "
            f"residual blocks{paths}, local-attention blocks {cfg.mid_attention} middle / "
            f"{cfg.bottom_attention} bottom"
            + ("; the JPEG's luma table scales and shifts the decoder's features at its three scales "
               "(FiLM)" if takes_tables(cfg) else ""))


def architecture(family: str, meta: dict, cfg) -> str:
    """The card's architecture line for an ARCNN, a CRL restorer or a luma-chroma model."""
    if family == "arcnn":
        return "ARCNN (9x9/64, 7x7/32, 1x1/16, 5x5 convolutions, global residual)"
    if family == "luma-chroma":
        c = cfg.chroma
        luma_preset = gray_restorer(meta).get("options", {}).get("preset", "?")
        return (f"{crl_architecture(luma_preset, cfg.luma)} on the JFIF luma; chroma branch: a U-Net "
                f"at 1/2-1/8 resolution, widths {'/'.join(map(str, c.widths))}, residual blocks "
                f"{'/'.join(map(str, c.enc_blocks))} down and {'/'.join(map(str, c.dec_blocks))} up")
    return crl_architecture(meta.get("options", {}).get("preset", "?"), cfg)


def gray_restorer(meta: dict) -> dict:
    """A colour model's gray restorer's lineage: its ``--luma``, or that of the run it was
    fine-tuned from (``--init`` of a whole luma-chroma model); {} for other models."""
    while meta and not meta.get("luma"):
        meta = meta.get("init")
    return (meta or {}).get("luma") or {}


def training_data(meta: dict) -> str:
    """Which images a run trained on: the folders its ``--data`` named or matched (older runs
    name no data: BSDS)."""
    data = meta.get("options", {}).get("data")
    folders = []
    for spec in [data] if isinstance(data, str) else data or []:
        p = Path(spec)
        folder = p.parent if "*" in p.name or p.suffix else p
        folders += sorted(f.name for f in folder.parent.glob(folder.name) if f.is_dir()) or [folder.name]
    where = ", ".join(f"`{f}`" for f in folders) or "BSDS train+val (`train-bsds-color`)"
    return f"{meta.get('train_images', '?')} images of {where}, no validation images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(MODELS))
    ap.add_argument("--limit", type=int, default=None, help="validation images to use (default: all)")
    ap.add_argument("--quality", nargs="+", default=QUALITIES)
    ap.add_argument("--ensemble-quality", nargs="*", default=["10"],
                    help="qualities also scored with the x8 self-ensemble (default: 10)")
    a = ap.parse_args()
    info = MODELS[a.name]
    model = load_model(a.name)
    meta = model.meta
    folder = "val-gray-bsd68" if info.channels == 1 else "val-cbsd68"
    images = load_images(expand(str(SHARED / folder))[: a.limit], info.channels)
    rows = evaluate_model(images, a.quality, model, device="cpu")
    gray = run_chain(gray_restorer(meta))  # a colour model's gray restorer, trained first
    chain = [(" (gray restorer)", m) for m in gray] + [(" (chroma branch)" if gray else "", m)
                                                       for m in run_chain(meta)]
    arch = architecture(info.family, meta, model.cfg)
    mp = sum(r.megapixels for r in rows)
    sec = sum(r.seconds for r in rows)
    card = [
        f"# {a.name}", "", info.description, "",
        "| fact | value |", "|---|---|",
        f"| architecture | {arch}, {info.channels} channel(s), "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters |",
        f"| training data | {training_data(meta)} |",
        *[f"| training run {i + 1}{part} | {describe_run(m)} |" for i, (part, m) in enumerate(chain)],
        *[f"| encoder | frozen; MoCo pre-training {m['encoder'].get('steps', '?')} steps, "
          f"{m['encoder'].get('cpu_hours', 0):.2f} CPU-hours |" for _, m in chain if m.get("encoder")][:1],
        f"| compute | {total_cpu_hours(meta):.2f} CPU-hours in all (wall hours x threads) on "
        f"{meta.get('machine', '?')} |",
        f"| validation | {folder}, {len(images)} images, JPEG by libjpeg (Pillow), 4:2:0 for colour |",
        f"| speed in this evaluation | {mp / sec:.2f} MP/s |" if sec else "",
        "", "`10+30` is double compression, the second pass on a grid shifted by (4, 4). Restored as "
        "the command line does: where the calibration finds no gain (often Q90 and up) the JPEG "
        "passes through unchanged. Qualities between a run's training steps (15, 25, ... for "
        "steps of 10) are unseen.", "",
        format_table(rows, a.name), "",
    ]
    if a.ensemble_quality:
        ens = evaluate_model(images, a.ensemble_quality, model, device="cpu", ensemble=True)
        card += ["With the x8 self-ensemble (`--ensemble`: eight rotations and flips averaged, eight "
                 "times the time):", "", format_table(ens, f"{a.name} x8"), ""]
        rows += [dataclasses.replace(r, quality=f"{r.quality} x8") for r in ens]
    out = ROOT / "docs" / "models" / f"{a.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(card))
    (out.with_suffix(".json")).write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    print(out.read_text())


if __name__ == "__main__":
    main()
