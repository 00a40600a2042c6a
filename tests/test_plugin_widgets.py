"""napari plugin widgets, driven through a real viewer (pytest-qt; run under xvfb-run). Their
small models and the notification catcher are fixtures in conftest.py; "auto" (the shipped
models) is exercised too."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("magicgui")

from helpers import synthetic
from napari_jpeg_restore.core.engines.selection import choose_engine
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.jpeg.codec import compress, encode_jpeg, read_quant_tables
from napari_jpeg_restore.core.registry import MODELS, save_weights
from napari_jpeg_restore.core.restoration.options import RestoreOptions

from napari_jpeg_restore._inspector_widget import QualityInspectorWidget
from napari_jpeg_restore._layers import AUTO, WEIGHTS_FILE
from napari_jpeg_restore._reader import jpeg_metadata
from napari_jpeg_restore._restore_steps import restore_layer_steps
from napari_jpeg_restore._restore_widget import RestoreWidget

pytestmark = [
    pytest.mark.napari,
    pytest.mark.skipif(not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                            or os.environ.get("QT_QPA_PLATFORM")),
                       reason="needs a display for Qt: run under xvfb-run"),
]
WAIT_MS = 90_000


def _wait(qtbot, widget, timeout=WAIT_MS):
    worker = widget.worker
    assert worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)
    return worker


def _restore_dock(viewer) -> RestoreWidget:
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Restore JPEG artifacts")
    return widget


# ------------------------------------------------------------------------------------ restore
def test_restore_gray_layer_improves_psnr(make_napari_viewer, qtbot, restorer_weights, notes):
    viewer = make_napari_viewer()
    clean = synthetic(3, (128, 160))
    jpeg = compress(clean, 10)
    meta = {"jpeg_quality": 10, "note": "kept"}
    layer = viewer.add_image(jpeg, name="cells", scale=(0.5, 0.25), translate=(10.0, -3.0),
                             metadata=meta)
    widget = _restore_dock(viewer)
    assert widget.image.value is layer
    widget.set_model(restorer_weights)
    assert widget.model.value == WEIGHTS_FILE and not widget.weights.native.isHidden()
    widget.tile.value = 64
    widget.difference.value = True
    widget.run_button.native.click()
    assert widget.progress.max == 0 or widget.worker is None  # busy while the model loads
    _wait(qtbot, widget)
    assert widget.progress.max == 1000
    assert not [n for n in notes if n[0] != "info"], notes
    out = viewer.layers["cells (restored)"]
    assert "cells" in viewer.layers  # the original stays
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    assert out.metadata["note"] == "kept" and "jpeg_quality" not in out.metadata and out.rgb is False
    made = out.metadata["restoration"]
    assert made["source_layer"] == "cells" and made["tile"] == 64 and made["ensemble"] is False
    assert len(made["weights_sha256"]) == 64 and made["jpeg_consistency"] == "Q10 by its pixels"
    assert made["engine"] == choose_engine("auto", widget.device.value)  # OpenVINO on a CPU
    assert out.data.shape == jpeg.shape and out.data.dtype == np.uint8
    assert psnr(clean, out.data) > psnr(clean, jpeg) + 0.2
    diff = viewer.layers["cells (difference)"]
    np.testing.assert_allclose(diff.data, out.data.astype(np.float32) - jpeg)
    np.testing.assert_allclose(diff.scale, layer.scale)
    assert widget.progress.value == 1000 and widget.run_button.enabled
    assert not diff.visible and "hidden" in widget.status.value
    widget.ensemble.value = True  # a second run replaces the first result, settings recorded
    widget.run_button.native.click()
    _wait(qtbot, widget)
    assert [ly.name for ly in viewer.layers] == ["cells", "cells (restored)", "cells (difference)"]
    assert out.metadata["restoration"]["ensemble"] is True and "Replaced" in widget.status.value
    assert all(w.tooltip for w in (widget.model, widget.tile, widget.device, widget.difference,
                                   widget.ensemble, widget.skip_above, widget.intensity,
                                   widget.assume))


def test_image_list_follows_the_viewer(make_napari_viewer, qtbot, restorer_weights, notes):
    viewer = make_napari_viewer()
    widget = _restore_dock(viewer)  # docked before any layer exists
    assert widget.image.value is None
    first = viewer.add_image(compress(synthetic(1, (128, 160)), 10), name="first")
    assert widget.image.value is first  # opened: chosen, no "-----"
    second = viewer.add_image(compress(synthetic(2, (128, 160)), 10), name="second")
    assert widget.image.value is second
    viewer.layers.selection.active = first  # clicked on in the layer list
    assert widget.image.value is first
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="labels")  # not an image: choice stays
    assert widget.image.value is first
    widget.set_model(restorer_weights)
    widget.tile.value = 64
    assert widget.run() is not None
    _wait(qtbot, widget)
    assert "first (restored)" in viewer.layers and not [n for n in notes if n[0] == "warning"]


def test_every_selected_layer_is_restored_in_one_run(make_napari_viewer, qtbot, restorer_weights,
                                                    notes):
    viewer = make_napari_viewer()
    clean = {name: synthetic(seed, (128, 160)) for name, seed in (("a", 5), ("b", 6), ("c", 7))}
    layers = {name: viewer.add_image(compress(img, 10), name=name) for name, img in clean.items()}
    fine = encode_jpeg(synthetic(8, (128, 160)), 98)
    viewer.add_image(compress(synthetic(8, (128, 160)), 98), name="fine",
                     metadata=jpeg_metadata(read_quant_tables(fine), "fine.jpg"))
    viewer.layers.selection = {layers["a"], layers["c"], viewer.layers["fine"]}
    widget = _restore_dock(viewer)
    widget.set_model(restorer_weights)
    widget.tile.value = 64
    assert widget.every_selected.tooltip and not widget.every_selected.value
    widget.every_selected.value = True
    seen = []
    worker = widget.run()
    worker.yielded.connect(lambda step: seen.append(widget.status.value))
    _wait(qtbot, widget)
    assert "a (restored)" in viewer.layers and "c (restored)" in viewer.layers
    assert "b (restored)" not in viewer.layers and "fine (restored)" not in viewer.layers
    assert any("layer 2/2 'c'" in line for line in seen)  # one worker, one queue
    assert "'fine' left as is" in widget.status.value and "Added 'c (restored)'" in widget.status.value
    for name in ("a", "c"):
        assert psnr(clean[name], viewer.layers[f"{name} (restored)"].data) > psnr(clean[name], layers[name].data)
    assert not [n for n in notes if n[0] != "info"], notes


def test_high_quality_layer_is_left_alone_unless_asked(make_napari_viewer, qtbot, restorer_weights,
                                                       notes):
    viewer = make_napari_viewer()
    data = encode_jpeg(synthetic(4, (128, 160)), 98)
    viewer.add_image(compress(synthetic(4, (128, 160)), 98), name="fine",
                     metadata=jpeg_metadata(read_quant_tables(data), "fine.jpg"))
    widget = _restore_dock(viewer)
    widget.set_model(restorer_weights)
    assert widget.skip_above.value == 90 and widget.skip_above.tooltip
    assert widget.run() is None
    assert "fine (restored)" not in viewer.layers
    assert "left as is" in widget.status.value and "Q98" in widget.status.value
    assert notes and notes[-1][0] == "info"
    viewer.layers.clear()
    assert widget.run() is None and widget.status.value == ""  # no stale status from before
    widget.image.value = viewer.add_image(compress(synthetic(4, (128, 160)), 98), name="fine",
                                          metadata=jpeg_metadata(read_quant_tables(data), "fine.jpg"))
    widget.skip_above.value = 100
    assert widget.run() is not None
    _wait(qtbot, widget)
    assert "fine (restored)" in viewer.layers
    assert widget.assume.native.currentText() == "auto" and widget.assume.tooltip
    widget.skip_above.value = 90
    widget.assume.value = 20  # the strength control: restored as a Q20 picture, not skipped
    assert widget.run() is not None
    _wait(qtbot, widget)
    made = viewer.layers["fine (restored)"].metadata["restoration"]
    assert made["jpeg_consistency"] == "Q20 (assumed)"


def test_preview_region_follows_the_view_and_the_jpeg_grid():
    from napari_jpeg_restore._preview_steps import crop_metadata, preview_region

    view = preview_region((2,), (1000, 1200), [[100, 50], [700, 900]], offset=(3, 5), side=512)
    assert view.index == (2,) and (view.height, view.width) == (512, 512)
    assert view.top % 8 == 3 and view.left % 8 == 5  # on the file's 8x8 grid
    assert abs(view.top + 256 - 400) < 8 and abs(view.left + 256 - 475) < 8  # around the view's centre
    assert crop_metadata({"jpeg_grid": {"offset": (3, 5)}}, view)["jpeg_grid"]["offset"] == (0, 0)
    whole = preview_region((), (120, 90), np.zeros((2, 2)))  # before the first draw: the plane
    assert (whole.top, whole.left, whole.height, whole.width) == (0, 0, 120, 90)
    edge = preview_region((), (600, 600), [[580, 590], [600, 600]], side=64)
    assert edge.top + edge.height <= 600 and edge.left + edge.width <= 600 and edge.height == 64
    small = preview_region((), (20, 30), [[0, 0], [20, 30]], offset=(3, 5))
    assert (small.top, small.left, small.height, small.width) == (0, 0, 20, 30)
    assert crop_metadata({"jpeg_grid": {"offset": (3, 5)}}, small)["jpeg_grid"]["offset"] == (3, 5)


def test_live_preview_restores_the_view_with_each_strength(make_napari_viewer, qtbot, tmp_path, notes):
    """Ticking 'live preview' restores the part in view as a Restore would (the same crop through
    restore()); choosing another 'restore as' previews again; unticking removes the preview."""
    from helpers import conditioned_restorer
    from napari_jpeg_restore.core import restore
    from napari_jpeg_restore.core.jpeg.consistency import JpegGrid

    weights = tmp_path / "conditioned.pt"
    save_weights(conditioned_restorer(), weights)
    viewer = make_napari_viewer()
    clean = synthetic(4, (136, 168))
    data = encode_jpeg(clean, 30)
    tables = read_quant_tables(data)
    layer = viewer.add_image(compress(clean, 30), name="cells", translate=(4, 6),
                             metadata=jpeg_metadata(tables, "cells.jpg"))
    widget = _restore_dock(viewer)
    widget.image.value = layer
    widget.set_model(weights)
    widget.precision.value = "fp32"
    assert widget.live_preview.tooltip and "cells (preview)" not in viewer.layers
    widget.live_preview.value = True

    def previewed(how: str) -> np.ndarray:
        qtbot.waitUntil(lambda: widget.preview_worker is None and f"restored as {how}" in widget.status.value,
                        timeout=WAIT_MS)
        region = widget.preview_region
        crop = layer.data[region.slices]
        shown = viewer.layers["cells (preview)"]
        np.testing.assert_allclose(shown.translate, (4 + region.top, 6 + region.left))
        expected = restore(crop, str(weights), jpeg=JpegGrid.from_tables(tables), precision="fp32",
                           assume_quality=None if how == "Q30" else int(how[1:3]))
        np.testing.assert_array_equal(shown.data, expected)
        return shown.data

    auto = previewed("Q30")
    widget.assume.value = 10  # a stronger restoration, previewed without pressing Restore
    stronger = previewed("Q10 (assumed)")
    assert not np.array_equal(auto, stronger)
    assert "cells (preview)" not in [name for name, _ in widget._layer_choices()]
    widget.live_preview.value = False
    assert "cells (preview)" not in viewer.layers
    assert not [n for n in notes if n[0] != "info"], notes


def test_restore_with_self_ensemble(make_napari_viewer, qtbot, restorer_weights, notes):
    from napari_jpeg_restore.core import restore

    viewer = make_napari_viewer()
    jpeg = compress(synthetic(4, (128, 160)), 10)
    viewer.add_image(jpeg, name="cells")
    widget = _restore_dock(viewer)
    widget.set_model(restorer_weights)
    widget.tile.value = 64
    widget.ensemble.value = True
    widget.run_button.native.click()
    _wait(qtbot, widget)
    assert not [n for n in notes if n[0] != "info"], notes
    out = viewer.layers["cells (restored)"].data
    # The widget's default precision, auto, as restore() is told here.
    np.testing.assert_array_equal(out, restore(jpeg, str(restorer_weights), tile=64, ensemble=True,
                                               precision="auto"))
    assert not np.array_equal(out, restore(jpeg, str(restorer_weights), tile=64, precision="auto"))


def test_restore_rgb_layer_keeps_rgb(make_napari_viewer, qtbot, restorer_weights, notes):
    viewer = make_napari_viewer()
    clean = np.stack([synthetic(s, (64, 72)) for s in (4, 5, 6)], axis=-1)
    jpeg = compress(clean, 10)
    layer = viewer.add_image(jpeg, name="rgb", rgb=True, translate=(2, 2))
    widget = _restore_dock(viewer)
    widget.image.value = layer
    widget.set_model(str(restorer_weights))
    widget.run()
    _wait(qtbot, widget)
    out = viewer.layers["rgb (restored)"]
    assert out.rgb and out.data.shape == jpeg.shape
    np.testing.assert_allclose(out.translate, layer.translate)
    assert psnr(clean, out.data) > psnr(clean, jpeg)


def test_a_luma_chroma_model_is_offered_and_restores_rgb(make_napari_viewer, qtbot, restorer_weights,
                                                         notes, tmp_path, monkeypatch):
    """Colour models built on a gray restorer (family luma-chroma, as crl-color) are restorers
    in the widget's list, and not quality encoders for the inspector."""
    from napari_jpeg_restore.core import registry
    from napari_jpeg_restore.core.models import create_model

    monkeypatch.setenv(registry.USER_MODELS_ENV, str(tmp_path))
    gray = registry.load_model(restorer_weights)
    model = create_model("luma-chroma", channels=3, luma=gray.cfg)
    model.luma.load_state_dict(gray.state_dict())  # its chroma branch starts as the JPEG's chroma
    save_weights(model, tmp_path / "my-colour.pt")
    viewer = make_napari_viewer()
    clean = np.stack([synthetic(s, (64, 72)) for s in (4, 5, 6)], axis=-1)
    jpeg = compress(clean, 10)
    viewer.add_image(jpeg, name="rgb", rgb=True)
    widget = _restore_dock(viewer)
    assert "my-colour" in widget.model.choices
    inspector = QualityInspectorWidget(viewer)
    assert "my-colour" not in inspector.model.choices
    inspector.close()
    widget.set_model("my-colour")
    widget.run()
    _wait(qtbot, widget)
    assert psnr(clean, viewer.layers["rgb (restored)"].data) > psnr(clean, jpeg)


