"""IoU and Dice of a predicted mask against an annotation or ground truth: table + canvas text.

Part of the Predict & inspect widget.  The figures are also stored in the mask layer: per
class in its ``features`` (one row per label), in full in ``metadata["metrics"]``.  Against
complete ground truth, the objects found for the mask are scored too (V_rand / V_info of
cells, F1 at IoU 0.5 of every kind), stored in ``metadata["object_metrics"]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
)

from napari_dlbio._layers import ANNOTATION, OBJECTS, PREDICTION, ROLE_KEY, slice_metrics_text
from napari_dlbio._object_layers import OBJECT_KIND_KEY, OBJECT_SCORE_COLUMNS, object_score_rows
from napari_dlbio._widgets._common import (
    annotation_class_names,
    connect_while_alive,
    fill_table,
    show_canvas_text,
    slice_at,
    text_overlay,
)
from napari_dlbio._widgets._fields import LayerCombo, has_role
from napari_dlbio._widgets._jobs import Evaluation, Reference, evaluate_job
from napari_dlbio._widgets._worker import Job

AS_ANNOTATION = "annotation: 0 = not annotated"
AS_MASK = "mask: 0 = background"
COLUMNS = ("scope", "slice", "class", "iou", "dice", "pixels")
OBJECT_METRICS_KEY = "object_metrics"


class MetricsPanel(QGroupBox):
    """Choose a prediction and reference labels, score them, and show the figures.

    Parameters
    ----------
    viewer
        The napari viewer.
    """

    def __init__(self, viewer: Any) -> None:
        super().__init__("IoU and Dice")
        self.viewer = viewer
        self.job: Job | None = None
        self.mask_layer: Labels | None = None
        self.prediction_combo = LayerCombo(viewer, Labels, prefer=has_role(PREDICTION))
        self.reference_combo = LayerCombo(viewer, Labels, prefer=has_role(ANNOTATION))
        self.read_as = QComboBox()
        self.read_as.addItems([AS_ANNOTATION, AS_MASK])
        self.evaluate_button = QPushButton("Evaluate")
        self.on_canvas = QCheckBox("show the current slice's figures on the canvas")
        self.on_canvas.setChecked(True)
        self.table = QTableWidget()
        self.table.setMinimumHeight(160)
        self.object_table = QTableWidget()
        self.object_table.setMaximumHeight(110)
        self.object_table.setToolTip(
            "Object scores: V_rand / V_info (ISBI 2012's foreground-restricted Rand and "
            "information scores) of cells, F1, precision and recall of objects matched at "
            "IoU > 0.5; true / found: objects in the reference / found."
        )
        self.object_note = QLabel()
        self.object_note.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Prediction", self.prediction_combo)
        form.addRow("Reference", self.reference_combo)
        form.addRow("Read as", self.read_as)
        form.addRow(self.evaluate_button)
        form.addRow(self.on_canvas)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addWidget(self.object_table)
        layout.addWidget(self.object_note)
        self.show_object_scores(None, None)
        self.evaluate_button.clicked.connect(self.evaluate)
        self.on_canvas.toggled.connect(self.update_overlay)
        self.reference_combo.currentIndexChanged.connect(self._guess_reading)
        connect_while_alive(viewer.dims.events.current_step, self.update_overlay, self)
        self._guess_reading()

    def reference(self, slices: slice | None) -> Reference | None:
        """A copy of the reference labels (the ``slices`` of a stack, or all), or None when
        none is chosen."""
        layer = self.reference_combo.layer()
        if layer is None:
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        if slices is not None and layer.ndim >= 3:
            data = data[slices]
        return Reference(np.array(data, copy=True), self.read_as.currentText() == AS_ANNOTATION)

    def evaluate(self) -> Job | None:
        """Score the chosen prediction against the reference in a background job."""
        mask = self.prediction_combo.layer()
        if mask is None or mask.metadata.get(ROLE_KEY) != PREDICTION:
            show_error("Choose a predicted mask (Predict first) as Prediction.")
            return None
        offset = mask.metadata.get("slice")
        depth = mask.data.shape[0] if mask.ndim >= 3 else 1
        reference = self.reference(None if offset is None else slice(offset, offset + depth))
        if reference is None or self.reference_combo.layer() is mask:
            show_error("Choose the annotation or ground-truth labels as Reference.")
            return None
        names = list(mask.metadata.get("class_names", ()))
        data = np.asarray(mask.data)
        if data.ndim == 2:
            data = data[np.newaxis]
        boundary = mask.metadata.get("boundary_classes")
        self.evaluate_button.setEnabled(False)
        self.job = Job(
            evaluate_job,
            data,
            reference,
            names,
            offset or 0,
            None if boundary is None else list(boundary),
            self._objects_of(mask),
            description="Evaluating",
            on_result=lambda evaluation: self.show_in_turns(evaluation, mask),
            on_done=lambda _: self.evaluate_button.setEnabled(True),
        )
        return self.job.start()

    def show_in_turns(self, evaluation: Evaluation, mask: Labels) -> Iterator[None]:
        """Fill the table, store the figures in the mask layer and draw the current slice's.

        A job's ``on_result`` in stages (see :class:`Job`): the table and the layer's
        figures in one turn of the event loop, the canvas text in the next.
        """
        fill_table(self.table, evaluation.rows, COLUMNS)
        mask.features = evaluation.features
        mask.metadata["metrics"] = evaluation.report
        mask.metadata["metrics_rows"] = evaluation.rows
        self.mask_layer = mask
        self.show_object_scores(evaluation.objects, evaluation.objects_note)
        yield
        self.update_overlay()

    def show_object_scores(self, scores: dict[str, Any] | None, note: str | None) -> None:
        """Show the object scores of the scored mask (or hide them), and why there are none."""
        self.object_table.setVisible(bool(scores))
        if scores:
            fill_table(self.object_table, object_score_rows(scores), OBJECT_SCORE_COLUMNS)
        self.object_note.setText(note or "")
        self.object_note.setVisible(bool(note))
        mask = self.mask_layer
        if mask is not None and mask in self.viewer.layers:
            if scores:
                mask.metadata[OBJECT_METRICS_KEY] = scores
            else:
                mask.metadata.pop(OBJECT_METRICS_KEY, None)

    def _objects_of(self, mask: Labels) -> dict[str, np.ndarray] | None:
        """The objects shown for ``mask`` (same image and slice), by kind; None if none."""
        shape = mask.data.shape
        found = {
            layer.metadata[OBJECT_KIND_KEY]: np.array(layer.data, copy=True)
            for layer in self.viewer.layers
            if layer.metadata.get(ROLE_KEY) == OBJECTS
            and layer.metadata.get("source") == mask.metadata.get("source")
            and layer.metadata.get("slice") == mask.metadata.get("slice")
            and layer.data.shape == shape
        }
        return found or None

    def select_prediction(self, mask: Labels) -> None:
        """Choose ``mask`` as the prediction to score."""
        self.prediction_combo.select(mask)

    def update_overlay(self, *_: Any) -> None:
        """Write the current slice's figures on the canvas (or hide them)."""
        text = self._overlay_text()
        if text is not None:
            show_canvas_text(self.viewer, text)
        elif not self.on_canvas.isChecked():
            text_overlay(self.viewer).visible = False

    def _overlay_text(self) -> str | None:
        """The figures of the slice the viewer shows; ``None`` when none are to be drawn."""
        mask = self.mask_layer
        if mask is None or mask not in self.viewer.layers or "metrics_rows" not in mask.metadata:
            return None
        if not self.on_canvas.isChecked() or self.isHidden():
            return None  # hidden: the image is a leaf stack, whose classes Predict shows
        z = slice_at(self.viewer, mask) + (mask.metadata.get("slice") or 0)
        return slice_metrics_text(mask.metadata["metrics_rows"], z)

    def _guess_reading(self, *_: Any) -> None:
        layer = self.reference_combo.layer()
        if layer is not None:
            is_annotation = bool(annotation_class_names(layer)) and (
                layer.metadata.get(ROLE_KEY) != PREDICTION
            )
            self.read_as.setCurrentText(AS_ANNOTATION if is_annotation else AS_MASK)
