"""napari plugin: manifest, JPEG reader and sample data."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

from napari_jpeg_restore.core.jpeg.codec import compress, encode_jpeg, ijg_table
from PIL import Image

from napari_jpeg_restore._reader import napari_get_reader, read_jpeg
from napari_jpeg_restore._sample_data import ihc_jpeg_q10, ihc_original, ihc_path

pytestmark = pytest.mark.napari
needs_display = pytest.mark.skipif(
    not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
         or os.environ.get("QT_QPA_PLATFORM")),
    reason="needs a display for Qt: run under xvfb-run")
PLUGIN = "napari-jpeg-restore"
ROOT = Path(__file__).resolve().parents[1]


def _gradient(h=48, w=80, rgb=False):
    yy, xx = np.mgrid[:h, :w]
    g = (xx * 3 + yy).clip(0, 255).astype(np.uint8)
    return np.stack([g, 255 - g, (g // 2)], axis=-1) if rgb else g


def test_manifest_is_valid_and_discovered():
    manifest = npe2.PluginManifest.from_file(ROOT / "napari_jpeg_restore" / "napari.yaml")
    assert manifest.name == PLUGIN
    assert (ROOT / "napari.yaml").resolve() == (ROOT / "napari_jpeg_restore" / "napari.yaml").resolve()
    pm = npe2.PluginManager.instance()
    pm.discover()
    found = pm.get_manifest(PLUGIN)  # through the installed entry point
    assert {w.display_name for w in found.contributions.widgets} == {
        "Restore JPEG artifacts", "Compression quality inspector", "Fine-tune on my images"}
    assert {s.key for s in found.contributions.sample_data} == {"ihc", "ihc_q10"}
    menus = {k: [i.command for i in v] for k, v in found.contributions.menus.items()}
    assert menus["napari/layers/filter"] == ["napari-jpeg-restore.make_restore_widget"]
    from npe2.manifest.utils import import_python_name

    for command in found.contributions.commands:
        assert callable(import_python_name(command.python_name)), command.python_name


def test_get_reader_only_for_jpeg(tmp_path):
    assert napari_get_reader(str(tmp_path / "a.png")) is None
    assert napari_get_reader([str(tmp_path / "a.jpg"), str(tmp_path / "b.tif")]) is None
    assert napari_get_reader(str(tmp_path / "a.JPG")) is read_jpeg
    assert napari_get_reader([tmp_path / "a.jpeg", tmp_path / "b.jpg"]) is read_jpeg


@pytest.mark.parametrize("rgb, quality", [(False, 37), (True, 85)])
def test_reader_fills_metadata(tmp_path, rgb, quality):
    img = _gradient(rgb=rgb)
    path = tmp_path / "pic.jpg"
    path.write_bytes(encode_jpeg(img, quality))
    [(data, kwargs, kind)] = napari_get_reader(str(path))(str(path))
    assert kind == "image" and kwargs["name"] == "pic" and kwargs["rgb"] is rgb
    assert data.shape == img.shape and data.dtype == np.uint8
    np.testing.assert_array_equal(data, compress(img, quality))
    meta = kwargs["metadata"]
    assert meta["jpeg_quality"] == quality and meta["jpeg_quality_exact"] is True
    assert meta["source_path"] == str(path)
    assert sorted(meta["quant_tables"]) == ([0, 1] if rgb else [0])
    assert all(isinstance(t, list) and len(t) == 64 for t in meta["quant_tables"].values())
    assert meta["quant_tables"][0] == ijg_table(quality).reshape(-1).tolist()


def test_reader_honours_exif_orientation(tmp_path):
    img = _gradient(40, 64)
    stored = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    stored.write_bytes(buf.getvalue())
    [(data, kwargs, _)] = read_jpeg(str(stored))
    plain = compress(img, 90)
    assert data.shape == (64, 40)
    np.testing.assert_array_equal(data, np.rot90(plain, -1))
    assert kwargs["metadata"]["jpeg_quality"] == 90


@needs_display
def test_viewer_opens_jpeg_with_plugin(make_napari_viewer, tmp_path):
    path = tmp_path / "photo.jpeg"
    path.write_bytes(encode_jpeg(_gradient(rgb=True), 20))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    assert layer.rgb and layer.metadata["jpeg_quality"] == 20


def test_sample_data():
    [(orig, okw, okind)] = ihc_original()
    [(jpeg, jkw, jkind)] = ihc_jpeg_q10()
    assert okind == jkind == "image" and okw["rgb"] and jkw["rgb"]
    assert orig.shape == jpeg.shape == (512, 512, 3) and jpeg.dtype == np.uint8
    assert jkw["metadata"]["jpeg_quality"] == 10 and jkw["metadata"]["jpeg_quality_exact"]
    np.testing.assert_array_equal(jpeg, compress(orig, 10))
    assert ihc_path().is_file()


@needs_display
def test_sample_data_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "ihc_q10")
    viewer.open_sample(PLUGIN, "ihc")
    assert [layer.name for layer in viewer.layers] == ["ihc (JPEG Q10)", "ihc"]


@needs_display
def test_plugin_dock_widgets_open(make_napari_viewer):
    from napari_jpeg_restore._inspector_widget import QualityInspectorWidget
    from napari_jpeg_restore._restore_widget import RestoreWidget

    viewer = make_napari_viewer()
    viewer.add_image(_gradient(), name="g")
    _, restore = viewer.window.add_plugin_dock_widget(PLUGIN, "Restore JPEG artifacts")
    _, inspect = viewer.window.add_plugin_dock_widget(PLUGIN, "Compression quality inspector")
    assert isinstance(restore, RestoreWidget) and isinstance(inspect, QualityInspectorWidget)
    assert restore.image.value is viewer.layers["g"]
    viewer.add_image(_gradient(), name="h")
    assert viewer.layers["h"] in restore.image.choices