@pytest.mark.parametrize("mode, value_range", [("contrast limits", (0.0, 4095.0)),
                                               ("dtype range", (0.0, 65535.0)), ("auto", None)])
def test_intensity_choice_sets_the_value_range(make_napari_viewer, qtbot, restorer_weights, notes,
                                               mode, value_range):
    from napari_jpeg_restore.core.restoration.image_restore import restore

    viewer = make_napari_viewer()
    data = (compress(synthetic(5, (128, 160)), 10).astype(np.uint16) * 16)  # 12-bit camera data
    viewer.add_image(data, name="cam", contrast_limits=(0, 4095))
    widget = _restore_dock(viewer)
    widget.set_model(restorer_weights)
    widget.tile.value = 64
    widget.skip_above.value = 100  # 16-bit data carries no JPEG traces we read
    widget.intensity.value = mode
    widget.run()
    _wait(qtbot, widget)
    out = viewer.layers["cam (restored)"].data
    np.testing.assert_array_equal(out, restore(data, str(restorer_weights), tile=64,
                                               value_range=value_range, precision="auto"))


def test_cancel_stops_worker_without_layer(make_napari_viewer, qtbot, restorer_weights, notes):
    viewer = make_napari_viewer()
    big = compress(synthetic(7, (1024, 1024)), 10)
    viewer.add_image(big, name="big")
    widget = _restore_dock(viewer)
    widget.set_model(restorer_weights)
    widget.tile.value = 64  # ~400 tiles: still running when Cancel is clicked
    worker = widget.run()
    with qtbot.waitSignal(worker.aborted, timeout=WAIT_MS):
        qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=WAIT_MS)
        assert widget.cancel_button.enabled
        widget.cancel_button.native.click()
        assert not widget.cancel_button.enabled  # clicked once: disabled while it stops
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert "Cancelled" in widget.status.value and widget.progress.value < 1000


