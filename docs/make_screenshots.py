"""Screenshots of the two napari widgets in use: docs/screenshot_restore.png and
docs/screenshot_inspector.png.

    xvfb-run -a python docs/make_screenshots.py [--weights PATH] [--encoder-weights PATH]

``--weights`` is the restorer (a registry name or a .pt file; default "auto", the shipped
model); ``--encoder-weights`` a model with a compression quality encoder for the inspector
(default "auto", the shipped quality encoder; without shipped weights the same as ``--weights``). Without shipped weights and without ``--weights`` a tiny
gray CRL model is trained for ``--train-steps`` steps first, only to have something to show.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent


def _tiny_model(steps: int) -> str:
    import torch
    from napari_jpeg_restore.core.models import create_model
    from napari_jpeg_restore.core.registry import save_weights
    from napari_jpeg_restore.core.training.data import PairSampler
    from napari_jpeg_restore.core.training.loop import fit
    from napari_jpeg_restore.core.training.tasks import RestorationTask

    from napari_jpeg_restore._sample_data import ihc_original

    gray = ihc_original()[0][0][..., :3].mean(axis=2).astype(np.uint8)
    torch.manual_seed(0)
    model = create_model("crl", "lite", 1)
    task = RestorationTask(model, PairSampler([gray], patch=64, qualities=(10, 10, 10)), batch=4)
    out = Path(tempfile.mkdtemp(prefix="jpeg-restore-shots-"))
    fit(task, steps=steps, out_dir=out, lr=2e-3, device=torch.device("cpu"), log_every=max(1, steps),
        val_every=10**9, ckpt_every=10**9)
    path = out / "tiny-crl-gray.pt"
    from napari_jpeg_restore.core.models.cqe import as_encoder
    from napari_jpeg_restore.core.training.validators import fit_quality_probe

    fit_quality_probe(as_encoder(model).eval(), [gray])  # a quality read-out for the inspector
    save_weights(model.eval(), path, meta={"purpose": "screenshots only"})
    return str(path)


def _wait(app, widget, timeout: float = 600) -> None:
    t0 = time.time()
    while widget.worker is not None:
        app.processEvents()
        time.sleep(0.02)
        if time.time() - t0 > timeout:
            raise TimeoutError("the widget's worker did not finish")
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)


def _grab(viewer, path: Path) -> None:
    viewer.window._qt_window.grab().save(str(path))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--encoder-weights", default=None)
    parser.add_argument("--train-steps", type=int, default=80)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()

    from napari.settings import get_settings

    from napari_jpeg_restore._layers import model_names

    weights = args.weights or ("auto" if model_names() else _tiny_model(args.train_steps))
    encoder_weights = args.encoder_weights or ("auto" if model_names(True) else weights)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = get_settings().application
    saved_level = settings.gui_notification_level
    settings.gui_notification_level = "error"  # no toasts over the canvas
    try:
        _shoot(args, weights, encoder_weights)
    finally:
        settings.gui_notification_level = saved_level


def _viewer(width: int, height: int):
    import napari

    viewer = napari.Viewer(show=True, title="napari-jpeg-restore")
    viewer.window._qt_window.resize(width, height)
    return viewer


def _run_docked(app, viewer, widget, name: str, weights: str, tile: int) -> None:
    """Dock ``widget`` (its input already chosen), pick the model, run it and wait for it."""
    viewer.window.add_dock_widget(widget, name=name, area="right")
    widget.set_model(weights)
    widget.tile.value = tile
    widget.run()
    _wait(app, widget)


def _shoot(args, weights: str, encoder_weights: str) -> None:
    from napari_jpeg_restore.core.jpeg.codec import decode_jpeg, encode_jpeg, read_quant_tables
    from qtpy.QtWidgets import QApplication

    from napari_jpeg_restore._inspector_widget import QualityInspectorWidget
    from napari_jpeg_restore._reader import jpeg_metadata
    from napari_jpeg_restore._restore_widget import RestoreWidget
    from napari_jpeg_restore._sample_data import ihc_jpeg_q10, ihc_original

    # 1. restore the Q10 sample
    viewer = _viewer(1500, 900)
    (data, kwargs, _), = ihc_jpeg_q10()
    layer = viewer.add_image(data, **kwargs)
    app = QApplication.instance()
    widget = RestoreWidget(viewer)
    widget.image.value = layer
    _run_docked(app, viewer, widget, "Restore JPEG artifacts", weights, tile=256)
    restored = viewer.layers[f"{layer.name} (restored)"]
    layer.visible = True
    restored.visible = True
    viewer.grid.enabled = True  # JPEG and restored side by side
    viewer.reset_view()
    _wait(app, widget)
    _grab(viewer, args.out / "screenshot_restore.png")
    viewer.close()

    # 2. inspect the sample at three qualities
    viewer = _viewer(1500, 950)
    clean = ihc_original()[0][0]
    layers = []
    for q in (10, 40, 90):
        blob = encode_jpeg(clean, q)
        layers.append(viewer.add_image(decode_jpeg(blob), name=f"ihc Q{q}", rgb=True,
                                       metadata=jpeg_metadata(read_quant_tables(blob), f"ihc-q{q}.jpg"),
                                       visible=q == 10))
    widget = QualityInspectorWidget(viewer)
    widget.layers.value = layers
    _run_docked(app, viewer, widget, "Compression quality inspector", encoder_weights, tile=64)
    for name in ("ihc Q40 (quality heatmap)", "ihc Q90 (quality heatmap)"):
        if name in viewer.layers:
            viewer.layers[name].visible = False
    viewer.reset_view()
    _wait(app, widget)
    _grab(viewer, args.out / "screenshot_inspector.png")
    viewer.close()


if __name__ == "__main__":
    main()
