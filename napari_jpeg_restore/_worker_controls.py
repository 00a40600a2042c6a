"""Run / Cancel buttons and a progress bar around one napari thread worker: what both dock
widgets do the same way when a worker starts, is cancelled and finishes."""
from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton, Widget
from qtpy.QtWidgets import QVBoxLayout


class _WorkerControls:
    """Mixin; the widget defines these controls and connects the buttons."""

    worker: Any
    run_button: PushButton
    cancel_button: PushButton
    progress: ProgressBar
    status: Label

    def _lay_out(self, controls: list[Widget]) -> None:
        """The dock's form: ``controls``, then Run / Cancel, the bar and the status line; the
        buttons connected, and the choices following the viewer's layers."""
        self.form = Container(widgets=[
            *controls,
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
            self.progress, self.status])
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addStretch(1)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.reset_choices)

    def _start(self, worker: Any, status: str) -> Any:
        """Hook ``worker`` to ``cancel``/``_on_finished``, start it, return it. The bar is busy
        (indeterminate) until the first ``_on_progress`` (the model is loading)."""
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.progress.max = 0
        self.status.value = status
        worker.start()
        return worker

    def cancel(self, *_args) -> None:
        if self.worker is not None:
            self.status.value = "Cancelling…"
            self.cancel_button.enabled = False  # once is enough
            self.worker.quit()

    def _on_finished(self) -> None:
        self.progress.max = 1000
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
