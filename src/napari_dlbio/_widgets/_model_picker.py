"""A drop-down of the session's models: choosing one makes it the current model of its task."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QWidget

from napari_dlbio._widgets._common import connect_while_alive
from napari_dlbio._widgets._session import Session
from napari_dlbio.core.config import Task
from napari_dlbio.engine.protocol import ModelHandle

NO_MODEL = "none yet: train one, or load a model folder"


class ModelPicker(QComboBox):
    """Every model of the session for one task (newest first), the current one chosen.

    Parameters
    ----------
    session
        The viewer's session.
    task
        The task whose models are listed; ``None`` lists every model, and choosing one then
        changes no current model (the Export widget saves any of them).
    """

    def __init__(self, session: Session, task: Task | None, parent: QWidget | None = None):
        super().__init__(parent)
        self._session = session
        self._task = task
        self._models: list[ModelHandle] = []
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(20)
        self.activated.connect(self._chosen)
        connect_while_alive(session.models_changed, self.refresh, self)
        self.refresh()

    def set_task(self, task: Task | None) -> None:
        """List the models of ``task`` from now on."""
        if task is not self._task:
            self._task = task
            self.refresh()

    def model(self) -> ModelHandle | None:
        """The chosen model, or ``None`` when the session has none for the task."""
        index = self.currentIndex()
        return self._models[index] if 0 <= index < len(self._models) else None

    def refresh(self, *_: Any) -> None:
        """List the session's models again and choose the current one."""
        chosen = self.model()
        self._models = self._session.models(self._task)
        if self._task is not None:
            chosen = self._session.current(self._task)
        elif not any(model == chosen for model in self._models):
            chosen = self._models[0] if self._models else None
        self.blockSignals(True)
        self.clear()
        self.addItems([self._session.label(model) for model in self._models] or [NO_MODEL])
        for index, model in enumerate(self._models):
            self.setItemData(index, self._session.label(model), Qt.ItemDataRole.ToolTipRole)
            if model == chosen:
                self.setCurrentIndex(index)
        self.setEnabled(bool(self._models))
        self.setToolTip(self.currentText())
        self.blockSignals(False)

    def _chosen(self, *_: Any) -> None:
        model = self.model()
        if self._task is not None and model is not None:
            self._session.make_current(model)
        self.setToolTip(self.currentText())
