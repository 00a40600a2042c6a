"""Write docs/models/<name>.md for a shipped model: training facts from its weights file and
the validation table (OpenCV/libjpeg protocol via Pillow's libjpeg) on the shared sets.

    python bench/model_card.py crl-lite-gray [--limit N]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_jpeg_restore.core.evaluate import evaluate_model, format_table
from napari_jpeg_restore.core.registry import MODELS, load_model
from napari_jpeg_restore.core.sources import expand
from napari_jpeg_restore.core.training.data import load_images

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
QUALITIES = ["10", "20", "30", "40", "15", "25", "35", "45", "10+30"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(MODELS))
    ap.add_argument("--limit", type=int, default=None, help="validation images to use (default: all)")
    ap.add_argument("--quality", nargs="+", default=QUALITIES)
    a = ap.parse_args()
    info = MODELS[a.name]
    model = load_model(a.name)
    meta = model.meta
    folder = "val-gray-bsd68" if info.channels == 1 else "val-cbsd68"
    images = load_images(expand(str(SHARED / folder))[: a.limit], info.channels)
    rows = evaluate_model(images, a.quality, model, device="cpu")
    opts = meta.get("options", {})
    mp = sum(r.megapixels for r in rows)
    sec = sum(r.seconds for r in rows)
    card = [
        f"# {a.name}", "", info.description, "",
        "| fact | value |", "|---|---|",
        f"| architecture | {opts.get('preset', '?')} preset, {info.channels} channel(s), "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters |",
        f"| training data | {meta.get('train_images', '?')} images of BSDS train+val (`train-bsds-color`, no validation images) |",
        f"| steps | {meta.get('steps', '?')} (batch {opts.get('batch', '?')}, {opts.get('patch', '?')} px patches, "
        f"Adam lr {opts.get('lr', '?')}, cosine) |",
        f"| encoder | {opts.get('encoder_mode', '-')}; {Path(str(opts.get('encoder') or '-')).parent.name} |",
        f"| compute | {meta.get('cpu_hours', 0):.2f} CPU-hours (wall hours x threads) on {meta.get('machine', '?')} |",
        f"| validation | {folder}, {len(images)} images, JPEG by libjpeg (Pillow), 4:2:0 for colour |",
        f"| speed in this evaluation | {mp / sec:.2f} MP/s |" if sec else "",
        "", "Qualities 15/25/35/45 are not trained (training uses Q10..Q90 in steps of 10); "
        "`10+30` is double compression, the second pass on a grid shifted by (4, 4).", "",
        format_table(rows, a.name), "",
    ]
    out = ROOT / "docs" / "models" / f"{a.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(card))
    (out.with_suffix(".json")).write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    print(out.read_text())


if __name__ == "__main__":
    main()
