"""How long napari's Qt event loop is blocked while the widgets train and predict.

A Qt timer fires every 10 ms in the GUI thread and records the gap since its last tick; the
longest gap is the longest time the window could not react.  Training and prediction run
through the Train and Predict & inspect widgets exactly as a user starts them (button
clicks), on the ISBI 2012 training stack (30 x 512 x 512) from ``shared/data`` when present,
otherwise on the 5-slice sample, with the default network.  TensorFlow lives in the
engine process only (``tensorflow_in_napari_process`` says so at the end): the first half
second after opening a widget (built, laid out and painted in the GUI thread: Train and
Predict & inspect, later Correct & fine-tune) is reported as
``max_stall_ms_opening_widgets``, starting the engine as
``max_stall_ms_engine_warm_up``; the stall before the first batch (copying the data out,
building the network) is reported on its own as well as inside the training figure, and
``training_batches`` counts the batches trained in the time budget.  Two Correct &
fine-tune bursts on the current slice give ``max_stall_ms_fine_tuning`` (training and
re-predicting the slice in the engine); showing a burst's slice is reported apart: the
first burst adds a one-slice mask layer next to the whole-stack one
(``max_stall_ms_showing_first_burst``), the second updates it in place
(``max_stall_ms_showing_next_burst``).

Predicting a second time updates the result layers in place
(``max_stall_ms_repredicting``); ``napari_add_labels_layer_ms`` is how long napari itself
takes to add and first draw one Labels layer of the stack's shape, the floor of any stall
that adds a layer.

Run under a display (``xvfb-run -a``); the last output line is one JSON object.  Targets:
``max_stall_ms_training`` and ``max_stall_ms_fine_tuning`` under 50 ms,
``max_stall_ms_predicting`` at most 1.15 x ``napari_add_labels_layer_ms``.

    xvfb-run -a .venv/bin/python benchmarks/gui_responsiveness.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ISBI = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data")) / "isbi2012"
TICK_MS = 10


class StallMeter:
    """Records the longest gap between ticks of a 10 ms timer, per named phase."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.phase: str | None = None
        self.longest: dict[str, float] = {}
        self.gaps: dict[str, list[float]] = {}
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def enter(self, phase: str) -> None:
        """Attribute the following gaps to ``phase``."""
        self._tick()
        self.phase = phase

    def _tick(self) -> None:
        now = time.perf_counter()
        gap_ms = (now - self._last) * 1000.0
        self._last = now
        if self.phase is not None:
            self.longest[self.phase] = max(self.longest.get(self.phase, 0.0), gap_ms)
            self.gaps.setdefault(self.phase, []).append(gap_ms)

    def p99(self, phase: str) -> float:
        """The 99th percentile gap of ``phase`` in ms."""
        return float(np.percentile(self.gaps.get(phase, [0.0]), 99))


