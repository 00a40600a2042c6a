"""The model choice the dock widgets share: a combo box and a weights-file field, whose list
follows the registry (a fine-tuned model appears in every open widget)."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from magicgui.widgets import ComboBox, FileEdit
from napari.utils.notifications import show_error, show_warning
from psygnal import Signal, SignalInstance

from ._layers import AUTO, WEIGHTS_FILE, UnsupportedLayerError, model_choices

T = TypeVar("T")


class _Registry:
    changed = Signal()  # a model was added to the user models folder


REGISTRY_EVENTS = _Registry()
models_changed: SignalInstance = REGISTRY_EVENTS.changed


class _ModelChoice:
    """The model combo ("auto", registry names, "weights file…") and its weights-file field."""

    model: ComboBox
    weights: FileEdit

    def _add_model_choice(self, quality: bool, tooltip: str, weights_tooltip: str) -> None:
        """Create the two controls (``quality``: models with a quality encoder, else restorers);
        the weights field shows only while "weights file…" is chosen."""
        self.model = ComboBox(label="model", choices=lambda _w: model_choices(quality), value=AUTO,
                              tooltip=tooltip)
        self.weights = FileEdit(label="weights file", mode="r", filter="*.pt", visible=False,
                                tooltip=weights_tooltip)
        self.model.changed.connect(self._on_model_changed)
        refresh = self.model.reset_choices
        models_changed.connect(refresh)
        self.model.native.destroyed.connect(lambda *_: models_changed.disconnect(refresh))

    def _on_model_changed(self, value: str) -> None:
        self.weights.visible = value == WEIGHTS_FILE

    def set_model(self, value: str | os.PathLike) -> None:
        """Choose "auto", a registry name, or a weights file path."""
        value = os.fspath(value)
        if value in self.model.choices:
            self.model.value = value
        else:
            self.weights.value = value
            self.model.value = WEIGHTS_FILE

    def _prepare(self, action: str, prepare: Callable[[], T]) -> T | None:
        """``prepare()`` (layer, model and device checks) or None after a notification: a
        warning for an unsupported layer, an error for a missing model or an unusable device."""
        from napari_jpeg_restore.core.registry import ModelNotAvailableError

        try:
            return prepare()
        except UnsupportedLayerError as err:
            show_warning(f"Cannot {action}: {err}")
        except (ModelNotAvailableError, RuntimeError) as err:
            show_error(f"Cannot {action}: {err}")
        return None
