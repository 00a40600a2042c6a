"""Dock widget "Compression quality inspector": a thin Qt shell over :mod:`._inspect_steps`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_jpeg_restore.core.engines.device import DEVICES

from ._inspect_steps import InspectItem, InspectResult, inspect_steps, table_quality
from ._layers import (
    layer_channels,
    model_names,
    plane_layout,
    resolve_model_spec,
    shown_plane,
)
from ._model_choice import _ModelChoice
from ._worker_controls import _WorkerControls

if TYPE_CHECKING:
    import napari


class QualityInspectorWidget(_ModelChoice, _WorkerControls, QWidget):
    """Dock widget "Compression quality inspector"."""

    MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = napari_viewer
        self.worker = None
        self._items: list[tuple[Image, InspectItem]] = []
        self.layers = Select(label="images", choices=self._image_choices,
                             tooltip="The Image layers to inspect (several: one plot, one "
                                     "heatmap each; a stack gets a heatmap per plane).")
        self.layers.native.setMaximumHeight(100)
        self._add_model_choice(
            True, "auto: the shipped quality encoder for gray or colour (its measured error is "
                  "printed with the estimate); a restorer's encoder, or 'weights file…' for a .pt "
                  "file.", "A weights file (.pt) with a quality encoder.")
        self.tile = SpinBox(label="tile size", min=16, max=1024, step=16, value=64,
                            tooltip="Pixels per side of the tiles that are embedded: one point "
                                    "in the plot and one heatmap cell each.")
        self.method = ComboBox(label="projection", choices=["auto", "pca", "tsne"], value="auto",
                               tooltip="How the embeddings become 2-D: PCA, or t-SNE (auto uses "
                                       "t-SNE from 30 tiles on).")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto",
                               tooltip="Where the encoder runs: 'auto' uses a CUDA GPU when there "
                                       "is one, else the CPU.")
        self.run_button = PushButton(text="Inspect")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, label="progress")
        self.quality_label = Label(value="")
        self.status = Label(value="")
        for label in (self.quality_label, self.status):  # long lines wrap, never clip
            label.native.setWordWrap(True)
        self.form = Container(widgets=[
            self.layers, self.model, self.weights, self.tile, self.method, self.device,
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                      labels=False),
            self.progress, self.quality_label, self.status])
        self.figure = Figure(figsize=(4, 3.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(280)
        self.axes = self.figure.add_subplot(111)
        self._draw_empty()
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.canvas, 1)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self.reset_choices()
        selected = [layer for layer in self.viewer.layers.selection if isinstance(layer, Image)]
        if selected:
            self.layers.value = selected
        if not model_names(True):
            self.status.value = ("No shipped model weights are installed:\n"
                                 "choose 'weights file…' and a .pt file.")

    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and not layer.name.endswith("(quality heatmap)")]

    def reset_choices(self, *_args) -> None:
        self.form.reset_choices()

    def _draw_empty(self) -> None:
        self.axes.clear()
        self.axes.set_title("compression-quality embeddings", fontsize=9)
        self.axes.text(0.5, 0.5, "choose images and press Inspect", ha="center", va="center",
                       transform=self.axes.transAxes, color="0.5")
        self.axes.set_xticks([])
        self.axes.set_yticks([])
        self._follow_theme(self.axes)
        self.canvas.draw_idle()

    def _item(self, layer: Image) -> InspectItem:
        """What to inspect of ``layer``: every plane, and the one the viewer shows."""
        lead_shape = plane_layout(layer)[0]  # raises for an unsupported layer
        current = shown_plane(layer, self.viewer.dims.point, lead_shape)
        return InspectItem(layer.name, layer.data, table_quality(layer.metadata), lead_shape, current)

    def run(self, *_args):
        from napari_jpeg_restore.core.engines.device import resolve_device

        if self.worker is not None:
            show_warning("The inspector is already running.")
            return None
        layers = list(self.layers.value) or [
            layer for layer in self.viewer.layers.selection if isinstance(layer, Image)]
        if not layers:
            show_warning("Choose one or more Image layers to inspect.")
            return None
        def prepare() -> tuple[list[tuple[Image, InspectItem]], Any]:
            items = [(layer, self._item(layer)) for layer in layers]
            spec = resolve_model_spec(self.model.value, self.weights.value,
                                      max(layer_channels(layer) for layer in layers), quality=True)
            resolve_device(self.device.value)
            return items, spec

        prepared = self._prepare("inspect", prepare)
        if prepared is None:
            return None
        items, spec = prepared
        self._items = items
        worker = thread_worker(inspect_steps, start_thread=False)(
            [it for _, it in items], spec, int(self.tile.value), self.method.value, self.device.value)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        return self._start(worker, "Loading the encoder…")

    def _on_progress(self, step: tuple[int, int, int, int]) -> None:
        item, items, done, total = step
        self.progress.max = 1000
        self.progress.value = int(1000 * (item * total + done) / max(1, items * total))
        self.status.value = f"image {item + 1}/{items}: embedded {done}/{total} tiles"

    def _on_aborted(self) -> None:
        self.status.value = "Cancelled; nothing added."

    def _on_returned(self, res: InspectResult) -> None:
        if res.error is not None:
            show_error(f"Quality inspection failed: {res.error}")
            self.status.value = "Failed."
            return
        lines = []
        for (layer, item), heat, est, traces in zip(self._items, res.heatmaps, res.estimates,
                                                   res.traces):
            self._add_heatmap(layer, heat, res.tile, item, est)
            if item.table_q:
                q, exact = item.table_q
                lines.append(f"{item.name}: JPEG tables Q{q} ({'exact' if exact else 'nearest IJG table'})")
            else:
                lines.append(f"{item.name}: no JPEG tables; {traces}")
            if res.validated:
                lines.append(f"{item.name}: estimated from pixels ~Q{est:.0f}")
        if res.validated:
            v = res.validated
            lines.append(f"Pixel estimates are within ±10 of the true quality for {v['within_10']:.0%} "
                         f"of validation images ({v['set']}); the file's tables are exact.")
        else:  # a restorer's encoder: its embedding follows content more than quality
            lines.append("This encoder's quality estimates (heatmap) are not reliable across images; "
                         "the tables, or the traces in the pixels, are. Choose a cqe-lite model.")
        self.quality_label.value = "\n".join(lines)
        self._plot(res)
        self.progress.value = 1000
        self.status.value = f"{len(res.xy)} tiles of {res.tile} px, {res.method.upper()}"

    def _add_heatmap(self, layer: Image, heat: np.ndarray, tile: int, item: InspectItem,
                     estimate: float) -> None:
        """One cell per tile over the layer (a stack's heatmap has its planes: it follows the
        slider), with a colour bar."""
        lead = len(item.lead_shape)
        scale = np.asarray(layer.scale, float)[-2 - lead:]
        translate = np.asarray(layer.translate, float)[-2 - lead:]
        translate[-2:] += (tile - 1) / 2 * scale[-2:]
        scale[-2:] *= tile
        name = f"{layer.name} (quality heatmap)"
        meta = {"tile": tile, "source_layer": layer.name, "cqe_quality_mean": estimate}
        if name in self.viewer.layers:
            old = self.viewer.layers[name]
            old.data, old.scale, old.translate, old.metadata = heat, scale, translate, meta
            return
        added = self.viewer.add_image(heat, name=name, colormap="inferno", opacity=0.45,
                                      blending="translucent", contrast_limits=(0, 100),
                                      scale=scale, translate=translate, metadata=meta)
        added.colorbar.visible = True

    def _plot(self, res: InspectResult) -> None:
        ax = self.axes
        self.figure.clear()
        ax = self.axes = self.figure.add_subplot(111)
        sc = None
        for i, (_, item) in enumerate(self._items):
            m = res.owner == i
            if not m.any():
                continue
            sc = ax.scatter(res.xy[m, 0], res.xy[m, 1], c=res.colour[m], cmap="inferno",
                            vmin=0, vmax=100, s=22, marker=self.MARKERS[i % len(self.MARKERS)],
                            edgecolors="0.75", linewidths=0.4, label=item.name)
        bar = self.figure.colorbar(sc, ax=ax, label="JPEG quality") if sc is not None else None
        if len(self._items) > 1:
            ax.legend(fontsize=7, loc="best")
        ax.set_title(f"{res.method.upper()} of compression-quality embeddings", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        self._follow_theme(ax, bar)
        self.canvas.draw_idle()

    def _follow_theme(self, ax, bar=None) -> None:
        """The plot in the viewer's theme colours (dark by default), text readable on them."""
        from napari.utils.theme import get_theme

        theme = get_theme(self.viewer.theme)
        back, text = theme.background.as_hex(), theme.text.as_hex()
        self.figure.set_facecolor(back)
        ax.set_facecolor(back)
        ax.title.set_color(text)
        for spine in ax.spines.values():
            spine.set_color(text)
        if bar is not None:
            bar.ax.yaxis.label.set_color(text)
            bar.ax.tick_params(colors=text)
            bar.outline.set_edgecolor(text)
        legend = ax.get_legend()
        if legend is not None:
            legend.get_frame().set_facecolor(back)
            for t in legend.get_texts():
                t.set_color(text)

    @property
    def plotted_points(self) -> int:
        """Number of points in the embedding plot (for tests and scripts)."""
        return sum(len(c.get_offsets()) for c in self.axes.collections)
