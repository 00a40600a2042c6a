"""The README's main job: compress the bundled sample at Q10, restore it with the shipped
default model, print metrics before and after, and write a side-by-side picture."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..engines.selection import open_net
from ..imageio.reading import read_image
from ..imageio.writing import write_image
from ..jpeg.codec import compress
from ..pixels import to_channels
from ..engines.default_model import default_model_name
from ..restoration.image_restore import restore
from .metrics import evaluate

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "astronaut.png"
ZOOM_BOX = (150, 40, 278, 168)  # x0, y0, x1, y1 of the zoomed region (the face)


def _panel(image: np.ndarray, label: str) -> Image.Image:
    im = Image.fromarray(image).convert("RGB")
    canvas = Image.new("RGB", (im.width, im.height + 24), "white")
    canvas.paste(im, (0, 24))
    ImageDraw.Draw(canvas).text((6, 5), label, fill="black")
    return canvas


def side_by_side(images: list[np.ndarray], labels: list[str], zoom: int = 3) -> np.ndarray:
    """Full views in the top row and ``zoom``x nearest-neighbour crops of ZOOM_BOX below."""
    x0, y0, x1, y1 = ZOOM_BOX
    full = [_panel(im, lab) for im, lab in zip(images, labels)]
    crops = [_panel(np.asarray(Image.fromarray(im[y0:y1, x0:x1]).resize(
        ((x1 - x0) * zoom, (y1 - y0) * zoom), Image.NEAREST)), f"{lab} (zoom x{zoom})")
        for im, lab in zip(images, labels)]
    rows = [full, crops]
    width = max(sum(p.width for p in row) for row in rows)
    sheet = Image.new("RGB", (width, sum(max(p.height for p in row) for row in rows)), "white")
    y = 0
    for row in rows:
        x = 0
        for p in row:
            sheet.paste(p, (x, y))
            x += p.width
        y += max(p.height for p in row)
    return np.asarray(sheet)


def run_demo(out_dir: str | Path = "demo-output", quality: int = 10, model: str | None = None,
             device: str = "auto") -> dict[str, Any]:
    """Returns {"jpeg": metrics, "restored": metrics, "model": name}; writes PNGs into ``out_dir``."""
    clean = read_image(SAMPLE).array[..., :3]
    name = model or default_model_name(3)
    net = open_net(name, device=device)
    clean = to_channels(clean, net.in_channels)  # gray when only a gray model is shipped
    jpeg = compress(clean, quality)
    restored = restore(jpeg, net)
    scores = {"jpeg": evaluate(clean, jpeg), "restored": evaluate(clean, restored)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_image(out / f"sample_q{quality}.png", jpeg)
    write_image(out / "restored.png", restored)
    sheet = side_by_side([clean, jpeg, restored], ["original", f"JPEG Q{quality}", f"restored ({name})"])
    write_image(out / "side_by_side.png", sheet)
    scores["model"] = name
    return scores