def test_stack_restores_plane_by_plane(make_napari_viewer, qtbot, restorer_weights, notes):
    da = pytest.importorskip("dask.array")
    from napari_jpeg_restore.core.jpeg.traces import find_jpeg_grid
    from napari_jpeg_restore.core.restoration.image_restore import restore

    viewer = make_napari_viewer()
    planes = np.stack([compress(synthetic(s, (64, 80)), 10) for s in (1, 2, 3)])
    stack = da.from_array(planes, chunks=(1, 64, 80))
    layer = viewer.add_image(stack, name="stack", scale=(2.0, 0.5, 0.5))
    widget = _restore_dock(viewer)
    widget.image.value = layer
    widget.set_model(restorer_weights)
    widget.tile.value = 64
    widget.run()
    _wait(qtbot, widget)
    out = viewer.layers["stack (restored)"]
    assert isinstance(out.data, np.ndarray) and out.data.shape == planes.shape
    np.testing.assert_allclose(out.scale, layer.scale)
    for i in range(3):  # each plane consistent with the JPEG grid found in its own pixels
        grid = find_jpeg_grid(planes[i])
        assert grid is not None and grid.offset == (0, 0)
        np.testing.assert_array_equal(out.data[i], restore(planes[i], str(restorer_weights), tile=64,
                                                           jpeg=grid, precision="auto"))


