"""Run a job generator in napari's thread worker and turn its events into UI.

A job is a generator function that takes a ``cancel`` keyword (a
:class:`~napari_dlbio.core.events.CancelToken`), yields typed events and returns its result.
:class:`Job` starts it in a background thread, drives one progress display (the widget's
own bar, or napari's activity dock for a widget without one), and reports failures as
napari notifications that say what to do.
Failures are caught inside the thread and travel as an event, so a job always ends with its
``finished`` signal and the widget always comes back.  The job itself runs in a thread
started by Python's ``threading`` (see :func:`_relayed`); napari's worker relays its events.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QProgressBar

from napari_dlbio._widgets._job_errors import error_message
from napari_dlbio.core.errors import DlbioError
from napari_dlbio.core.events import (
    BatchEnded,
    CancelToken,
    EpochEnded,
    Event,
    Finished,
    Notice,
    RunState,
    TileDone,
    TrainingStarted,
)

_log = logging.getLogger(__name__)

JobFunction = Callable[..., Generator[Event, None, Any]]

# A budgeted training run's progress is shown in thousandths of the run.
_PER_MILLE = 1000


@dataclass(frozen=True)
class JobFailed(Event):
    """The job raised ``error``; it is reported in the GUI thread."""

    error: BaseException


class Job:
    """One background job of a dock widget.

    Parameters
    ----------
    function
        Generator function called as ``function(*args, cancel=token)`` in the worker thread.
    args
        Its positional arguments: configs and numpy arrays, never layers or widgets.
    description
        What the job does, shown in napari's activity dock and in error messages.
    on_event
        Called in the GUI thread with every event except notices and failures.
    on_note
        Called in the GUI thread with the text of every routine notice (see
        :class:`~napari_dlbio.core.events.Notice`), which the widget shows beside its
        progress; without it, routine notices are notifications like the others.  On a
        software-GL machine a notification sliding in over the canvas redraws the canvas
        for every frame of its animation.
    on_result
        Called in the GUI thread with the job's return value when it ended normally.  A
        generator function shows the result in stages: the event loop gets a turn (the
        window redraws and reacts) at each ``yield``, and the job counts as running until
        the generator is exhausted.  napari adds one layer in 200-350 ms on a software-GL
        machine, so results of several layers add one per stage.
    on_done
        Called in the GUI thread last, with the final :class:`RunState`.
    bar
        The widget's progress bar.  A job with one is not also listed in napari's activity
        dock: while a napari ``progress`` is open, napari animates an indicator at 33
        frames a second, and on a software-GL machine redrawing the window for it took
        about one of two cores away from the engine for the whole job; napari's bar also
        redraws the window at once for every value it is given.
    """

    def __init__(
        self,
        function: JobFunction,
        *args: Any,
        description: str,
        on_event: Callable[[Event], None] | None = None,
        on_note: Callable[[str], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_done: Callable[[RunState], None] | None = None,
        bar: QProgressBar | None = None,
    ) -> None:
        self.cancel_token = CancelToken()
        self.state = RunState.RUNNING
        self._ended = False
        self._description = description
        self._on_event = on_event
        self._on_note = on_note
        self._on_result = on_result
        self._on_done = on_done
        self._bar = bar
        self._training: tuple[TrainingStarted, float] | None = None
        self._total = 0
        self._progress = progress(total=0, desc=description) if bar is None else None
        if bar is not None:
            show_on_bar(bar, 0, 0)
        self.worker: GeneratorWorker = create_worker(
            _relayed,
            function,
            args,
            self.cancel_token,
            _start_thread=False,
            _ignore_errors=True,
        )
        # Signals are handled strictly in order: updating napari's progress bar processes
        # Qt events, which could otherwise run a later signal (even ``finished``) inside
        # the handler of an earlier one.
        self._signals: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._draining = False
        # The stages of a result being shown; later signals wait until it is shown.
        self._showing: Iterator[Any] | None = None
        self.worker.yielded.connect(lambda event: self._in_order(self._handle, event))
        self.worker.returned.connect(lambda result: self._in_order(self._returned, result))
        self.worker.aborted.connect(self.cancel_token.cancel)
        self.worker.finished.connect(lambda: self._in_order(self._finished))

    def start(self) -> Job:
        """Start the background thread and return the job."""
        self.worker.start()
        return self

    def stop(self) -> None:
        """Ask the job to stop after the current batch or tile; it keeps what it has."""
        if self.running and self.state is RunState.RUNNING:
            self.state = RunState.STOPPING
            self._describe(f"{self._description} (stopping)")
        self.cancel_token.cancel()

    @property
    def running(self) -> bool:
        """Whether the job's thread has not finished yet (its results may still come)."""
        return not self._ended

    def _in_order(self, handler: Callable[..., None], *args: Any) -> None:
        self._signals.append((handler, args))
        self._drain()

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            while self._signals and self._showing is None:
                next_handler, next_args = self._signals.popleft()
                next_handler(*next_args)
        finally:
            self._draining = False

    def _handle(self, event: Event) -> None:
        if isinstance(event, JobFailed):
            self.state = RunState.FAILED
            if not isinstance(event.error, DlbioError):
                _log.error("%s failed", self._description, exc_info=event.error)
            show_error(error_message(event.error, self._description))
            return
        if isinstance(event, Notice):
            if event.routine and self._on_note is not None:
                self._on_note(event.text)
            else:
                show_info(event.text)
            return
        if isinstance(event, Finished):
            self.state = event.state
        self._advance(event)
        if self._on_event is not None:
            self._on_event(event)

    def _advance(self, event: Event) -> None:
        if isinstance(event, TrainingStarted):
            self._training = (event, time.monotonic())
            self._total = (
                _PER_MILLE if event.time_budget_s else event.epochs * event.steps_per_epoch
            )
            self._set_progress(0, self._total)
        elif isinstance(event, BatchEnded) and self._training is not None:
            started, since = self._training
            done = (event.epoch - 1) * event.steps + event.step
            if started.time_budget_s:
                # Whichever ends the run first: the planned steps (if any) or the budget.
                planned = started.epochs * started.steps_per_epoch
                share = max(
                    done / planned if planned else 0.0,
                    (time.monotonic() - since) / started.time_budget_s,
                )
                self._set_progress(round(_PER_MILLE * min(share, 1.0)), _PER_MILLE)
            else:
                self._set_progress(done, self._total)
        elif isinstance(event, EpochEnded):
            self._describe(f"{self._description}: epoch {event.epoch}/{event.epochs}")
        elif isinstance(event, TileDone):
            self._set_progress(event.index, event.total)

    def _set_progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            if self._progress.total != total:
                self._progress.total = total
            self._progress.update(done - self._progress.n)
        if self._bar is not None:
            show_on_bar(self._bar, min(done, total), total)

    def _describe(self, text: str) -> None:
        """Name the job's stage in napari's activity dock (a widget's bar has its own
        status line)."""
        if self._progress is not None:
            self._progress.set_description(text)

    def _returned(self, result: Any) -> None:
        if self.state is RunState.FAILED:
            return
        if self.state in (RunState.RUNNING, RunState.STOPPING):
            self.state = RunState.CANCELLED if self.cancel_token.cancelled else RunState.DONE
        if self._on_result is not None and result is not None:
            stages = self._on_result(result)
            if isinstance(stages, Iterator):
                self._showing = stages
                self._show_next_stage()

    def _show_next_stage(self) -> None:
        assert self._showing is not None
        try:
            next(self._showing)
        except StopIteration:
            self._showing = None
        except Exception as error:  # noqa: BLE001  (the job's other signals must still run)
            self._showing = None
            self.state = RunState.FAILED
            _log.error("%s: showing the result failed", self._description, exc_info=error)
            show_error(error_message(error, f"{self._description} (showing the result)"))
        else:
            # A 1 ms timer, not a 0 ms one: Qt runs 0 ms single shots as posted events,
            # which may come before the window repaints and its timers fire.
            QTimer.singleShot(1, self._show_next_stage)
            return
        self._drain()

    def _finished(self) -> None:
        self._ended = True
        if self.state in (RunState.RUNNING, RunState.STOPPING):
            # Aborted from napari's activity dock: the generator never returned.
            self.state = RunState.CANCELLED
        if self._progress is not None:
            self._progress.close()
        if self._bar is not None:
            maximum = max(self._bar.maximum(), 1)
            show_on_bar(
                self._bar, maximum if self.state is RunState.DONE else self._bar.value(), maximum
            )
        if self._on_done is not None:
            self._on_done(self.state)


