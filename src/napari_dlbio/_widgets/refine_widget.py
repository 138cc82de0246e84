"""Correct & fine-tune: accept a prediction, paint corrections, fine-tune in short bursts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from napari_dlbio._layers import ANNOTATION, PREDICTION, ROLE_KEY
from napari_dlbio._widgets._agreement import ACCEPTED, DISAGREEMENT
from napari_dlbio._widgets._agreement_controls import AgreementControls
from napari_dlbio._widgets._base import JobWidget
from napari_dlbio._widgets._burst_settings import BurstProgress, BurstSettings
from napari_dlbio._widgets._common import (
    Connections,
    centre_view_on,
    connect_while_alive,
    current_index,
    single_shot_timer,
)
from napari_dlbio._widgets._fields import LayerCombo, has_role
from napari_dlbio._widgets._model_choices import StartPicker
from napari_dlbio._widgets._refine_jobs import (
    BurstRequest,
    TunerSlot,
    fine_tune_burst,
    most_uncertain_point,
)
from napari_dlbio._widgets._result_layers import show_layers_in_turns
from napari_dlbio._widgets._worker import Job
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError, InputDataError
from napari_dlbio.core.events import Event, RunState
from napari_dlbio.core.segmentation_config import SegmentationConfig

UNCERTAIN_WINDOW = 128
AUTO_DELAY_MS = 1500
_RESULTS = (PREDICTION, DISAGREEMENT, ACCEPTED)


class RefineWidget(JobWidget):
    """Human in the loop: accept a prediction, correct it, fine-tune on the corrections."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.config: SegmentationConfig | None = None  # None: the model's or default settings
        self.slot = TunerSlot()  # the compiled network lives on between bursts
        self._dirty = False
        self._watched = Connections(self)
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.annotation_combo = LayerCombo(napari_viewer, Labels, prefer=has_role(ANNOTATION))
        self.prediction_combo = LayerCombo(napari_viewer, Labels)
        self.start_combo = StartPicker(self.session, on_pick=self.slot.restart)
        self.burst = BurstSettings()
        self.fine_tune_button = QPushButton("Fine-tune on corrections")
        self.stop_button = QPushButton("Stop")
        self.progress_bar = QProgressBar()
        self.uncertain_button = QPushButton("Go to the most uncertain region")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.progress = BurstProgress(self.status_label)
        self.agreement = AgreementControls(napari_viewer, self, self._chosen, self.status_label)
        self.scope_combo = self.agreement.scope_combo
        self.overwrite_check = self.agreement.overwrite_check
        self.accept_button = self.agreement.accept_button
        self.agreement_label = self.agreement.agreement_label
        self.disagreement_check = self.agreement.disagreement_check

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Annotation", self.annotation_combo)
        form.addRow("Prediction", self.prediction_combo)
        self.agreement.add_rows(form)
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

        self._auto_timer = single_shot_timer(self, AUTO_DELAY_MS, self._auto_burst)
        self.fine_tune_button.clicked.connect(self.fine_tune)
        self.stop_button.clicked.connect(self.stop)
        self.uncertain_button.clicked.connect(self.go_to_uncertain)
        connect_while_alive(self.session.models_changed, self._show_specks_setting, self)
        self._show_specks_setting()
        for combo in (self.annotation_combo, self.prediction_combo):
            combo.currentIndexChanged.connect(self._watch)
        inserted = napari_viewer.layers.events.inserted
        connect_while_alive(inserted, lambda event: self._adopt(event.value), self)
        for layer in napari_viewer.layers:
            self._adopt(layer)
        self._watch()
        self._set_running(False)

    def accept_prediction(self) -> int:
        """Copy the prediction into the annotation (see :meth:`AgreementControls.accept`)."""
        return self.agreement.accept()

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
        self.status_label.setText("Fine-tuning (the first burst also builds the network)...")
        self._set_running(True)
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
        self.agreement.refresh()

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
        self.agreement.schedule()
        if self.burst.auto_check.isChecked():
            self._auto_timer.start()

    def _watch(self, *_: Any) -> None:
        """Follow the edits of the chosen annotation and prediction layers."""
        annotation, prediction = self._chosen()
        watched: list[tuple[Any, Callable[..., Any]]] = []
        if annotation is not None:
            events = annotation.events
            watched += [(events.paint, self._on_painted), (events.data, self._on_painted)]
            # Undo and redo change the pixels without a paint event: only a redraw.
            watched.append((events.set_data, self.agreement.schedule))
        if prediction is not None:
            watched.append((prediction.events.data, self.agreement.schedule))
        self._watched.replace(watched)
        self.agreement.schedule()

    def _adopt(self, layer: Layer, *_: Any) -> None:
        """Choose a new prediction mask, and a painted layer while none is chosen."""
        role, chosen = layer.metadata.get(ROLE_KEY), self.annotation_combo.layer()
        unchosen = chosen is None or chosen.metadata.get(ROLE_KEY) in _RESULTS
        if role == PREDICTION:
            self.prediction_combo.select(layer)
        elif isinstance(layer, Labels) and role not in _RESULTS and unchosen:
            self.annotation_combo.select(layer)

    def _chosen(self) -> tuple[Labels | None, Labels | None]:
        """The annotation and the prediction mask the user chose."""
        return self.annotation_combo.layer(), self._prediction()

    def _prediction(self) -> Labels | None:
        layer = self.prediction_combo.layer()
        if layer is None or layer is self.annotation_combo.layer():
            return None
        return None if layer.metadata.get(ROLE_KEY) == DISAGREEMENT else layer
