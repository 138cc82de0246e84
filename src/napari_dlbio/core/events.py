"""Typed events yielded by long computations, the run state and the cancel token.

Every long job (training, prediction, export) is a generator of these small frozen
dataclasses that returns its result last.  :func:`run_to_end` drives one for the CLI and
tests; the GUI wraps the same generator in napari's ``thread_worker``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

import numpy as np

R = TypeVar("R")


class RunState(Enum):
    """Life cycle of a background job, as shown to the user."""

    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


class StopReason(Enum):
    """Why a training run ended, in the words the user reads."""

    EPOCHS = "all epochs done"
    TIME_BUDGET = "time budget reached"
    EARLY_STOPPING = "stopped early: validation stopped improving"
    CANCELLED = "stopped by the user"


class CancelToken:
    """Thread-safe flag a user sets (Stop button, Ctrl+C) and a job polls.

    ``flag`` is the event behind it: a fresh ``threading.Event`` by default, or a
    ``multiprocessing`` event shared with another process.
    """

    def __init__(self, flag: Any = None) -> None:
        self._event = threading.Event() if flag is None else flag

    def cancel(self) -> None:
        """Ask the job to stop at its next check (within one batch or tile)."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` has been called."""
        return self._event.is_set()


@dataclass(frozen=True)
class Event:
    """Base class of everything a long job yields."""


@dataclass(frozen=True)
class TrainingStarted(Event):
    """Training is about to run its first batch."""

    epochs: int
    steps_per_epoch: int
    device: str
    time_budget_s: float | None = None


@dataclass(frozen=True)
class BatchEnded(Event):
    """One optimisation step finished (``step`` counts from 1 within ``epoch``)."""

    epoch: int
    step: int
    steps: int
    loss: float


@dataclass(frozen=True)
class EpochEnded(Event):
    """One epoch finished; ``metrics`` holds e.g. ``val_loss``, ``val_iou``, ``val_accuracy``."""

    epoch: int
    epochs: int
    loss: float
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TileDone(Event):
    """Prediction finished tile ``index`` of ``total`` (counting from 1)."""

    index: int
    total: int


@dataclass(frozen=True, eq=False)
class SlicePredicted(Event):
    """Slice ``index`` (counting from 0) of ``total`` is predicted: ``probabilities`` is its
    (Y, X, classes) float32 array."""

    index: int
    total: int
    probabilities: np.ndarray


@dataclass(frozen=True)
class Notice(Event):
    """Something the user should read, e.g. skipped files or a smaller batch after OOM.

    A ``routine`` notice describes a step of the run going as planned (how the data were
    split, the class weights); a widget may show it beside its progress instead of in a
    notification, which is kept for what needs the user's attention.
    """

    text: str
    routine: bool = False


@dataclass(frozen=True)
class Finished(Event):
    """The job ended in ``state``; its result is the generator's return value."""

    state: RunState


def run_to_end(job: Generator[Event, None, R], on_event: Callable[[Event], Any] | None = None) -> R:
    """Drive a job generator to its end and return its result.

    Parameters
    ----------
    job
        A generator of :class:`Event` that returns its result.
    on_event
        Called with every event (e.g. to print progress); ``None`` ignores them.
    """
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
