"""The model choice both dock widgets share: a combo box and a weights-file field."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from magicgui.widgets import ComboBox, FileEdit
from napari.utils.notifications import show_error, show_warning

from ._layers import WEIGHTS_FILE, UnsupportedLayerError

T = TypeVar("T")


class _ModelChoice:
    """The model combo ("auto", registry names, "weights file…") and its weights-file field."""

    model: ComboBox
    weights: FileEdit

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
