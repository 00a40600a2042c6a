"""Dock widget "Restore JPEG artifacts": a thin Qt shell over :mod:`._restore_steps`.

The work runs in a napari thread worker (a generator, so Cancel stops it between two tiles)
and comes back to the Qt thread as new layers; every expected failure (an unsupported layer,
a model without weights, no CUDA) is a notification, never a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_jpeg_restore.core.jpeg import DEFAULT_SKIP_ABOVE_QUALITY

from ._layers import (
    AUTO,
    DEVICES,
    layer_channels,
    model_choices,
    model_names,
    plane_layout,
    resolve_model_spec,
)
from ._model_choice import _ModelChoice
from ._restore_steps import (
    INTENSITY,
    RestoreResult,
    intensity_range,
    layer_jpeg,
    provenance,
    restore_layer_steps,
)
from ._worker_controls import _WorkerControls

if TYPE_CHECKING:
    import napari


def _copy_layer_kwargs(layer: Image, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate,
            "shear": layer.shear, "metadata": metadata}



class RestoreWidget(_ModelChoice, _WorkerControls, QWidget):
    """Dock widget "Restore JPEG artifacts"."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._job: dict[str, Any] = {}
        self.image = ComboBox(label="image", choices=self._layer_choices, nullable=True)
        self.model = ComboBox(label="model", choices=lambda _w: model_choices(), value=AUTO,
                              tooltip="The restoration network: 'auto' takes the shipped model "
                                      "for gray or colour layers; 'weights file…' takes a .pt "
                                      "file trained with `jpeg-restore train`.")
        self.weights = FileEdit(label="weights file", mode="r", filter="*.pt", visible=False,
                                tooltip="A weights file (.pt) written by `jpeg-restore train`.")
        self.tile = SpinBox(label="tile size", min=64, max=4096, step=64, value=512,
                            tooltip="Pixels per side of the tiles the image is restored in: "
                                    "smaller tiles use less memory and update the bar more "
                                    "often; the result is the same.")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto",
                               tooltip="Where the network runs: 'auto' uses a CUDA GPU when "
                                       "there is one, else the CPU.")
        self.intensity = ComboBox(
            label="intensity", choices=list(INTENSITY), value="auto",
            tooltip="Which values the network sees as black and white. auto: 8-bit data as is, "
                    "16-bit data by the bits it uses (12-bit camera data by 4095), float data "
                    "by its range. contrast limits: the layer's display range (values beyond it "
                    "are kept). dtype range: 0 to the type's maximum (65535 for uint16).")
        self.difference = CheckBox(text="add difference layer", value=False,
                                   tooltip="Also add 'restored minus original' as a hidden layer "
                                           "with a diverging colormap centred at 0.")
        self.ensemble = CheckBox(text="x8 self-ensemble (8x slower, a little better)", value=False,
                                 tooltip="Average the network's output over the 8 rotations and "
                                         "flips of each tile: 8x the time, a little better.")
        self.precision = ComboBox(
            label="precision", choices=["auto", "fp32", "bf16"], value="auto",
            tooltip="auto: bf16 where the device computes it natively (CPUs with AVX512-BF16 or "
                    "AMX, CUDA GPUs), within 0.02 dB of fp32 and up to 1.5x faster; else fp32.")
        self.skip_above = SpinBox(
            label="skip above JPEG Q", min=1, max=100, value=DEFAULT_SKIP_ABOVE_QUALITY,
            tooltip="Leave an image alone when its JPEG quality is above this, read from its "
                    "quantization tables (this plugin's reader) or found in its pixels, or when "
                    "it shows no JPEG compression at all: there is nothing to gain. "
                    "100 restores everything.")
        self.run_button = PushButton(text="Restore")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, label="progress")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # long lines wrap, never clip
        self.form = Container(widgets=[
            self.image, self.model, self.weights, self.tile, self.device, self.intensity,
            self.difference, self.ensemble, self.precision,
            self.skip_above, Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
            self.progress, self.status])
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addStretch(1)
        self.model.changed.connect(self._on_model_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.reset_choices)
        # The list follows the viewer: a layer opened or clicked on becomes the choice.
        self.viewer.layers.selection.events.active.connect(self._select_active_layer)
        self.reset_choices()
        self._select_active_layer()
        if not model_names():
            self.status.value = ("No shipped model weights are installed:\n"
                                 "choose 'weights file…' and a .pt file.")

    # choices and model selection
    def _layer_choices(self, _widget=None) -> list[tuple[str, Any]]:
        """Image layers, less the ones this plugin derives (differences, quality heatmaps)."""
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)
                and not layer.name.endswith(("(difference)", "(quality heatmap)"))]

    def reset_choices(self, *_args) -> None:
        self.form.reset_choices()

    def _select_active_layer(self, *_args) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and active in self.image.choices:
            self.image.value = active
        elif self.image.value is None:
            images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
            if images:
                self.image.value = images[-1]

    # running
    @property
    def running(self) -> bool:
        return self.worker is not None

    def run(self, *_args):
        """Start restoring the chosen layer; returns the worker, or None after a notification."""
        from napari_jpeg_restore.core.file_restore import skip_reason
        from napari_jpeg_restore.core.inference import resolve_device

        if self.running:
            show_warning("A restoration is already running; cancel it first.")
            return None
        layer = self.image.value
        self.status.value = ""  # a rejected run leaves no stale status of an earlier one
        if layer is None:
            show_warning("Add or choose an Image layer to restore.")
            return None

        def prepare() -> tuple[tuple[int, ...], Any]:
            lead_shape = plane_layout(layer)[0]
            spec = resolve_model_spec(self.model.value, self.weights.value, layer_channels(layer))
            resolve_device(self.device.value)
            return lead_shape, spec

        prepared = self._prepare(f"restore '{layer.name}'", prepare)
        if prepared is None:
            return None
        lead_shape = prepared[0]
        first = layer.data[(0,) * len(lead_shape)] if lead_shape else layer.data
        jpeg, known_by = layer_jpeg(layer.metadata, first)
        why = skip_reason(jpeg, int(self.skip_above.value))
        if why:
            how = f" (Q{jpeg.quality} by its {known_by})" if jpeg else ""
            self.status.value = (f"'{layer.name}' left as is: {why}{how}; "
                                 "raise 'skip above JPEG Q' to 100 to restore it anyway.")
            show_info(self.status.value)
            return None
        lead_shape, spec = prepared
        self._job = {"layer": layer, "difference": bool(self.difference.value),
                     "tile": int(self.tile.value), "ensemble": bool(self.ensemble.value),
                     "precision": self.precision.value,
                     "jpeg_by": f"{known_by} (Q{jpeg.quality})" if jpeg else "none found"}
        worker = thread_worker(restore_layer_steps, start_thread=False)(
            layer.data, lead_shape, bool(layer.rgb), spec, int(self.tile.value),
            self.device.value, bool(self.difference.value), bool(self.ensemble.value),
            dict(layer.metadata), intensity_range(layer, self.intensity.value), self.precision.value)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        return self._start(worker, f"Loading {Path(spec).name} to restore '{layer.name}'…")

    def _on_progress(self, step: tuple[int, int, int, int]) -> None:
        plane, planes, done, total = step
        self.progress.max = 1000
        self.progress.value = int(1000 * (plane * total + done) / max(1, planes * total))
        where = f"plane {plane + 1}/{planes}, " if planes > 1 else ""
        self.status.value = f"{where}tile {done}/{total}"

    def _on_returned(self, result: RestoreResult) -> None:
        layer = self._job.get("layer")
        if result.error is not None or layer is None:
            show_error(f"Restoration failed: {result.error}")
            self.status.value = "Failed."
            return
        meta = provenance(layer, result.model, self._job["tile"], self._job["ensemble"],
                          self._job["jpeg_by"], self._job["precision"])
        kwargs = _copy_layer_kwargs(layer, meta)
        extra: dict[str, Any] = {"rgb": True} if layer.rgb else {
            "rgb": False, "colormap": layer.colormap, "contrast_limits": layer.contrast_limits,
            "gamma": layer.gamma}
        name = f"{layer.name} (restored)"
        done = self._replace_or_add(name, result.restored, meta, kwargs, extra)
        note = ""
        if result.difference is not None:
            d = result.difference
            lim = float(np.percentile(np.abs(d), 99.9)) if d.size else 1.0
            self._replace_or_add(f"{layer.name} (difference)", d, meta, kwargs, {
                "colormap": "twilight_shifted", "contrast_limits": (-(lim or 1.0), lim or 1.0),
                "visible": False})
            note = " The difference layer is hidden: tick its eye to see it."
        self.image.value = layer  # the new layers became active; the source stays the choice
        self.progress.value = 1000
        self.status.value = f"{done} '{name}'.{note}"

    def _replace_or_add(self, name: str, data: np.ndarray, meta: dict[str, Any],
                        kwargs: dict[str, Any], extra: dict[str, Any]) -> str:
        """Replace the data of an earlier result of the same name (a second run updates it,
        with its settings in the metadata) or add a new layer. Returns what was done."""
        if name in self.viewer.layers:
            old = self.viewer.layers[name]
            old.data, old.metadata = data, meta
            return "Replaced"
        self.viewer.add_image(data, name=name, **kwargs, **extra)
        return "Added"

    def _on_aborted(self) -> None:
        self.status.value = "Cancelled; no layer added."
        show_info("JPEG restoration cancelled")

    def _on_finished(self) -> None:
        super()._on_finished()
        self._job = {}
