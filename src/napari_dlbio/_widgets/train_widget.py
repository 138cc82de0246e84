"""Train: a new U-Net / classifier or fine-tune a model, in the session's engine."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from napari_dlbio._layers import ANNOTATION
from napari_dlbio._widgets._base import JobWidget
from napari_dlbio._widgets._common import (
    annotation_class_names,
    connect_while_alive,
    default_class_names,
    task_of,
)
from napari_dlbio._widgets._config_form import (
    CLASSIFIER_SETTINGS,
    SEGMENTATION_SETTINGS,
    ClassTicks,
    ConfigForm,
)
from napari_dlbio._widgets._engine_form import EngineForm
from napari_dlbio._widgets._fields import LayerCombo, PathEdit, has_role
from napari_dlbio._widgets._model_choices import (
    CURRENT_MODEL,
    MODEL_FOLDER,
    NEW_NETWORK,
    builtin_choices,
    set_choices,
)
from napari_dlbio._widgets._model_picker import ModelPicker
from napari_dlbio._widgets._plot import LossPlot
from napari_dlbio._widgets._train_job import TrainOutcome, train_request
from napari_dlbio._widgets._worker import Job
from napari_dlbio.core.classifier_config import ClassifierConfig
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError
from napari_dlbio.core.events import EpochEnded, Event, RunState, TrainingStarted
from napari_dlbio.core.segmentation_config import SegmentationConfig
from napari_dlbio.engine.protocol import ModelHandle, Train, Trained

#: A first run that fits a laptop's lunch break; early stopping may end it sooner.
DEFAULT_TIME_BUDGET_S = 600.0


class TrainWidget(JobWidget):
    """Train or fine-tune from the layers directly, watching loss and score live."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.outcome: TrainOutcome | None = None
        self._saving = False
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.annotation_combo = LayerCombo(napari_viewer, Labels, prefer=has_role(ANNOTATION))
        self.task_label = QLabel()
        self.start_combo = QComboBox()
        self.start_folder = PathEdit(folder=True, save=False, package=True)
        self.model_picker = ModelPicker(self.session, Task.SEGMENTATION)
        budget = DEFAULT_TIME_BUDGET_S
        self.segmentation_form = ConfigForm(
            SegmentationConfig(time_budget_s=budget), SEGMENTATION_SETTINGS
        )
        self.classifier_form = ConfigForm(
            ClassifierConfig(time_budget_s=budget), CLASSIFIER_SETTINGS
        )
        self.boundary_classes = ClassTicks(
            "Boundary classes",
            "Tick the classes that outline objects (membranes: the objects are the cells they "
            "enclose); every other class is objects itself (mitochondria). Saved with the model.",
        )
        self._watched: weakref.WeakSet[Layer] = weakref.WeakSet()
        self.save_to = PathEdit(folder=True)
        self.save_to.edit.setPlaceholderText("optional: folder for the trained model")
        self.train_button = QPushButton("Train")
        self.stop_button = QPushButton("Stop")
        self.progress_bar = QProgressBar()
        self.device_label = QLabel("Device: (shown when training starts)")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        # How the run goes as planned (the data's split, the class weights): kept for the
        # whole run, where notifications would cover the canvas.
        self.notes_label = QLabel()
        self.notes_label.setWordWrap(True)
        self.plot = LossPlot()

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Annotation", self.annotation_combo)
        form.addRow(self.task_label)
        form.addRow("Start from", self.start_combo)
        self.start_folder_label = QLabel("Model folder or .zip")
        form.addRow(self.start_folder_label, self.start_folder)
        form.addRow("Current model", self.model_picker)
        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        self.engine_form = EngineForm(self.session.engine)
        layout = QVBoxLayout(self)
        layout.addWidget(self.engine_form.native)
        layout.addLayout(form)
        layout.addWidget(self.boundary_classes)
        layout.addWidget(self.segmentation_form)
        layout.addWidget(self.classifier_form)
        save = QFormLayout()
        save.addRow("Save model to", self.save_to)
        layout.addLayout(save)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.device_label)
        layout.addWidget(self.status_label)
        layout.addWidget(self.notes_label)
        layout.addWidget(self.plot)
        layout.addStretch()

        self.train_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.image_combo.currentIndexChanged.connect(self._update_form)
        self.start_combo.currentIndexChanged.connect(self._update_form)
        self.annotation_combo.currentIndexChanged.connect(self._update_classes)
        self._set_running(False)
        self._update_form()

    @property
    def task(self) -> Task:
        """Classification for a leaf stack with class metadata, segmentation otherwise."""
        return task_of(self.image_combo.layer())

    @property
    def form(self) -> ConfigForm:
        """The settings form of the current task."""
        if self.task is Task.CLASSIFICATION:
            return self.classifier_form
        return self.segmentation_form

    def start(self) -> Job | None:
        """Copy the data out of the layers, build the config and start training."""
        try:
            request = self._request()
        except DlbioError as error:
            show_error(f"Cannot train yet: {error}")
            return None
        self.outcome = None
        self._saving = bool(self.save_to.text())
        self.plot.clear("val accuracy" if request.task is Task.CLASSIFICATION else "val IoU")
        self.status_label.setText("Preparing data and the network...")
        self.notes_label.clear()
        self.job = Job(
            self.session.engine.job(request),
            description="Training",
            on_event=self._on_event,
            on_note=self._add_note,
            on_result=self._on_result,
            on_done=self._on_done,
            bar=self.progress_bar,
        )
        self._set_running(True)
        return self.job.start()

    def stop(self) -> None:
        """Stop after the current batch; the best weights so far are kept."""
        if self.job is not None and self.job.running:
            self.job.stop()
            self.stop_button.setEnabled(False)
            self.status_label.setText("Stopping after this batch; keeping the best weights...")

    def _request(self) -> Train:
        """The request for the chosen layers and the form (see :func:`train_request`)."""
        return train_request(
            self.image_combo.layer(),
            self.annotation_combo.layer(),
            self.form,
            self.session,
            boundary_classes=self.boundary_classes.ticked(),
            start=self.start_combo.currentText(),
            start_folder=self.start_folder.text(),
            save_to=self.save_to.text(),
        )

    def _on_event(self, event: Event) -> None:
        stopping = self.job is not None and self.job.state is RunState.STOPPING
        if isinstance(event, TrainingStarted):
            self.device_label.setText(f"Device: {event.device}")
            budget = event.time_budget_s
            limit = f" or {budget / 60:.0f} min" if budget else ""
            self.status_label.setText(f"Training up to {event.epochs} epochs{limit}...")
        elif isinstance(event, EpochEnded):
            self.plot.add_epoch(event.loss, event.metrics)
            if stopping:
                return  # "Stopping..." stays until the run has stopped
            figures = ", ".join(f"{k} {v:.3f}" for k, v in sorted(event.metrics.items()))
            self.status_label.setText(
                f"Epoch {event.epoch}/{event.epochs}: loss {event.loss:.3f}, {figures}"
            )

    def _add_note(self, text: str) -> None:
        notes = self.notes_label.text()
        self.notes_label.setText(f"{notes}\n{text}" if notes else text)

    def _on_result(self, fit: Trained) -> None:
        model = ModelHandle.of(fit.model, saved=self._saving)
        outcome = self.outcome = TrainOutcome(model, fit, model.path)
        previous = self.session.current(model.task)
        # A stopped run never silently displaces a model the user already has.
        self.session.add(model, outcome.how, make_current=not outcome.stopped or previous is None)
        text = outcome.summary()
        if self.session.current(model.task) is not model:
            text += (
                f" The current model is still {self.session.label(previous)}; choose the "
                "new one under Current model to use it."
            )
            show_info(text)
        self.status_label.setText(text)

    def _on_done(self, state: RunState) -> None:
        self._set_running(False)
        if state is RunState.FAILED:
            self.status_label.setText("Training failed; see the notification. Nothing changed.")
        elif state is RunState.CANCELLED and self.outcome is None:
            self.status_label.setText("Stopped. Ready to train again.")

    def _set_running(self, running: bool) -> None:
        self.train_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        for widget in (self.image_combo, self.annotation_combo, self.start_combo, self.form):
            widget.setEnabled(not running)
        self.boundary_classes.setEnabled(not running)

    def _update_form(self, *_: Any) -> None:
        classifier = self.task is Task.CLASSIFICATION
        self.task_label.setText(
            "Task: classify the leaf stack's images" if classifier else "Task: segmentation"
        )
        self.annotation_combo.setEnabled(not classifier)
        self.segmentation_form.setVisible(not classifier)
        self.boundary_classes.setVisible(not classifier)
        self.classifier_form.setVisible(classifier)
        set_choices(
            self.start_combo,
            [NEW_NETWORK, CURRENT_MODEL, MODEL_FOLDER, *builtin_choices(self.task)],
        )
        start = self.start_combo.currentText()
        self.start_folder.setVisible(start == MODEL_FOLDER)
        self.start_folder_label.setVisible(start == MODEL_FOLDER)
        self.form.set_architecture_enabled(start == NEW_NETWORK)
        self.model_picker.set_task(self.task)
        self._update_classes()

    def _update_classes(self, *_: Any) -> None:
        """List the annotation's structure classes; follow its class names as they change."""
        annotation = self.annotation_combo.layer()
        if annotation is not None and annotation not in self._watched:
            for emitter in (annotation.events.metadata, annotation.events.data):
                connect_while_alive(emitter, self._update_classes, self)
            self._watched.add(annotation)
        names = annotation_class_names(annotation)
        if not names and annotation is not None and isinstance(annotation.data, np.ndarray):
            names = default_class_names(annotation.data)
        self.boundary_classes.set_names(names[1:])
        if not names:
            hint = "Choose an annotation to list its classes."
        elif self.start_combo.currentText() == NEW_NETWORK:
            hint = "None ticked: every class is objects of its own."
        else:
            hint = "None ticked: the model keeps its own boundary classes."
        self.boundary_classes.hint.setText(hint)