def show_on_bar(bar: QProgressBar, value: int, maximum: int) -> None:
    """Show ``value`` of ``maximum`` on ``bar`` with the window's next redraw.

    ``QProgressBar.setValue`` redraws the bar at once whenever its text or length
    changes, and a window holding napari's OpenGL canvas is then composed again as a
    whole: on a software-GL machine 30-150 ms per progress event while the engine keeps
    the cores busy.  With updates paused while the value changes, the bar is drawn
    together with everything else that changed since the last redraw.  A total not known
    yet (0) shows an empty bar, not Qt's busy indicator: that one redraws the window
    continuously, which took two thirds of a core from the engine while it prepared.
    """
    maximum = max(maximum, 1)
    bar.setUpdatesEnabled(False)
    try:
        if (bar.minimum(), bar.maximum()) != (0, maximum):
            bar.setRange(0, maximum)
        bar.setValue(value)
    finally:
        bar.setUpdatesEnabled(True)  # schedules the redraw


@dataclass(frozen=True)
class _Returned:
    value: Any


def _relayed(
    function: JobFunction, args: tuple[Any, ...], cancel: CancelToken
) -> Generator[Event, None, Any]:
    """Run the job in a Python thread of its own and relay its events from the Qt pool thread.

    An abort from napari's activity dock ends the Qt worker at once, but superqt then
    leaves the generator it was iterating unclosed: here the job's own thread goes on to
    its end through the cancel token (an engine job sends the engine its Cancel), so no
    engine job outlives its widget's knowledge of it.  Exceptions become a
    :class:`JobFailed` event, so the worker always reaches ``finished`` (superqt skips
    ``finished`` for a RuntimeError).
    """
    events: queue.Queue[Event | _Returned] = queue.Queue()

    def run() -> None:
        try:
            job = function(*args, cancel=cancel)
            while True:
                try:
                    events.put(next(job))
                except StopIteration as stop:
                    events.put(_Returned(stop.value))
                    return
        except Exception as error:  # noqa: BLE001  (reported to the user in the GUI thread)
            events.put(JobFailed(error))
            events.put(_Returned(None))

    threading.Thread(target=run, name="dlbio-job", daemon=True).start()
    finished = False
    try:
        while not isinstance(item := events.get(), _Returned):
            yield item
        finished = True
        return item.value
    finally:
        if not finished:
            # The worker was aborted from napari's activity dock: stop the job too.
            cancel.cancel()
