"""Correct & fine-tune's Accept and agreement rows: copy the prediction into the annotation,
and show, as the user paints, how the prediction agrees with the current slice.

The numpy side (the pixels an Accept writes, the scores, the marks) is :mod:`._agreement`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.layers import Labels, Layer
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QPushButton, QWidget

from napari_dlbio._widgets._agreement import (
    ACCEPTED,
    DISAGREEMENT,
    AcceptedPixels,
    accept_edit,
    accepted_layer,
    agreement,
    disagreement_layer,
)
from napari_dlbio._widgets._common import connect_while_alive, current_index, single_shot_timer
from napari_dlbio._widgets._result_layers import (
    keeping_active_layer,
    remove_layers_with_role,
    show_layers,
)
from napari_dlbio.core.errors import DlbioError, InputDataError

CURRENT_SLICE, WHOLE_STACK = "current slice", "whole stack"
AGREEMENT_DELAY_MS = 300


class AgreementControls:
    """The Accept button with its scope and overwrite fields, and the agreement of the
    current slice with its disagreement marks; :meth:`add_rows` puts them in a form.

    Parameters
    ----------
    viewer
        The napari viewer.
    parent
        The dock widget: the fields live as long as it does.
    chosen
        Gives the chosen annotation and prediction mask (``None`` when not chosen).
    status
        The widget's status line, which reports an Accept.
    """

    def __init__(
        self,
        viewer: Any,
        parent: QWidget,
        chosen: Callable[[], tuple[Labels | None, Labels | None]],
        status: QLabel,
    ) -> None:
        self.viewer = viewer
        self._chosen = chosen
        self._status = status
        self.accepted = AcceptedPixels()
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([CURRENT_SLICE, WHOLE_STACK])
        self.overwrite_check = QCheckBox("overwrite my annotations")
        self.accept_button = QPushButton("Accept prediction")
        self.agreement_label = QLabel()
        self.agreement_label.setWordWrap(True)
        self.disagreement_check = QCheckBox("show disagreement")
        self._timer = single_shot_timer(parent, AGREEMENT_DELAY_MS, self.refresh)
        self.accept_button.clicked.connect(self.accept)
        self.disagreement_check.toggled.connect(self._toggle_disagreement)
        connect_while_alive(viewer.dims.events.current_step, self.schedule, parent)

    def add_rows(self, form: QFormLayout) -> None:
        """Add the fields to ``form``, in the order the user reads them."""
        form.addRow("Accept on", self.scope_combo)
        form.addRow(self.overwrite_check)
        form.addRow(self.accept_button)
        form.addRow("Agreement", self.agreement_label)
        form.addRow(self.disagreement_check)

    def accept(self) -> int:
        """Copy the prediction into the annotation as one undoable edit; return its size.

        Unpainted pixels and those of an earlier Accept take the prediction; pixels the
        user painted are kept unless "overwrite my annotations" is on.
        """
        annotation, prediction = self._chosen()
        try:
            if annotation is None or prediction is None:
                raise InputDataError("choose the annotation and the prediction mask first.")
            whole = self.scope_combo.currentText() == WHOLE_STACK
            index = None if whole else current_index(self.viewer, annotation)
            overwrite = self.overwrite_check.isChecked()
            indices, values = accept_edit(annotation, prediction, index, overwrite, self.accepted)
        except DlbioError as error:
            show_error(f"Cannot accept the prediction: {error}")
            return 0
        self.accepted.record(annotation, indices, values)
        if values.size:
            annotation.data_setitem(indices, values)
        self._status.setText(f"Accepted {values.size} pixels (Ctrl+Z on the layer undoes).")
        return int(values.size)

    def refresh(self) -> None:
        """Show how the prediction agrees with the painted and the accepted pixels of the
        current slice, and outline the accepted ones."""
        self._timer.stop()  # a refresh scheduled before now has nothing left to show
        annotation, prediction = self._chosen()
        if annotation is None or prediction is None:
            self.agreement_label.setText("Choose an annotation and a prediction mask.")
            return
        stack = annotation.ndim == 3
        z = current_index(self.viewer, annotation) if stack else 0
        accepted = self.accepted.mask(annotation, z if stack else None)
        try:
            text, wrong = agreement(annotation, prediction, z, accepted)
        except DlbioError as error:
            self.agreement_label.setText(f"Not scored: {error}")
            return
        self.agreement_label.setText(text)
        if accepted.any():
            self._show([accepted_layer(accepted, annotation, z)])
        else:
            remove_layers_with_role(self.viewer, ACCEPTED)  # all undone or painted over
        if self.disagreement_check.isChecked():
            self._show([disagreement_layer(wrong, annotation, z)])

    def schedule(self, *_: Any) -> None:
        """Refresh a moment after the last change (painting sends many)."""
        self._timer.start()

    def _toggle_disagreement(self, shown: bool) -> None:
        if shown:
            self.schedule()
        else:
            remove_layers_with_role(self.viewer, DISAGREEMENT)

    def _show(self, layers: list[Any]) -> list[Layer]:
        """Add or update result layers without taking the brush away from the annotation."""
        with keeping_active_layer(self.viewer):
            return show_layers(self.viewer, layers)
