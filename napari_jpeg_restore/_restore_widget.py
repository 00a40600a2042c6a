"""Dock widget "Restore JPEG artifacts": a thin Qt shell over :mod:`._restore_steps`.

The work runs in a napari thread worker (a generator, so Cancel stops it between two tiles)
and comes back to the Qt thread as new layers; every expected failure (an unsupported layer,
a model without weights, no CUDA) is a notification, never a traceback.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from napari_jpeg_restore.core.engines.device import DEVICES
from napari_jpeg_restore.core.engines.precision import PRECISIONS
from napari_jpeg_restore.core.jpeg.codec import DEFAULT_SKIP_ABOVE_QUALITY
from napari_jpeg_restore.core.restoration.options import RestoreOptions

from ._layers import (
    layer_channels,
    model_names,
    plane_layout,
    resolve_model_spec,
    shown_plane,
)
from ._model_choice import _ModelChoice
from ._preview_steps import PREVIEW_SIDE, PreviewRegion, preview_region, preview_steps
from ._restore_steps import (
    INTENSITY,
    LayerJob,
    RestoreResult,
    intensity_range,
    layer_tables,
    provenance,
    restore_queue_steps,
)
from ._worker_controls import _WorkerControls

if TYPE_CHECKING:
    import napari

PREVIEW = " (preview)"
PREVIEW_DELAY_MS = 300  # after the last change of the view or a setting


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
        self._add_model_choice(
            False, "The restoration network: 'auto' takes the shipped model for gray or colour "
                   "layers; 'weights file…' takes a .pt file trained with `jpeg-restore train`.",
            "A weights file (.pt) written by `jpeg-restore train`.")
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
            label="precision", choices=list(PRECISIONS), value="auto",
            tooltip="auto: bf16 where the device computes it natively (CPUs with AVX512-BF16 or "
                    "AMX, CUDA GPUs), within 0.02 dB of fp32 and up to 2x faster; else fp32. fp16: "
                    "for CUDA GPUs without bf16 (emulated, slow, on most CPUs).")
        self.every_selected = CheckBox(
            text="every selected layer", value=False,
            tooltip="Restore every Image layer selected in the layer list, one after the other "
                    "in one run (Cancel stops the rest); otherwise the one chosen above.")
        self.skip_above = SpinBox(
            label="skip above JPEG Q", min=1, max=100, value=DEFAULT_SKIP_ABOVE_QUALITY,
            tooltip="Leave an image alone when its JPEG quality is above this, read from its "
                    "quantization tables (this plugin's reader) or found in its pixels, or when "
                    "it shows no JPEG compression at all: there is nothing to gain. "
                    "100 restores everything.")
        self.assume = ComboBox(
            label="restore as", value=0,
            choices=[("auto", 0)] + [(f"JPEG Q{q}", q) for q in range(5, 100, 5)],
            tooltip="The strength: restore as if the picture had been compressed at this JPEG "
                    "quality, whatever its tables say (lower is stronger; for screenshots and "
                    "re-shared pictures). auto: the quality of its tables, or the quality "
                    "encoder's reading of the pixels where they show a much heavier earlier "
                    "compression.")
        self.live_preview = CheckBox(
            text="live preview of the view", value=False,
            tooltip=f"Restore the part of the picture in view (up to {PREVIEW_SIDE}x{PREVIEW_SIDE} "
                    "pixels of the plane shown) with these settings, again whenever 'restore as', "
                    "another setting or the view changes: try strengths before restoring the "
                    f"whole picture. Shown as the layer '<name>{PREVIEW}' over it; untick to "
                    "remove it.")
        self.preview_worker = None
        self.preview_region: PreviewRegion | None = None  # the last preview's crop
        self._preview_again = False
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_DELAY_MS)
        self._preview_timer.timeout.connect(self.preview)
        self.run_button = PushButton(text="Restore")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, label="progress")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # long lines wrap, never clip
        self._lay_out([self.image, self.every_selected, self.model, self.weights, self.tile,
                       self.device, self.intensity, self.difference, self.ensemble, self.precision,
                       self.skip_above, self.assume, self.live_preview])
        # The list follows the viewer: a layer opened or clicked on becomes the choice.
        self.viewer.layers.selection.events.active.connect(self._select_active_layer)
        self.reset_choices()
        self._select_active_layer()
        for event in (self.assume.changed, self.model.changed, self.weights.changed, self.image.changed,
                      self.intensity.changed, self.precision.changed, self.device.changed,
                      self.viewer.camera.events.center, self.viewer.camera.events.zoom,
                      self.viewer.dims.events.current_step):
            event.connect(self._schedule_preview)
        self.live_preview.changed.connect(self._on_live_preview)
        if not model_names():
            self.status.value = ("No shipped model weights are installed:\n"
                                 "choose 'weights file…' and a .pt file.")

    # choices and model selection
    def _layer_choices(self, _widget=None) -> list[tuple[str, Any]]:
        """Image layers, less the ones this plugin derives (differences, quality heatmaps)."""
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)
                and not layer.name.endswith(("(difference)", "(quality heatmap)", PREVIEW))]

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

    def _chosen_layers(self) -> list[Image]:
        """The layers a run restores: every selected Image layer (in layer-list order) when
        'every selected layer' is ticked and some are selected, else the one chosen."""
        if self.every_selected.value:
            offered = [layer for _, layer in self._layer_choices()]
            selected = [layer for layer in offered if layer in self.viewer.layers.selection]
            if selected:
                return selected
        return [self.image.value] if self.image.value is not None else []

    def options(self) -> RestoreOptions:
        """How this widget's settings restore a run (its preview: the same without the x8)."""
        return RestoreOptions(tile=int(self.tile.value), device=self.device.value,
                              precision=self.precision.value, ensemble=bool(self.ensemble.value),
                              assume_quality=int(self.assume.value) or None,
                              skip_above_quality=int(self.skip_above.value))

    def _plan(self, layer: Image) -> tuple[LayerJob, str] | str:
        """The job for ``layer`` and how its compression is known, or why it is left alone
        (raises for an unsupported layer, a missing model or an unusable device)."""
        from napari_jpeg_restore.core.engines.device import resolve_device
        from napari_jpeg_restore.core.restoration.plan import plan_image

        lead_shape = plane_layout(layer)[0]
        spec = resolve_model_spec(self.model.value, self.weights.value, layer_channels(layer))
        resolve_device(self.device.value)
        first = layer.data[(0,) * len(lead_shape)] if lead_shape else layer.data
        tables = layer_tables(layer.metadata)
        known_by = "tables" if tables is not None else "pixels"
        plan = plan_image(np.asarray(first), tables, self.options())
        compression, jpeg = plan.compression, plan.grid
        if plan.skip:
            how = f" (Q{jpeg.quality} by its {known_by})" if jpeg else ""
            return f"'{layer.name}' left as is: {plan.skip}{how}"
        job = LayerJob(layer.data, lead_shape, bool(layer.rgb), spec, dict(layer.metadata),
                       intensity_range(layer, self.intensity.value), compression)
        return job, compression.describe() + (f" by its {known_by}" if compression.source == "tables" else "")

    def run(self, *_args):
        """Start restoring the chosen layer(s) in one worker; returns it, or None after a
        notification."""
        if self.running:
            show_warning("A restoration is already running; cancel it first.")
            return None
        self.status.value = ""  # a rejected run leaves no stale status of an earlier one
        layers = self._chosen_layers()
        if not layers:
            show_warning("Add or choose an Image layer to restore.")
            return None
        planned = []
        for layer in layers:
            plan = self._prepare(f"restore '{layer.name}'", lambda layer=layer: self._plan(layer))
            if plan is None:
                return None
            planned.append((layer, plan))
        left = [plan for _, plan in planned if isinstance(plan, str)]
        todo = [(layer, *plan) for layer, plan in planned if not isinstance(plan, str)]
        if left:
            self.status.value = ("; ".join(left) + ". Raise 'skip above JPEG Q' to 100 to restore "
                                 + ("them" if len(left) > 1 else "it") + " anyway.")
            show_info(self.status.value)
        if not todo:
            return None
        self._job = {"layers": [layer for layer, _, _ in todo], "jpeg_by": [by for _, _, by in todo],
                     "difference": bool(self.difference.value), "tile": int(self.tile.value),
                     "ensemble": bool(self.ensemble.value), "precision": self.precision.value,
                     "left": left}
        worker = thread_worker(restore_queue_steps, start_thread=False)(
            [job for _, job, _ in todo], self.options(), bool(self.difference.value))
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        names = ", ".join(f"'{layer.name}'" for layer, _, _ in todo)
        return self._start(worker, f"Loading {Path(todo[0][1].model_spec).name} to restore {names}…")

    def _on_progress(self, step: tuple[int, int, int, int, int, int]) -> None:
        k, n, plane, planes, done, total = step
        self.progress.max = 1000
        share = (plane * total + done) / max(1, planes * total)
        self.progress.value = int(1000 * (k + share) / n)
        which = f"layer {k + 1}/{n} '{self._job['layers'][k].name}', " if n > 1 else ""
        where = f"plane {plane + 1}/{planes}, " if planes > 1 else ""
        self.status.value = f"{which}{where}tile {done}/{total}"

    def _on_returned(self, results: list[RestoreResult]) -> None:
        said = []
        for layer, result, jpeg_by in zip(self._job["layers"], results, self._job["jpeg_by"]):
            if result.error is not None:
                show_error(f"Restoration of '{layer.name}' failed: {result.error}")
                said.append(f"'{layer.name}' failed.")
            else:
                said.append(self._add_result(layer, result, jpeg_by))
        self.image.value = self._job["layers"][0]  # the new layers became active; sources stay
        self.progress.value = 1000
        self.status.value = " ".join(said + self._job["left"])

    def _add_result(self, layer: Image, result: RestoreResult, jpeg_by: str) -> str:
        """Add (or replace) the restored and difference layers of ``layer``; says what it did."""
        meta = provenance(layer, result.model, self._job["tile"], self._job["ensemble"],
                          jpeg_by, self._job["precision"], result.engine)
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
        return f"{done} '{name}'.{note}"

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

    # live preview
    def _on_live_preview(self, on: bool) -> None:
        if on:
            self.preview()
            return
        self._preview_timer.stop()
        for layer in [ly for ly in self.viewer.layers if ly.name.endswith(PREVIEW)]:
            self.viewer.layers.remove(layer)

    def _schedule_preview(self, *_args) -> None:
        """Preview again once the view and the settings have been still for a moment."""
        if self.live_preview.value:
            self._preview_timer.start()

    def preview(self, *_args):
        """Restore the part of the chosen layer in view in a worker (one at a time: a change
        meanwhile previews again after it); returns the worker, or None."""
        layer = self.image.value
        if not self.live_preview.value or layer is None:
            return None
        if self.running or self.preview_worker is not None:
            self._preview_again = True
            return None
        plan = self._prepare(f"preview '{layer.name}'", lambda: self._plan(layer))
        if plan is None:  # said once; not again at every move of the view
            self.live_preview.value = False
            return None
        if isinstance(plan, str):
            self.status.value = f"Preview: {plan}."
            return None
        job, how = plan
        lead_shape, hw = plane_layout(layer)
        grid = layer.metadata.get("jpeg_grid") if layer.metadata.get("quant_tables") else None
        region = preview_region(shown_plane(layer, self.viewer.dims.point, lead_shape), hw,
                                layer.corner_pixels[:, -2:], tuple((grid or {}).get("offset", (0, 0))))
        worker = thread_worker(preview_steps, start_thread=False)(
            job, region, replace(self.options(), ensemble=False))  # a preview without the x8
        worker.returned.connect(lambda res: self._show_preview(layer, region, res, how))
        worker.finished.connect(self._on_preview_finished)
        self.preview_worker = worker
        self.status.value = f"Previewing {region.height}x{region.width} pixels of '{layer.name}'…"
        worker.start()
        return worker

    def _show_preview(self, layer: Image, region: PreviewRegion, result: RestoreResult, how: str) -> None:
        if result.error is not None:
            self.status.value = f"Preview of '{layer.name}' failed: {result.error}"
            return
        if not self.live_preview.value:
            return  # unticked meanwhile
        self.preview_region = region
        corner = np.asarray(layer.translate[-2:]) + np.asarray(layer.scale[-2:]) * (region.top, region.left)
        name = layer.name + PREVIEW
        if name in self.viewer.layers:
            shown = self.viewer.layers[name]
            shown.data, shown.translate = result.restored, corner
        else:
            extra: dict[str, Any] = {"rgb": True} if layer.rgb else {
                "rgb": False, "colormap": layer.colormap, "contrast_limits": layer.contrast_limits}
            self.viewer.add_image(result.restored, name=name, scale=layer.scale[-2:], translate=corner,
                                  **extra)
            self.viewer.layers.selection.active = layer  # the choice stays on the source
        self.status.value = (f"Preview: {region.height}x{region.width} pixels of '{layer.name}' "
                             f"restored as {how}.")

    def _on_preview_finished(self) -> None:
        self.preview_worker = None
        if self._preview_again:
            self._preview_again = False
            self._schedule_preview()

    def _on_aborted(self) -> None:
        self.status.value = "Cancelled; no layer added."
        show_info("JPEG restoration cancelled")

    def _on_finished(self) -> None:
        super()._on_finished()
        self._job = {}
        if self._preview_again:
            self._preview_again = False
            self._schedule_preview()
