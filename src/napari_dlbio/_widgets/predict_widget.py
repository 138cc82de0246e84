"""Predict & inspect: masks, probabilities, uncertainty, objects, scores, classes, Grad-CAM."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from napari.layers import Image
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from napari_dlbio._layers import accuracy_text
from napari_dlbio._widgets._base import JobWidget
from napari_dlbio._widgets._classes_panel import ClassesPanel
from napari_dlbio._widgets._common import (
    class_stack_metadata,
    current_index,
    image_data,
    placement_of,
    task_of,
)
from napari_dlbio._widgets._fields import LayerCombo, PathEdit
from napari_dlbio._widgets._jobs import (
    ClassificationOutcome,
    SegmentationOutcome,
    explain,
    predict_classes,
    predict_segmentation,
)
from napari_dlbio._widgets._metrics_panel import MetricsPanel
from napari_dlbio._widgets._model_choices import (
    CURRENT_MODEL,
    MODEL_FOLDER,
    builtin_choices,
    model_source,
    set_choices,
)
from napari_dlbio._widgets._model_picker import ModelPicker
from napari_dlbio._widgets._objects_panel import ObjectsPanel, unit_of
from napari_dlbio._widgets._result_layers import show_layers, show_layers_in_turns
from napari_dlbio._widgets._volume_jobs import VOLUME_NOTE, VolumeOutcome, predict_volume
from napari_dlbio._widgets._volume_output import Scope, ScopeForm
from napari_dlbio._widgets._worker import Job, JobFunction
from napari_dlbio.core.builtin_models import builtin_name
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError
from napari_dlbio.core.events import RunState
from napari_dlbio.engine.protocol import ModelHandle

CURRENT_SLICE, SLICE_RANGE, WHOLE_STACK = (scope.value for scope in Scope)


class PredictWidget(JobWidget):
    """Predict on the current slice, a range of slices or the whole stack, then inspect."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.model_combo = QComboBox()
        self.model_folder = PathEdit(folder=True, save=False, package=True)
        self.model_picker = ModelPicker(self.session, Task.SEGMENTATION)
        self.scope_form = ScopeForm(napari_viewer, self.image_combo.layer)
        self.scope_combo = self.scope_form.scope.native
        self.predict_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.progress_bar = QProgressBar()
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.metrics = MetricsPanel(napari_viewer)
        self.objects = ObjectsPanel(
            napari_viewer,
            self.progress_bar,
            self._set_running,
            self._on_done,
            self.metrics.show_object_scores,
        )
        self.classes_box = ClassesPanel(napari_viewer, self.image_combo.layer)
        self.class_table = self.classes_box.table
        self.gradcam_button = self.classes_box.gradcam_button

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", self.model_combo)
        self.model_folder_label = QLabel("Model folder or .zip")
        form.addRow(self.model_folder_label, self.model_folder)
        form.addRow("Current model", self.model_picker)
        form.addRow(self.scope_form.native)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.objects)
        layout.addWidget(self.metrics)
        layout.addWidget(self.classes_box)
        layout.addStretch()

        self.predict_button.clicked.connect(self.predict)
        self.cancel_button.clicked.connect(self.cancel)
        self.gradcam_button.clicked.connect(self.grad_cam)
        self.image_combo.currentIndexChanged.connect(self._update_form)
        self.model_combo.currentIndexChanged.connect(self._update_form)
        self._set_running(False)
        self._update_form()

    def predict(self) -> Job | None:
        """Predict on the chosen image in a background job."""
        image = self.image_combo.layer()
        if image is None:
            show_error("Open an image first.")
            return None
        try:
            function, args, on_result = self._job_of(image, self._model_source())
        except DlbioError as error:
            show_error(f"Cannot predict yet: {error}")
            return None
        self.status_label.setText("Predicting...")
        self.job = Job(
            function,
            *args,
            description="Predicting",
            on_result=on_result,
            on_done=self._on_done,
            bar=self.progress_bar,
        )
        self._set_running(True)
        return self.job.start()

    def _job_of(self, image: Image, source: str) -> tuple[JobFunction, tuple, Any]:
        """The job predicting the chosen slices of ``image``, its arguments, its result's show."""
        data, chosen = self.scope_form.selection(image)
        engine = self.session.engine
        classes = class_stack_metadata(image)
        if classes is None and self.scope_form.writes_to_disk():
            output = self.scope_form.volume_output(image)
            args = (engine, source, data, output, placement_of(image), image.name)
            return predict_volume, args, self._show_volume
        first = None if chosen is None else chosen.start
        if classes is not None:
            args = (engine, source, data, first or 0, classes[1], dict(image.metadata))
            return predict_classes, args, self._show_classes
        reference, objects = self.metrics.reference(chosen), self.objects.requested()
        args = (engine, source, data, placement_of(image), image.name, first, reference, objects)
        return predict_segmentation, (*args, unit_of(image)), self._show_segmentation

    def grad_cam(self) -> Job | None:
        """Compute the Grad-CAM heatmap of the image the viewer shows, as an overlay layer."""
        image = self.image_combo.layer()
        if image is None or class_stack_metadata(image) is None:
            show_error("Grad-CAM explains a classifier: choose a leaf stack as Image.")
            return None
        try:
            source = self._model_source()
        except DlbioError as error:
            show_error(f"Cannot explain yet: {error}")
            return None
        index = current_index(self.viewer, image)
        picture = np.array(image_data(image)[index])
        self.job = Job(
            explain,
            self.session.engine,
            source,
            picture,
            placement_of(image),
            image.name,
            index,
            description="Grad-CAM",
            on_result=lambda layer: show_layers(self.viewer, [layer]),
            on_done=self._on_done,
            bar=self.progress_bar,
        )
        self._set_running(True)
        return self.job.start()

    def cancel(self) -> None:
        """Stop the prediction after the current tile; the layers stay as they were."""
        if self.job is not None and self.job.running:
            self.job.stop()
            self.cancel_button.setEnabled(False)
        self.objects.stop()

    def _model_source(self) -> str:
        """The chosen model as the engine loads it: a folder, package or built-in model."""
        choice, folder = self.model_combo.currentText(), self.model_folder.text()
        return model_source(choice, folder, self.session, task_of(self.image_combo.layer()))

    def _show_segmentation(self, outcome: SegmentationOutcome) -> Iterator[None]:
        """Show the result in stages (see :class:`Job`): one layer, then the metrics."""
        self._keep_model(outcome.model)
        mask, *_ = yield from show_layers_in_turns(self.viewer, outcome.layers)
        self.metrics.select_prediction(mask)
        self.objects.set_input(outcome.object_input, outcome.no_objects)
        if outcome.objects is not None:
            yield from self.objects.show_in_turns(outcome.objects)
        if outcome.evaluation is not None:
            yield from self.metrics.show_in_turns(outcome.evaluation, mask)
        found = "".join(f", {layer.name}" for layer in self.objects.layers() if outcome.objects)
        note = outcome.evaluation and outcome.evaluation.objects_note
        done = f"Done: {mask.name}, its probabilities{found} were added."
        self.status_label.setText(f"{done} {note}" if note else done)

    def _show_volume(self, outcome: VolumeOutcome) -> Iterator[None]:
        """Show a lazy volume's stores as layers, one per turn (no objects, no scores)."""
        self._keep_model(outcome.model)
        yield from show_layers_in_turns(self.viewer, outcome.layers)
        self.objects.set_input(None, VOLUME_NOTE)
        self.status_label.setText(outcome.summary())

    def _show_classes(self, outcome: ClassificationOutcome) -> Iterator[None]:
        """Show the result in stages (see :class:`Job`): the table, then the canvas text."""
        self._keep_model(outcome.model)
        image = self.image_combo.layer()
        if image is None:
            return
        self.status_label.setText(accuracy_text(self.classes_box.show_rows(image, outcome.rows)))
        yield
        self.classes_box.show_canvas_text()

    def _keep_model(self, model: ModelHandle) -> None:
        """A model loaded from a folder joins the session as the current one of its task.

        A built-in model is then used as the current model: the choice moves to it.
        """
        if any(kept.source == model.source for kept in self.session.models(model.task)):
            return
        builtin = builtin_name(model.path)
        if builtin is not None:
            self.session.add(model, f"built-in {builtin}")
            self.model_combo.setCurrentText(CURRENT_MODEL)
        else:
            self.session.add(model, f"loaded from {model.path.name if model.path else 'a folder'}")

    def _on_done(self, state: RunState) -> None:
        self._set_running(False)
        if state is RunState.CANCELLED:
            self.status_label.setText("Cancelled; no layer was changed.")
        elif state is RunState.FAILED:
            self.status_label.setText("Failed; see the notification. No layer was changed.")

    def _set_running(self, running: bool) -> None:
        self.predict_button.setEnabled(not running)
        self.gradcam_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.objects.set_running(running)

    def _update_form(self, *_: Any) -> None:
        task = task_of(self.image_combo.layer())
        # Until a model is trained or loaded, the task's built-in model is the one to use.
        builtins = builtin_choices(task)
        first = builtins[0] if builtins and self.session.current(task) is None else None
        set_choices(self.model_combo, [CURRENT_MODEL, MODEL_FOLDER, *builtins], first)
        from_folder = self.model_combo.currentText() == MODEL_FOLDER
        self.model_folder.setVisible(from_folder)
        self.model_folder_label.setVisible(from_folder)
        self.model_picker.set_task(task)
        self.scope_form.refresh()
        classifier = task is Task.CLASSIFICATION
        self.metrics.setVisible(not classifier)
        self.objects.setVisible(not classifier)
        self.classes_box.setVisible(classifier)
