"""Dock widget "Fine-tune on my images": a thin Qt shell over :mod:`._finetune_steps`.

Training runs in a napari thread worker; Cancel ends it cleanly after the current step (the best
held-out weights are kept, calibrated and registered), and the new model then appears in every
model list of the plugin."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
)
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QWidget

from napari_jpeg_restore.core.training.finetune import (
    FinetuneOptions,
    FinetuneProgress,
    FinetuneResult,
    gain_line,
)

from ._finetune_steps import TILE, finetune_layer_steps
from ._layers import AUTO, WEIGHTS_FILE, plane_layout
from ._model_choice import _ModelChoice, models_changed
from ._worker_controls import _WorkerControls

if TYPE_CHECKING:
    import napari

TRAIN_SHARE = 0.9  # of the bar; calibration fills the rest


def layer_planes(layer: Image) -> list[tuple[str, np.ndarray]]:
    """(name, plane) for every 2-D plane of ``layer`` (HxW, or HxWxC for RGB)."""
    lead_shape, _ = plane_layout(layer)
    return [(f"{layer.name}-{'-'.join(map(str, i))}" if i else layer.name,
             np.asarray(layer.data[i] if i else layer.data)) for i in np.ndindex(*lead_shape)]


class FinetuneWidget(_ModelChoice, _WorkerControls, QWidget):
    """Dock widget "Fine-tune on my images"."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._stop = threading.Event()
        self.layers = Select(label="image layers", choices=self._image_choices,
                             tooltip="Your pictures to train on (every plane of a stack; planes "
                                     f"of {2 * TILE} px or more are cut into {TILE}-px tiles). A "
                                     "share is held out to measure the gain. Leave empty to "
                                     "use a folder.")
        self.layers.native.setMaximumHeight(100)
        self.folder = FileEdit(label="or a folder", mode="d",
                               tooltip="A folder of your images (any format the plugin reads), "
                                       "used when no layer is chosen.")
        self._add_model_choice(
            False, "The model to start from: 'auto' takes the shipped model for gray or colour "
                   "images; a fine-tuned model can be tuned further.",
            "A weights file (.pt) to start from.")
        self.minutes = FloatSpinBox(label="minutes", min=0.01, max=24 * 60, step=5, value=20,
                                    tooltip="Training time; calibration adds about a minute. "
                                            "Cancel stops earlier and keeps the best weights.")
        self.name = LineEdit(label="new model name", value="my-images",
                             tooltip="The name it is registered under (letters, digits, . _ -): "
                                     "choose it in 'Restore JPEG artifacts', or `jpeg-restore "
                                     "restore --model NAME`.")
        self.recolour = CheckBox(text="keep other colours working", value=True,
                                 tooltip="Colour images: train on crops with randomly turned hues, "
                                         "so that the model does not learn your pictures' colours "
                                         "and still restores pictures of other colours. Untick "
                                         "to let it learn them too (it then suits only pictures "
                                         "like yours).")
        self.replace_existing = CheckBox(text="replace a model of that name", value=False,
                                         tooltip="Overwrite your earlier model of the same name.")
        self.run_button = PushButton(text="Fine-tune")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, label="progress")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self._lay_out([self.layers, self.folder, self.model, self.weights, self.minutes, self.name,
                       self.recolour, self.replace_existing])
        self.destroyed.connect(self._stop.set)  # a closed window ends its training too

    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def reset_choices(self, *_args) -> None:
        self.form.reset_choices()

    def options(self) -> FinetuneOptions:
        """The run's options from the controls (the images are filled in by ``run``)."""
        source = {AUTO: "auto", WEIGHTS_FILE: str(self.weights.value)}.get(self.model.value,
                                                                           self.model.value)
        folder = str(self.folder.value) if str(self.folder.value) not in ("", ".") else None
        return FinetuneOptions(images=(folder,) if folder else (), name=self.name.value.strip(),
                               source=source, minutes=float(self.minutes.value),
                               recolour=bool(self.recolour.value), replace=bool(self.replace_existing.value))

    def run(self, *_args):
        """Start fine-tuning in a worker; returns it, or None after a notification."""
        if self.worker is not None:
            show_warning("A fine-tune is already running; cancel it first.")
            return None
        options = self.options()
        layers = list(self.layers.value)
        if not layers and not options.images:
            show_warning("Choose image layers or a folder of your images to fine-tune on.")
            return None
        planes = self._prepare("fine-tune", lambda: [p for layer in layers for p in layer_planes(layer)])
        if planes is None:
            return None
        self._stop.clear()
        worker = thread_worker(finetune_layer_steps, start_thread=False,
                               connect={"errored": self._on_errored})(planes, options, self._stop)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        what = f"{len(layers)} layer(s)" if layers else options.images[0]
        return self._start(worker, f"Preparing {what} and checking the starting model…")

    def cancel(self, *_args) -> None:
        """End training after the current step; the best weights are still registered."""
        if self.worker is not None:
            self._stop.set()
            self.cancel_button.enabled = False
            self.status.value = "Stopping after this step; keeping the best weights…"

    def _on_progress(self, event: FinetuneProgress) -> None:
        self.progress.max = 1000
        share = event.done / max(1, event.total)
        if event.phase == "train":
            self.progress.value = int(1000 * TRAIN_SHARE * share)
            gains = (f"; held-out gain {gain_line(event.before)} at the start, now "
                     f"{gain_line(event.latest)}" if event.latest else "")
            if not self._stop.is_set():
                self.status.value = (f"Training: step {event.done} of about {event.total} "
                                     f"({event.seconds / 60:.1f} min){gains}")
        else:
            self.progress.value = int(1000 * (TRAIN_SHARE + (1 - TRAIN_SHARE) * share))
            self.status.value = f"Calibrating: {event.done}/{event.total} crops"

    def _on_returned(self, result: FinetuneResult) -> None:
        self.progress.value = 1000
        kept = "" if result.improved else " (no check beat the starting model: its weights are kept)"
        self.status.value = (f"Registered '{result.name}'{kept}. Held-out gain before: "
                             f"{gain_line(result.before)}; after: {gain_line(result.after)}. "
                             + ("It learned your kind of picture (on a photograph it gains "
                                f"{gain_line(result.photograph['model'])}): use it for those. "
                                if result.forgets else "")
                             + "Choose it in 'Restore JPEG artifacts'.")
        models_changed.emit()
        show_info(f"Fine-tuned model '{result.name}' registered")

    def _on_errored(self, err: Exception) -> None:
        self.status.value = f"Fine-tune failed: {err}"
        show_error(f"Cannot fine-tune: {err}")