def wait_for(widget: Any, timeout_s: float) -> None:
    """Run the Qt event loop until the widget's job has finished."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while widget.job is None or widget.job.running:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{type(widget).__name__} did not finish in {timeout_s} s")
        QApplication.processEvents()
        time.sleep(0.001)


def run_events_for(seconds: float) -> None:
    """Run the Qt event loop for ``seconds`` (a new dock widget is laid out and painted)."""
    from qtpy.QtWidgets import QApplication

    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        QApplication.processEvents()
        time.sleep(0.001)


def napari_add_layer_ms(viewer: Any, shape: tuple[int, ...]) -> float:
    """How long napari itself blocks its window to add (and first draw) a Labels layer.

    The floor of any stall that adds a layer, whichever plugin adds it.
    """
    from qtpy.QtWidgets import QApplication

    data = np.zeros(shape, dtype=np.uint8)
    started = time.perf_counter()
    layer = viewer.add_labels(data, name="reference labels")
    QApplication.processEvents()
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    viewer.layers.remove(layer)
    return elapsed_ms


def load_stack(smoke: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """The EM stack and its annotation (1 = background, 2 = membrane), and where it came from."""
    import tifffile

    if not smoke and (ISBI / "train-volume.tif").is_file():
        image = tifffile.imread(ISBI / "train-volume.tif")
        labels = tifffile.imread(ISBI / "train-labels.tif")
        source = "shared/data/isbi2012 train-volume (30 slices)"
    else:
        from napari_dlbio._sample_data import make_isbi_sample

        (image, _, _), (annotation, _, _) = make_isbi_sample()
        return image, annotation, "ISBI sample (5 slices)"
    return image, np.where(labels == 0, 2, 1).astype(np.uint8), source


def main(argv: list[str] | None = None) -> int:
    """Train and predict through the widgets while measuring stalls; print JSON last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="5-slice sample, a few steps")
    parser.add_argument("--train-seconds", type=float, default=60.0, help="training budget")
    args = parser.parse_args(argv)

    import napari
    from napari.qt.threading import create_worker
    from qtpy.QtWidgets import QApplication

    from napari_dlbio._widgets.predict_widget import WHOLE_STACK, PredictWidget
    from napari_dlbio._widgets.refine_widget import RefineWidget
    from napari_dlbio._widgets.train_widget import TrainWidget
    from napari_dlbio.core.events import BatchEnded, TrainingStarted
    from napari_dlbio.engine.protocol import Ping

    image_data, annotation_data, source = load_stack(args.smoke)
    viewer = napari.Viewer()
    image = viewer.add_image(image_data, name="EM")
    annotation = viewer.add_labels(annotation_data, name="annotation")
    annotation.metadata["class_names"] = ["background", "membrane"]
    meter = StallMeter()
    # Opening the Train / Predict widgets builds, lays out and first paints them in the GUI
    # thread; the engine process starts with the first request (here a Ping, as a user
    # sets up the job meanwhile).
    meter.enter("opening widgets")
    started = time.perf_counter()
    train, predict = TrainWidget(viewer), PredictWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    viewer.window.add_dock_widget(predict, name="Predict & inspect")
    run_events_for(0.5)
    meter.enter("warming up")
    ping = create_worker(train.session.engine.call, Ping())
    answered: list[Any] = []
    ping.returned.connect(answered.append)
    ping.start()
    while not answered:
        QApplication.processEvents()
        time.sleep(0.001)
    warm_up_s = time.perf_counter() - started
    viewer.screenshot(canvas_only=True)
    meter.enter("idle")

    train.image_combo.select(image)
    train.annotation_combo.select(annotation)
    # The default network and patches, as a user who changes nothing trains.
    if args.smoke:
        settings = {"epochs": 1, "steps_per_epoch": 3, "patch_size": 64}
    else:
        settings = {"epochs": 1000, "steps_per_epoch": 20, "time_budget_s": args.train_seconds}
    for key, value in settings.items():
        train.segmentation_form.set_value(key, value)

    meter.enter("preparing")
    started = time.perf_counter()
    train.train_button.click()
    batches: list[BatchEnded] = []

    def follow_training(event: Any) -> None:
        if isinstance(event, TrainingStarted):
            meter.enter("training")
        elif isinstance(event, BatchEnded):
            batches.append(event)

    train.job.worker.yielded.connect(follow_training)
    wait_for(train, timeout_s=600)
    meter.enter("idle")
    training_s = time.perf_counter() - started
    if train.outcome is None:
        raise RuntimeError(f"training ended as {train.job.state.value}")

    predict.image_combo.select(image)
    predict.scope_combo.setCurrentText(WHOLE_STACK)
    predict.metrics.reference_combo.select(annotation)
    meter.enter("predicting")
    started = time.perf_counter()
    predict.predict_button.click()
    wait_for(predict, timeout_s=600)
    meter.enter("idle")
    predicting_s = time.perf_counter() - started
    if "EM mask" not in viewer.layers:
        raise RuntimeError(f"prediction ended as {predict.job.state.value} without a mask")

    # Predicting again updates the result layers in place instead of adding them.
    meter.enter("re-predicting")
    predict.predict_button.click()
    wait_for(predict, timeout_s=600)
    meter.enter("idle")

    # Two Correct & fine-tune bursts from the trained model, each re-predicting the
    # current slice; showing the slice's layers is measured apart from the burst.
    refine = RefineWidget(viewer)
    meter.enter("opening widgets")
    viewer.window.add_dock_widget(refine, name="Correct & fine-tune")
    run_events_for(0.5)
    meter.enter("idle")
    refine.image_combo.select(image)
    refine.annotation_combo.select(annotation)
    refine.burst.seconds_spin.setValue(2.0 if args.smoke else 10.0)
    show_burst = refine._show_burst
    for burst in ("first", "next"):

        def showing(layers: list[Any], burst: str = burst) -> Any:
            meter.enter(f"showing {burst} burst")
            return (yield from show_burst(layers))

        refine._show_burst = showing  # the job's on_result: its layers have arrived
        meter.enter("fine-tuning")
        refine.fine_tune_button.click()
        wait_for(refine, timeout_s=600)
        meter.enter("idle")
        if refine.job.state.value != "done":
            raise RuntimeError(f"fine-tuning ended as {refine.job.state.value}")
    add_labels_ms = napari_add_layer_ms(viewer, annotation_data.shape)

    preparing = meter.longest.get("preparing", 0.0)
    result = {
        "stack": source,
        "shape": list(image_data.shape),
        "device": train.device_label.text().removeprefix("Device: "),
        "training_s": round(training_s, 1),
        "training_batches": len(batches),
        "predicting_s": round(predicting_s, 1),
        "engine_warm_up_s": round(warm_up_s, 1),
        "max_stall_ms_opening_widgets": round(meter.longest.get("opening widgets", 0.0), 1),
        "max_stall_ms_engine_warm_up": round(meter.longest.get("warming up", 0.0), 1),
        "max_stall_ms_before_first_batch": round(preparing, 1),
        "max_stall_ms_training_batches": round(meter.longest.get("training", 0.0), 1),
        "max_stall_ms_training": round(max(preparing, meter.longest.get("training", 0.0)), 1),
        "p99_stall_ms_training": round(meter.p99("training"), 1),
        "max_stall_ms_predicting": round(meter.longest.get("predicting", 0.0), 1),
        "p99_stall_ms_predicting": round(meter.p99("predicting"), 1),
        "max_stall_ms_repredicting": round(meter.longest.get("re-predicting", 0.0), 1),
        "max_stall_ms_fine_tuning": round(meter.longest.get("fine-tuning", 0.0), 1),
        "max_stall_ms_showing_first_burst": round(meter.longest.get("showing first burst", 0.0), 1),
        "max_stall_ms_showing_next_burst": round(meter.longest.get("showing next burst", 0.0), 1),
        "napari_add_labels_layer_ms": round(add_labels_ms, 1),
        "tensorflow_in_napari_process": "tensorflow" in sys.modules,
        "target_ms": 50,
    }
    for key, value in result.items():
        print(f"{key:>32}: {value}")
    viewer.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
