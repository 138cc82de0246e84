"""Correct & fine-tune: accept a prediction, paint corrections, fine-tune in short bursts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from napari_dlbio._layers import ANNOTATION, PREDICTION, ROLE_KEY
from napari_dlbio._widgets._agreement import (
    ACCEPTED,
    DISAGREEMENT,
    AcceptedPixels,
    accept_edit,
    accepted_layer,
    agreement,
    disagreement_layer,
)
from napari_dlbio._widgets._base import JobWidget
from napari_dlbio._widgets._burst_settings import BurstProgress, BurstSettings
from napari_dlbio._widgets._common import (
    LayerCombo,
    _disconnect,
    centre_view_on,
    connect_while_alive,
    current_index,
    has_role,
    single_shot_timer,
)
from napari_dlbio._widgets._model_choices import StartPicker
from napari_dlbio._widgets._refine_jobs import (
    BurstRequest,
    TunerSlot,
    fine_tune_burst,
    most_uncertain_point,
)
from napari_dlbio._widgets._result_layers import (
    keeping_active_layer,
    remove_layers_with_role,
    show_layers,
    show_layers_in_turns,
)
from napari_dlbio._widgets._worker import Job
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError, InputDataError
from napari_dlbio.core.events import Event, RunState
from napari_dlbio.core.segmentation_config import SegmentationConfig

CURRENT_SLICE, WHOLE_STACK = "current slice", "whole stack"
UNCERTAIN_WINDOW = 128
AGREEMENT_DELAY_MS, AUTO_DELAY_MS = 300, 1500
_RESULTS = (PREDICTION, DISAGREEMENT, ACCEPTED)


class RefineWidget(JobWidget):
    """Human in the loop: accept a prediction, correct it, fine-tune on the corrections."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.config: SegmentationConfig | None = None  # None: the model's or default settings
        self.slot = TunerSlot()  # the compiled network lives on between bursts
        self.accepted = AcceptedPixels()
        self._dirty = False
        self._watched: list[tuple[Any, Any]] = []
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.annotation_combo = LayerCombo(napari_viewer, Labels, prefer=has_role(ANNOTATION))
        self.prediction_combo = LayerCombo(napari_viewer, Labels)
        self.scope_combo = QComboBox()
        self.scope_combo.addItems([CURRENT_SLICE, WHOLE_STACK])
        self.start_combo = StartPicker(self.session, on_pick=self.slot.restart)
        self.overwrite_check = QCheckBox("overwrite my annotations")
        self.accept_button = QPushButton("Accept prediction")
        self.agreement_label = QLabel()
        self.agreement_label.setWordWrap(True)
        self.disagreement_check = QCheckBox("show disagreement")
        self.burst = BurstSettings()
        self.fine_tune_button = QPushButton("Fine-tune on corrections")
        self.stop_button = QPushButton("Stop")
        self.progress_bar = QProgressBar()
        self.uncertain_button = QPushButton("Go to the most uncertain region")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.progress = BurstProgress(self.progress_bar, self.status_label)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Annotation", self.annotation_combo)
        form.addRow("Prediction", self.prediction_combo)
        form.addRow("Accept on", self.scope_combo)
        form.addRow(self.overwrite_check)
        form.addRow(self.accept_button)
        form.addRow("Agreement", self.agreement_label)
        form.addRow(self.disagreement_check)
        form.addRow("Start from", self.start_combo)
        self.burst.add_rows(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.fine_tune_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.uncertain_button)
        layout.addWidget(self.status_label)
        layout.addStretch()

        self._agreement_timer = single_shot_timer(self, AGREEMENT_DELAY_MS, self.update_agreement)
        self._auto_timer = single_shot_timer(self, AUTO_DELAY_MS, self._auto_burst)
        self.accept_button.clicked.connect(self.accept_prediction)
        self.fine_tune_button.clicked.connect(self.fine_tune)
        self.stop_button.clicked.connect(self.stop)
        self.uncertain_button.clicked.connect(self.go_to_uncertain)
        self.disagreement_check.toggled.connect(self._toggle_disagreement)
        connect_while_alive(self.session.models_changed, self._show_specks_setting, self)
        self._show_specks_setting()
        for combo in (self.annotation_combo, self.prediction_combo):
            combo.currentIndexChanged.connect(self._watch)
        inserted = napari_viewer.layers.events.inserted
        connect_while_alive(inserted, lambda event: self._adopt(event.value), self)
        step = napari_viewer.dims.events.current_step
        connect_while_alive(step, self._schedule_agreement, self)
        for layer in napari_viewer.layers:
            self._adopt(layer)
        self._watch()
        self._set_running(False)

    def accept_prediction(self) -> int:
        """Copy the prediction into the annotation as one undoable edit; return its size.

        Unpainted pixels and those of an earlier Accept take the prediction; pixels the
        user painted are kept unless "overwrite my annotations" is on.
        """
        annotation, prediction = self.annotation_combo.layer(), self._prediction()
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
        self.status_label.setText(f"Accepted {values.size} pixels (Ctrl+Z on the layer undoes).")
        return int(values.size)

    def update_agreement(self) -> None:
        """Show how the prediction agrees with the painted and the accepted pixels of the
        current slice, and outline the accepted ones."""
        annotation, prediction = self.annotation_combo.layer(), self._prediction()
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
            self._show_results([accepted_layer(accepted, annotation, z)])
        else:
            remove_layers_with_role(self.viewer, ACCEPTED)  # all undone or painted over
        if self.disagreement_check.isChecked():
            self._show_results([disagreement_layer(wrong, annotation, z)])

    def fine_tune(self) -> Job | None:
        """Fine-tune in the background for one burst, then re-predict the current slice."""
        if self.running:
            return None
        try:
            request = self._request()
        except DlbioError as error:
            show_error(f"Cannot fine-tune yet: {error}")
            return None
        self._dirty = False
        self.progress.start(request.seconds)
        self.status_label.setText("Fine-tuning (the first burst also builds the network)...")
        self._set_running(True)  # first: creating the job's progress bar runs the event loop
        self.job = Job(
            fine_tune_burst,
            self.session.engine,
            request,
            self.slot,
            description="Fine-tuning",
            on_event=self._on_event,
            on_result=self._show_burst,
            on_done=lambda state: self._on_done(state, request.annotation),
            bar=self.progress_bar,
        )
        return self.job.start()

    def stop(self) -> None:
        """Stop the burst after the current step; annotations and layers stay as they are."""
        if self.running and self.job is not None:
            self.job.stop()
            self.stop_button.setEnabled(False)

    def go_to_uncertain(self) -> tuple[float, ...] | None:
        """Show the slice and centre on the square where the prediction is least sure."""
        prediction = self._prediction()
        source = prediction.metadata.get("source") if prediction is not None else None
        point = most_uncertain_point(self.viewer.layers, source, UNCERTAIN_WINDOW)
        if point is None:
            show_error("No uncertainty map yet: predict (Predict & inspect) or fine-tune first.")
            return None
        centre_view_on(self.viewer, point)
        self.status_label.setText("Centred on the most uncertain region: check it and correct.")
        return point

    @property
    def running(self) -> bool:
        """Whether a burst is under way."""
        return self.job is not None and self.job.running

    def _request(self) -> BurstRequest:
        image, annotation = self.image_combo.layer(), self.annotation_combo.layer()
        if image is None or annotation is None:
            raise InputDataError("choose the image and the annotation layer painted on it.")
        index = current_index(self.viewer, image) if annotation.ndim == 3 else None
        model, builtin = self.start_combo.start()
        seconds = self.burst.seconds_spin.value()
        prediction = self._prediction() if self.burst.trust_check.isChecked() else None
        config, specks = self.config, self.burst.specks_spin.value()
        return self.slot.request(
            image, annotation, model, config, seconds, index, prediction, builtin, specks
        )

    def _show_specks_setting(self, *_: Any) -> None:
        model = self.session.current(Task.SEGMENTATION)
        size = getattr(getattr(model, "config", None), "min_region_pixels", None)
        if size is not None and model != self.slot.tuned_from:  # a burst's: the user's value
            self.burst.specks_spin.setValue(size)

    def _on_event(self, event: Event) -> None:
        if self.running:
            # napari's progress bar runs the event loop while a job's event is handled, so
            # the job's end may already have been handled when its last step arrives here.
            self.progress.show(event)

    def _show_burst(self, layers: list[Layer]) -> Iterator[None]:
        """Show the re-prediction in stages (see :class:`Job`)."""
        if not layers:
            return
        mask, *_ = yield from show_layers_in_turns(self.viewer, layers)
        self.prediction_combo.select(mask)
        self.update_agreement()

    def _on_done(self, state: RunState, snapshot: np.ndarray) -> None:
        self._set_running(False)
        annotation = self.annotation_combo.layer()
        if state is RunState.DONE and annotation is not None:
            published = self.slot.published(annotation, snapshot)
            if published is not None:
                self.session.add(published.model, published.how, replacing=published.replacing)
            self.status_label.setText("Done: the mask of this slice is the new model's.")
            if self.burst.auto_check.isChecked() and self._dirty:
                self._auto_timer.start()
        elif state is RunState.CANCELLED:
            self._dirty = True
            self.status_label.setText("Stopped; annotations and layers are as they were.")
        elif state is RunState.FAILED:
            self.burst.auto_check.setChecked(False)
            self.status_label.setText("Failed; see the notification. Auto fine-tuning is off.")

    def _set_running(self, running: bool) -> None:
        self.fine_tune_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.image_combo.setEnabled(not running)
        self.annotation_combo.setEnabled(not running)
        self.start_combo.setEnabled(not running)

    def _auto_burst(self) -> None:
        if self.burst.auto_check.isChecked() and self._dirty and not self.running:
            self.fine_tune()

    def _on_painted(self, *_: Any) -> None:
        self._dirty = True
        self._agreement_timer.start()
        if self.burst.auto_check.isChecked():
            self._auto_timer.start()

    def _watch(self, *_: Any) -> None:
        """Follow the edits of the chosen annotation and prediction layers."""
        for emitter, callback in self._watched:
            _disconnect(emitter, callback)
        annotation, prediction = self.annotation_combo.layer(), self._prediction()
        self._watched = []
        if annotation is not None:
            events = annotation.events
            self._watched += [(events.paint, self._on_painted), (events.data, self._on_painted)]
            # Undo and redo change the pixels without a paint event: only a redraw.
            self._watched.append((events.set_data, self._schedule_agreement))
        if prediction is not None:
            self._watched.append((prediction.events.data, self._schedule_agreement))
        for emitter, callback in self._watched:
            connect_while_alive(emitter, callback, self)
        self._agreement_timer.start()

    def _schedule_agreement(self, *_: Any) -> None:
        self._agreement_timer.start()

    def _toggle_disagreement(self, shown: bool) -> None:
        if shown:
            self._agreement_timer.start()
        else:
            remove_layers_with_role(self.viewer, DISAGREEMENT)

    def _adopt(self, layer: Layer, *_: Any) -> None:
        """Choose a new prediction mask, and a painted layer while none is chosen."""
        role, chosen = layer.metadata.get(ROLE_KEY), self.annotation_combo.layer()
        unchosen = chosen is None or chosen.metadata.get(ROLE_KEY) in _RESULTS
        if role == PREDICTION:
            self.prediction_combo.select(layer)
        elif isinstance(layer, Labels) and role not in _RESULTS and unchosen:
            self.annotation_combo.select(layer)

    def _prediction(self) -> Labels | None:
        layer = self.prediction_combo.layer()
        if layer is None or layer is self.annotation_combo.layer():
            return None
        return None if layer.metadata.get(ROLE_KEY) == DISAGREEMENT else layer

    def _show_results(self, layers: list[Any]) -> list[Layer]:
        """Add or update result layers without taking the brush away from the annotation."""
        with keeping_active_layer(self.viewer):
            return show_layers(self.viewer, layers)