class _PlanesOnly:
    """An array-like that hands out single planes and refuses to be read whole."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads = []

    def __getitem__(self, idx):
        assert isinstance(idx, tuple) and len(idx) == self.ndim - 2, idx
        self.reads.append(idx)
        return self.data[idx]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole stack was read")


def test_restore_steps_reads_one_plane_at_a_time(restorer_weights):
    planes = np.stack([compress(synthetic(s, (32, 40)), 10) for s in range(4)]).reshape(2, 2, 32, 40)
    guard = _PlanesOnly(planes)
    steps = restore_layer_steps(guard, (2, 2), False, str(restorer_weights),
                                RestoreOptions(tile=64, device="cpu"))
    progress = []
    while True:
        try:
            progress.append(next(steps))
        except StopIteration as stop:
            result = stop.value
            break
    assert result.error is None and result.restored.shape == planes.shape
    assert guard.reads == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert progress[-1] == (3, 4, 1, 1)


@pytest.mark.parametrize("kind", ["labels", "shapes", "four_channels", "five_d", "tiny"])
def test_unsupported_layer_notifies(make_napari_viewer, restorer_weights, notes, kind):
    viewer = make_napari_viewer()
    if kind == "labels":
        layer = viewer.add_labels(np.zeros((32, 32), np.uint8), name="x")
    elif kind == "shapes":
        layer = viewer.add_shapes([[[0, 0], [10, 10], [0, 10]]], shape_type="polygon", name="x")
    elif kind == "four_channels":
        layer = viewer.add_image(np.zeros((32, 32, 4), np.uint8), rgb=False, name="x")
    elif kind == "five_d":
        layer = viewer.add_image(np.zeros((2, 2, 2, 16, 16), np.uint8), name="x")
    else:
        layer = viewer.add_image(np.zeros((4, 64), np.uint8), name="x")
    widget = _restore_dock(viewer)
    if kind in ("labels", "shapes"):  # not offered at all
        assert layer not in widget.image.choices and widget.image.value is None
        return
    widget.image.value = layer
    widget.set_model(restorer_weights)
    assert widget.run() is None
    assert widget.worker is None and widget.run_button.enabled
    assert len(notes) == 1 and notes[0][0] == "warning" and "'x'" in notes[0][1], notes
    assert [lay.name for lay in viewer.layers] == ["x"]
    widget.live_preview.value = True  # said once, then the preview turns itself off
    assert len(notes) == 2 and "Cannot preview 'x'" in notes[1][1] and not widget.live_preview.value
    viewer.camera.zoom *= 2
    assert len(notes) == 2 and widget.preview_worker is None


def test_missing_weights_file_and_auto(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    clean = synthetic(8, (64, 64))
    viewer.add_image(compress(clean, 10), name="img")
    widget = _restore_dock(viewer)
    widget.model.value = WEIGHTS_FILE
    assert widget.run() is None
    assert notes and notes[-1][0] == "error" and "weights file" in notes[-1][1]
    widget.model.value = AUTO
    if not (MODELS["crl-lite-gray"].has_weights or MODELS["crl-lite-color"].has_weights):
        assert widget.run() is None
        assert notes[-1][0] == "error" and "no shipped weights" in notes[-1][1]
        assert "No shipped model weights" in widget.status.value
        return
    assert set(widget.model.choices) >= {AUTO, WEIGHTS_FILE}
    widget.tile.value = 64
    widget.run()
    _wait(qtbot, widget, timeout=120_000)
    out = viewer.layers["img (restored)"]
    assert psnr(clean, out.data) > psnr(clean, viewer.layers["img"].data)


# ---------------------------------------------------------------------------------- inspector
def test_inspector_heatmap_and_plot(make_napari_viewer, qtbot, encoder_weights, notes):
    viewer = make_napari_viewer()
    clean = synthetic(9, (128, 128))
    layers = []
    for q in (10, 60):
        data = encode_jpeg(clean, q)
        meta = jpeg_metadata(read_quant_tables(data), f"q{q}.jpg")
        layers.append(viewer.add_image(compress(clean, q), name=f"q{q}", metadata=meta,
                                       scale=(2.0, 2.0), translate=(5.0, 7.0)))
    widget = QualityInspectorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Compression quality inspector")
    widget.layers.value = layers
    widget.set_model(encoder_weights)
    widget.tile.value = 32
    widget.run_button.native.click()
    _wait(qtbot, widget)
    assert not [n for n in notes if n[0] != "info"], notes
    heat = viewer.layers["q10 (quality heatmap)"]
    assert heat.data.shape == (4, 4) and heat.colormap.name == "inferno" and heat.opacity < 1
    np.testing.assert_allclose(heat.scale, (64.0, 64.0))
    np.testing.assert_allclose(heat.translate, (5.0 + 31, 7.0 + 31))
    assert "q60 (quality heatmap)" in viewer.layers
    assert widget.plotted_points == 32 and widget.status.value.endswith("TSNE")
    assert all(w.tooltip for w in (widget.layers, widget.model, widget.weights, widget.tile,
                                   widget.method, widget.device))
    assert widget.progress.value == 1000
    assert "Q10" in widget.quality_label.value and "Q60" in widget.quality_label.value
    label = widget.quality_label.native
    assert label.wordWrap() and label.heightForWidth(200) >= 2 * label.fontMetrics().height()
    from matplotlib.colors import to_hex
    from napari.utils.theme import get_theme

    theme = get_theme(viewer.theme)  # the plot follows the viewer's theme, title readable on it
    assert to_hex(widget.figure.get_facecolor()) == theme.background.as_hex()
    assert to_hex(widget.axes.title.get_color()) == theme.text.as_hex()
    colours = np.concatenate([c.get_array() for c in widget.axes.collections])
    assert set(np.unique(colours)) == {10.0, 60.0}  # tables' quality wins over the estimate


def test_inspector_shows_progress_and_cancels(make_napari_viewer, qtbot, encoder_weights, notes):
    viewer = make_napari_viewer()
    viewer.add_image(compress(synthetic(11, (1024, 1024)), 30), name="big")  # 256 tiles
    widget = QualityInspectorWidget(viewer)
    widget.layers.value = [viewer.layers["big"]]
    widget.set_model(encoder_weights)
    widget.tile.value = 64
    worker = widget.run()
    with qtbot.waitSignal(worker.aborted, timeout=WAIT_MS):
        qtbot.waitUntil(lambda: 0 < widget.progress.value < 1000, timeout=WAIT_MS)
        assert "embedded" in widget.status.value and widget.cancel_button.enabled
        widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert "Cancelled" in widget.status.value and "big (quality heatmap)" not in viewer.layers
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def _inspect_plain_layer(make_napari_viewer, qtbot, model) -> tuple:
    """The inspector run on one 96-px JPEG-compressed layer without tables, 32-px tiles, PCA."""
    viewer = make_napari_viewer()
    layer = viewer.add_image(compress(synthetic(10, (96, 96)), 30), name="plain")
    widget = QualityInspectorWidget(viewer)
    widget.layers.value = [layer]
    widget.set_model(model)
    widget.tile.value = 32
    widget.method.value = "pca"
    widget.run()
    _wait(qtbot, widget)
    return viewer, widget


def test_inspector_one_layer_without_tables(make_napari_viewer, qtbot, encoder_weights, notes):
    viewer, widget = _inspect_plain_layer(make_napari_viewer, qtbot, encoder_weights)
    assert viewer.layers["plain (quality heatmap)"].data.shape == (3, 3)
    assert viewer.layers["plain (quality heatmap)"].colorbar.visible
    assert widget.plotted_points == 9 and "no JPEG tables" in widget.quality_label.value
    assert "JPEG traces in its pixels: ~Q" in widget.quality_label.value  # found in the pixels
    assert "not reliable across images" in widget.quality_label.value  # a restorer's encoder
    assert "estimated from pixels" not in widget.quality_label.value
    widget.close()


def test_inspector_gives_a_validated_encoders_estimate_with_its_error(make_napari_viewer, qtbot,
                                                                      tmp_path, notes):
    from napari_jpeg_restore.core.models import create_model

    path = tmp_path / "cqe.pt"
    save_weights(create_model("cqe", "lite", 1, dct_width=16).eval(), path,
                 meta={"quality_validation": {"within_10": 0.8, "mae": 7.0, "set": "val-gray-bsd68"}})
    _, widget = _inspect_plain_layer(make_napari_viewer, qtbot, path)
    text = widget.quality_label.value
    assert re.search(r"plain: estimated from pixels ~Q\d+", text), text
    assert "within ±10 of the true quality for 80% of validation images (val-gray-bsd68)" in text
    widget.close()


def test_inspector_rejects_restorer_without_encoder(make_napari_viewer, qtbot, restorer_weights,
                                                    notes):
    viewer = make_napari_viewer()
    layer = viewer.add_image(synthetic(11, (64, 64)), name="img")
    widget = QualityInspectorWidget(viewer)
    widget.layers.value = [layer]
    widget.set_model(restorer_weights)
    widget.run()
    _wait(qtbot, widget)
    assert notes and notes[-1][0] == "error" and "encoder" in notes[-1][1]
    assert "img (quality heatmap)" not in viewer.layers
    widget.close()


def test_inspector_heatmaps_every_plane_of_a_float_stack_and_plots_the_shown_one(
        make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    stack = np.stack([compress(synthetic(s, (64, 96)), q) for s, q in ((12, 90), (13, 10))])
    layer = viewer.add_image(stack.astype(np.float32) / 255, name="stack")
    viewer.dims.set_current_step(0, 1)
    widget = QualityInspectorWidget(viewer)
    widget.layers.value = [layer]
    assert widget.model.value == AUTO  # the shipped quality encoder
    widget.tile.value = 32
    widget.run()
    _wait(qtbot, widget)
    assert not notes, notes
    heat = viewer.layers["stack (quality heatmap)"]
    assert heat.data.shape == (2, 2, 3)  # a heatmap per plane: it follows the plane slider
    assert heat.data[0].mean() > heat.data[1].mean() + 30  # the Q90 plane reads higher than Q10
    np.testing.assert_allclose(heat.scale, (1.0, 32.0, 32.0))
    np.testing.assert_array_equal(widget._items[0][1].plane, layer.data[1])  # the shown plane
    assert widget.plotted_points == 6 and widget.status.value.endswith("PCA")  # its tiles only
    widget.close()


# ---------------------------------------------------------------------------------- fine-tune
def test_finetune_widget_trains_cancels_cleanly_and_offers_the_model(
        make_napari_viewer, qtbot, tmp_path, monkeypatch, notes):
    """A 30-minute fine-tune on one large layer (cut into tiles), cancelled once training shows
    progress: the best weights are still registered, and the open restore widget lists them."""
    from napari_jpeg_restore.core import registry

    from napari_jpeg_restore._finetune_widget import FinetuneWidget

    if not MODELS["crl-lite-gray"].has_weights:
        pytest.skip("fine-tunes start from the shipped crl-lite-gray")
    monkeypatch.setenv(registry.USER_MODELS_ENV, str(tmp_path / "models"))
    viewer = make_napari_viewer()
    viewer.add_image(synthetic(4, (520, 540)), name="slide")
    restore_dock = _restore_dock(viewer)
    assert "napari-model" not in restore_dock.model.choices
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune on my images")
    widget.layers.value = [viewer.layers["slide"]]
    widget.set_model("crl-lite-gray")
    widget.minutes.value = 30
    widget.name.value = "napari-model"
    assert widget.options().recolour
    widget.recolour.value = False
    assert not widget.options().recolour and widget.options().name == "napari-model"
    widget.run_button.native.click()
    try:
        qtbot.waitUntil(lambda: widget.progress.value > 0, timeout=300_000)
        assert widget.status.value.startswith("Training") and "held-out gain" in widget.status.value
    finally:
        widget.cancel_button.native.click()
    assert widget.status.value.startswith("Stopping")
    _wait(qtbot, widget, timeout=300_000)
    assert widget.status.value.startswith("Registered 'napari-model'"), widget.status.value
    assert ("info", "Fine-tuned model 'napari-model' registered") in notes
    assert "napari-model" in restore_dock.model.choices  # without touching the restore widget
    meta = registry.load_model("napari-model").meta
    assert len(meta["finetune"]["images"]) + len(meta["finetune"]["held_out"]) == 4  # 2x2 tiles
    assert meta["history"][-1]["wall_h"] * 60 < 30  # stopped well before its 30 minutes

    widget.name.value = "crl-lite-gray"  # a shipped model's name: one notification, no traceback
    widget.run()
    _wait(qtbot, widget, timeout=120_000)
    assert notes[-1][0] == "error" and "shipped model" in notes[-1][1]
