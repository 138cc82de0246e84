"""The worker glue: events drive the progress, failures become notifications, Stop works."""

from __future__ import annotations

import threading
import time

import pytest
from napari.utils import progress
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QProgressBar

from napari_dlbio._widgets._job_errors import error_message
from napari_dlbio._widgets._worker import Job
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import (
    BatchEnded,
    EpochEnded,
    Finished,
    Notice,
    RunState,
    TrainingStarted,
)

pytestmark = pytest.mark.gui


def _fake_training(steps: int, *, cancel):
    yield TrainingStarted(epochs=1, steps_per_epoch=steps, device="CPU (test)")
    for step in range(1, steps + 1):
        yield BatchEnded(1, step, steps, loss=1.0 / step)
        if cancel.cancelled:
            break
    yield EpochEnded(1, 1, loss=0.5, metrics={"val_loss": 0.6})
    state = RunState.CANCELLED if cancel.cancelled else RunState.DONE
    yield Finished(state)
    return f"model after {step} steps"


def _waiting_training(started: threading.Event, *, cancel):
    """Trains until stopped: only Stop can end it."""
    yield TrainingStarted(epochs=1, steps_per_epoch=1000, device="CPU (test)")
    started.set()
    step = 0
    while not cancel.cancelled:
        step += 1
        time.sleep(0.01)
        yield BatchEnded(1, step, 1000, loss=1.0)
    yield Finished(RunState.CANCELLED)
    return step


def _failing(error: Exception, *, cancel):
    yield TrainingStarted(epochs=1, steps_per_epoch=1, device="CPU (test)")
    raise error


def _run(wait_until, job: Job) -> Job:
    job.start()
    wait_until(lambda: not job.running)
    return job


def test_events_drive_progress_and_the_result_arrives(wait_until) -> None:
    bar = QProgressBar()
    seen, results, states = [], [], []
    job = Job(
        _fake_training,
        4,
        description="Training",
        on_event=seen.append,
        on_result=results.append,
        on_done=states.append,
        bar=bar,
    )
    _run(wait_until, job)
    assert results == ["model after 4 steps"]
    assert states == [RunState.DONE]
    assert (bar.maximum(), bar.value()) == (4, 4)
    assert [type(e).__name__ for e in seen][:2] == ["TrainingStarted", "BatchEnded"]
    assert not job.running


def test_a_bar_whose_total_is_not_known_yet_is_empty_not_busy() -> None:
    # Qt's busy indicator redraws the window continuously: on a software-GL machine that
    # takes most of a core from the engine while it loads data and builds the network.
    bar = QProgressBar()
    Job(_fake_training, 4, description="Training", bar=bar)
    assert (bar.minimum(), bar.maximum(), bar.value()) == (0, 1, 0)


def test_stop_ends_the_job_with_its_result_and_cancelled_state(wait_until) -> None:
    started = threading.Event()
    results, states = [], []
    job = Job(
        _waiting_training,
        started,
        description="Training",
        on_result=results.append,
        on_done=states.append,
    )
    job.start()
    wait_until(started.is_set)
    job.stop()
    wait_until(lambda: not job.running)
    assert states == [RunState.CANCELLED]
    assert len(results) == 1


@pytest.mark.parametrize("own_bar", [True, False])
def test_a_job_shows_its_progress_in_one_place(wait_until, own_bar) -> None:
    # napari's activity dock lists a job only when its widget has no bar of its own:
    # napari's indicator redraws the window 33 times a second while a progress is open.
    started = threading.Event()
    job = Job(
        _waiting_training,
        started,
        description="Training",
        bar=QProgressBar() if own_bar else None,
    )
    job.start()
    wait_until(started.is_set)
    listed = [p for p in progress._all_instances if p.desc.startswith("Training")]
    job.stop()
    wait_until(lambda: not job.running)
    assert len(listed) == (0 if own_bar else 1)
    assert not any(p.desc.startswith("Training") for p in progress._all_instances)


ROUTINE = "Training on 3 slices, validating on 1 slice."
ATTENTION = "No training pixel is annotated as membrane."


def _noting(*, cancel):
    yield Notice(ROUTINE, routine=True)
    yield Notice(ATTENTION)
    yield Finished(RunState.DONE)


@pytest.mark.parametrize("shows_notes", [True, False])
def test_routine_notices_go_to_the_widget_and_the_others_to_notifications(
    wait_until, shown_notifications, shows_notes
) -> None:
    # A notification slides in over the canvas; the widget's own line does not cover it.
    notes: list[str] = []
    on_note = notes.append if shows_notes else None
    _run(wait_until, Job(_noting, description="Training", on_note=on_note))
    assert notes == ([ROUTINE] if shows_notes else [])
    assert shown_notifications() == ([ATTENTION] if shows_notes else [ROUTINE, ATTENTION])


@pytest.mark.parametrize("error", [InputDataError("bad stack"), RuntimeError("boom")])
def test_a_failure_is_a_notification_and_the_job_still_finishes(
    wait_until, error, shown_errors
) -> None:
    states, results = [], []
    job = Job(
        _failing,
        error,
        description="Training",
        on_result=results.append,
        on_done=states.append,
    )
    _run(wait_until, job)
    assert states == [RunState.FAILED]
    assert results == []
    assert any(str(error) in text for text in shown_errors())


def test_a_result_shown_in_stages_lets_the_window_react_between_them(wait_until) -> None:
    # napari adds a layer in 150-250 ms on a software-GL machine: a result of several
    # layers is shown one per turn of the event loop, and the job runs until all are shown.
    ticks, log = [], []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(1)

    def show(result: str):
        for stage in range(3):
            log.append((stage, len(ticks), job.running))
            time.sleep(0.02)
            yield

    job = Job(_fake_training, 2, description="Predicting", on_result=show, on_done=log.append)
    job.start()
    wait_until(lambda: not job.running)
    timer.stop()
    stages, done = log[:3], log[3:]
    assert [stage for stage, _, _ in stages] == [0, 1, 2]
    assert all(running for _, _, running in stages)
    ticks_seen = [count for _, count, _ in stages]
    assert ticks_seen[0] < ticks_seen[1] < ticks_seen[2], "no timer fired between stages"
    assert done == [RunState.DONE]


def test_a_stage_that_fails_is_reported_and_the_job_still_ends(wait_until, shown_errors) -> None:
    def show(result: str):
        yield
        raise ValueError("layer shapes differ")

    states = []
    job = Job(_fake_training, 2, description="Predicting", on_result=show, on_done=states.append)
    job.start()
    wait_until(lambda: not job.running)
    assert states == [RunState.FAILED]
    assert any("layer shapes differ" in text for text in shown_errors())


def test_out_of_memory_says_what_to_do() -> None:
    class ResourceExhaustedError(Exception):
        pass

    text = error_message(ResourceExhaustedError("OOM when allocating"), "Training")
    assert "ran out of memory" in text
    assert "batch size" in text
    assert error_message(InputDataError("no slices"), "Predicting") == "Predicting: no slices"
