"""Correct & fine-tune's burst settings (length, auto bursts, trust, speck size) and the
progress of a burst."""

from __future__ import annotations

import time

from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QSpinBox,
)

from napari_dlbio.core.events import BatchEnded, Event, TrainingStarted

BURST_SECONDS = 10.0  # models.interactive.DEFAULT_BURST_SECONDS, known without TensorFlow


class BurstSettings:
    """The fields that say how a burst trains; :meth:`add_rows` puts them in a form."""

    def __init__(self) -> None:
        self.seconds_spin = QDoubleSpinBox()
        self.seconds_spin.setRange(1.0, 600.0)
        self.seconds_spin.setSuffix(" s")
        self.seconds_spin.setValue(BURST_SECONDS)
        self.auto_check = QCheckBox("auto: fine-tune when I stop painting")
        self.trust_check = QCheckBox("what I leave unpainted on a corrected slice is right")
        self.trust_check.setChecked(True)
        self.trust_check.setToolTip(
            "On: the network also learns the prediction you saw on every slice you corrected "
            "(steadier, faster). Off: it learns from your strokes only."
        )
        self.specks_spin = QSpinBox()
        self.specks_spin.setRange(0, 1_000_000)
        self.specks_spin.setSuffix(" px")
        self.specks_spin.setToolTip("From the next burst on, smaller regions become background.")

    def add_rows(self, form: QFormLayout) -> None:
        """Add the fields to ``form``, in the order the user reads them."""
        form.addRow("Burst length", self.seconds_spin)
        form.addRow(self.auto_check)
        form.addRow(self.trust_check)
        form.addRow("Remove specks under", self.specks_spin)


class BurstProgress:
    """A burst's step, loss and seconds in the widget's status line (its bar is the job's)."""

    def __init__(self, status: QLabel) -> None:
        self.status = status
        self._started, self._seconds = 0.0, BURST_SECONDS

    def show(self, event: Event) -> None:
        """Show the device when training starts, then the step, loss and seconds."""
        if isinstance(event, TrainingStarted):
            self._started = time.perf_counter()
            self._seconds = event.time_budget_s or BURST_SECONDS
            self.status.setText(f"Fine-tuning on {event.device}...")
        elif isinstance(event, BatchEnded):
            elapsed = min(time.perf_counter() - self._started, self._seconds)
            self.status.setText(
                f"Fine-tuning: step {event.step}, loss {event.loss:.3f} "
                f"({elapsed:.0f} / {self._seconds:.0f} s)"
            )
