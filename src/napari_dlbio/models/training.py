"""Run Keras ``fit`` as a generator of typed events, cancellable within one batch.

``model.fit`` runs in a helper thread with Keras callbacks that forward progress into a
queue; the generator yields those events to its consumer (the CLI's progress bar, a napari
``thread_worker``, a test).  A :class:`~napari_dlbio.core.events.CancelToken` or the time
budget sets ``model.stop_training``, which Keras honours after the current batch; the best
weights seen on validation are restored at the end in every case.  One device and a worker
among several (multi-node training, see :mod:`~napari_dlbio.models.multi_worker`) train
batch by batch in the same loop instead of ``model.fit``.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.events import (
    BatchEnded,
    CancelToken,
    EpochEnded,
    Event,
    Finished,
    Notice,
    RunState,
    StopReason,
    TrainingStarted,
)
from napari_dlbio.models._tf import (
    device_description,
    load_keras,
    load_tensorflow,
    releasing_traced_gradients,
)
from napari_dlbio.models.multi_worker import WorkerSteps, spans_workers

tf = load_tensorflow()
keras = load_keras()

_DONE = object()

Clock = Callable[[], float]
"""Seconds from any fixed point, as :func:`time.perf_counter` gives them."""


@dataclass(frozen=True)
class FitResult:
    """What a training run produced: its history and how it ended."""

    state: RunState
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    seconds: float = 0.0
    stop_reason: StopReason = StopReason.EPOCHS


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def iter_fit(
    model: Any,
    train_data: Any,
    *,
    epochs: int,
    steps_per_epoch: int,
    validation_data: Any = None,
    validation_steps: int | None = None,
    cancel: CancelToken | None = None,
    time_budget_s: float | None = None,
    patience: int | None = None,
    checkpoint_dir: str | Path | None = None,
    extra_callbacks: Sequence[Any] = (),
    clock: Clock = time.perf_counter,
) -> Generator[Event, None, FitResult]:
    """Train a compiled Keras model, yielding events; return a :class:`FitResult`.

    Parameters
    ----------
    model
        A compiled Keras model.
    train_data
        Batches ``(x, y)`` or ``(x, y, sample_weight)``: any iterable (numpy arrays or a
        ``tf.data`` dataset) on one device, and this worker's own batches on a worker
        among several; a ``tf.data`` dataset of whole batches under a strategy with
        several replicas in this process.  Endless, or at least ``epochs *
        steps_per_epoch`` batches long.
    validation_data
        A finite iterable (or dataset) of validation batches, read once per epoch (the
        same on every worker).
    epochs, steps_per_epoch, validation_steps
        Length of training and of each validation pass.
    cancel
        Stops training after the current batch when cancelled.  On a worker among
        several, this and ``clock`` must be a
        :class:`~napari_dlbio.models.multi_worker.WorkerAgreement`'s, and the agreement
        one of ``extra_callbacks``, so that all workers stop at the same batch.
    time_budget_s
        Stop after this many seconds of training (after the current batch).
    patience
        Early stopping: stop after this many epochs without a better monitored loss.
    checkpoint_dir
        If given, ``best.weights.h5`` and ``last.weights.h5`` are written there every epoch.
    extra_callbacks
        More Keras callbacks (e.g. a learning-rate schedule).
    clock
        Seconds from any fixed point, read for the time budget and the result's
        ``seconds``; tests pass a clock that advances per batch.
    """
    cancel = cancel or CancelToken()
    events: queue.Queue[Any] = queue.Queue()
    monitor = "val_loss" if validation_data is not None else "loss"
    bridge = _EventBridge(events, cancel, epochs, steps_per_epoch, time_budget_s, clock)
    keeper = _BestWeights(monitor, patience)
    callbacks: list[Any] = [bridge, keeper, *extra_callbacks]
    if checkpoint_dir is not None:
        callbacks.extend(_checkpoints(Path(checkpoint_dir), monitor))
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            with releasing_traced_gradients():
                strategy = model.distribute_strategy
                if strategy.num_replicas_in_sync > 1 and not spans_workers(strategy):
                    history = model.fit(
                        train_data,
                        epochs=epochs,
                        steps_per_epoch=steps_per_epoch,
                        validation_data=validation_data,
                        validation_steps=validation_steps,
                        callbacks=callbacks,
                        shuffle=False,  # datasets arrive shuffled; Keras cannot shuffle them
                        verbose=0,
                    ).history
                else:
                    if spans_workers(strategy):
                        worker_steps = WorkerSteps(model)
                        train_step, evaluate = worker_steps.train, worker_steps.evaluate
                    else:
                        train_step = _ShrinkingStep(model, lambda text: events.put(Notice(text)))
                        evaluate = partial(_evaluate, model)
                    history = _fit_batch_by_batch(
                        model,
                        train_data,
                        epochs=epochs,
                        steps_per_epoch=steps_per_epoch,
                        validation_data=validation_data,
                        validation_steps=validation_steps,
                        callbacks=callbacks,
                        train_step=train_step,
                        evaluate=evaluate,
                    )
                outcome["history"] = {
                    key: [float(v) for v in values] for key, values in history.items()
                }
        except BaseException as error:  # noqa: BLE001  (re-raised in the consumer's thread)
            events.put(_Failure(error))
        finally:
            events.put(_DONE)

    build_optimizer(model)
    started = clock()
    worker = threading.Thread(target=fit, name="dlbio-fit", daemon=True)
    worker.start()
    finished_normally = False
    try:
        while (item := events.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item
        finished_normally = True
    finally:
        if not finished_normally:
            cancel.cancel()
        worker.join()
    state = RunState.CANCELLED if cancel.cancelled else RunState.DONE
    reason = StopReason.CANCELLED if cancel.cancelled else bridge.over_budget or keeper.stopped
    yield Finished(state)
    return FitResult(
        state=state,
        history=outcome.get("history", {}),
        best_epoch=keeper.best_epoch,
        seconds=clock() - started,
        stop_reason=reason or StopReason.EPOCHS,
    )


def build_optimizer(model: Any) -> None:
    """Create the compiled model's optimizer variables before its first training step.

    Without a distribution strategy, Keras creates them while tracing the first step,
    and TensorFlow then traces that step a second time.  Built first, the first step of
    the interactive U-Net took 3-5 s instead of 8-9 s on a 2-core CPU: more of a first
    10-second burst goes to learning.
    """
    if model.optimizer is not None and not model.optimizer.built:
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)


def _fit_batch_by_batch(
    model: Any,
    train_data: Any,
    *,
    epochs: int,
    steps_per_epoch: int,
    validation_data: Any,
    validation_steps: int | None,
    callbacks: list[Any],
    train_step: Callable[[tuple[Any, ...]], dict[str, Any]],
    evaluate: Callable[[Any, int | None], dict[str, Any]],
) -> dict[str, list[float]]:
    """``model.fit``'s loop over ``train_step`` (one batch each), validating with
    ``evaluate(validation_data, validation_steps)``; returns the history.

    On one device the step is a :class:`_ShrinkingStep` and validation ``model.evaluate``;
    a worker among several trains and validates with
    :mod:`~napari_dlbio.models.multi_worker`'s steps.

    Measured on a 2-core CPU with the default U-Net: ``model.fit`` took 0.51 s per step
    fed from memory and 0.7 to 1.0 s fed by a tf.data pipeline, this loop 0.3 to 0.4 s
    with the patches drawn in the same thread.  Several replicas in one process need
    ``model.fit``, which splits each batch between them.
    """
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, model=model, epochs=epochs, steps=steps_per_epoch, verbose=0
    )
    batches = iter(train_data)
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, Any] = {}
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        # Keras' train_on_batch reports (and resets its metrics for) one batch: the
        # epoch's figures are the means over its batches, as model.fit reports them.
        totals: dict[str, float] = {}
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            # (x, y) or (x, y, sample_weight)
            logs = train_step(next(batches))
            for key, value in logs.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = {key: total / (step + 1) for key, total in totals.items()}
        if validation_data is not None:
            validation = evaluate(validation_data, validation_steps)
            epoch_logs |= {f"val_{key}": value for key, value in validation.items()}
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return model.history.history


def _evaluate(model: Any, validation_data: Any, steps: int | None) -> dict[str, Any]:
    return model.evaluate(validation_data, steps=steps, verbose=0, return_dict=True)


class _ShrinkingStep:
    """``train_on_batch`` that splits every batch into more parts once memory runs out,
    and says so through ``notify``."""

    def __init__(self, model: Any, notify: Callable[[str], None]) -> None:
        self._model = model
        self._notify = notify
        self._parts = 1

    def __call__(self, batch: tuple[Any, ...]) -> dict[str, Any]:
        size = int(batch[0].shape[0])
        while True:
            try:
                logs: dict[str, Any] = {}
                bounds = np.linspace(0, size, min(self._parts, size) + 1).astype(int)
                for start, stop in itertools.pairwise(bounds):
                    part = tuple(array[start:stop] for array in batch)
                    logs = self._model.train_on_batch(*part, return_dict=True)
                return logs
            except tf.errors.ResourceExhaustedError:
                if self._parts >= size:
                    raise
                self._parts *= 2
                self._notify(
                    f"Out of memory while training; going on with about "
                    f"{math.ceil(size / self._parts)} patch(es) per step (slower).  A smaller "
                    "batch or patch size (Advanced) avoids this."
                )


class _EventBridge(keras.callbacks.Callback):
    """Forwards Keras progress into the event queue and stops on cancel or time budget."""

    def __init__(
        self,
        events: queue.Queue[Any],
        cancel: CancelToken,
        epochs: int,
        steps: int,
        time_budget_s: float | None,
        clock: Clock,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._events = events
        self._cancel = cancel
        self._epochs = epochs
        self._steps = steps
        self._budget = time_budget_s
        self._deadline = math.inf
        self._epoch = 0
        self.over_budget: StopReason | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._budget is not None:
            self._deadline = self._clock() + self._budget
        self._events.put(
            TrainingStarted(self._epochs, self._steps, device_description(), self._budget)
        )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        self._events.put(BatchEnded(self._epoch, batch + 1, self._steps, loss))
        if self._cancel.cancelled or self._spent():
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {key: float(value) for key, value in (logs or {}).items()}
        loss = logs.pop("loss", math.nan)
        self._events.put(EpochEnded(epoch + 1, self._epochs, loss, logs))
        if self._spent():
            self.model.stop_training = True

    def _spent(self) -> bool:
        if self._clock() < self._deadline:
            return False
        self.over_budget = StopReason.TIME_BUDGET
        return True


class _BestWeights(keras.callbacks.Callback):
    """Keeps the best weights in memory, stops early, and restores them when training ends."""

    def __init__(self, monitor: str, patience: int | None) -> None:
        super().__init__()
        self._monitor = monitor
        self._patience = patience
        self._best = math.inf
        self._weights: list[Any] | None = None
        self._waited = 0
        self.best_epoch: int | None = None
        self.stopped: StopReason | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = float((logs or {}).get(self._monitor, math.nan))
        if value < self._best:
            self._best = value
            self._weights = self.model.get_weights()
            self.best_epoch = epoch + 1
            self._waited = 0
            return
        self._waited += 1
        if self._patience is not None and self._waited >= self._patience:
            self.stopped = StopReason.EARLY_STOPPING
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._weights is not None:
            self.model.set_weights(self._weights)


class CosineDecay(keras.callbacks.Callback):
    """Cosine decay of the learning rate over the planned steps or the time budget,
    whichever ends first, after an optional linear warm-up.

    A budgeted run reaches its low rate just before it stops, which steadies the weights
    that are kept; the warm-up tames the large first gradients of a fresh batch-norm net.

    Parameters
    ----------
    learning_rate
        The rate after warm-up.
    total_steps
        Planned optimisation steps (epochs x steps per epoch).
    time_budget_s
        If given, decay also follows the share of this budget already spent.
    final_factor
        The rate ends at ``final_factor * learning_rate``.
    warmup_steps
        Steps over which the rate rises linearly from ``learning_rate / warmup_steps``.
    clock
        Seconds from any fixed point (the clock of the run's time budget).
    """

    def __init__(
        self,
        learning_rate: float,
        total_steps: int,
        time_budget_s: float | None = None,
        *,
        final_factor: float = 0.05,
        warmup_steps: int = 0,
        clock: Clock = time.perf_counter,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._start_rate = learning_rate
        self._steps = max(1, total_steps)
        self._budget = time_budget_s
        self._final = final_factor
        self._warmup = max(1, warmup_steps)
        self._step = 0
        self._started = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._started = self._clock()
        self._step = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        progress = self._step / self._steps
        if self._budget is not None:
            progress = max(progress, (self._clock() - self._started) / self._budget)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        factor = self._final + (1.0 - self._final) * cosine
        factor *= min(1.0, (self._step + 1) / self._warmup)
        self.model.optimizer.learning_rate.assign(self._start_rate * factor)
        self._step += 1


def _checkpoints(folder: Path, monitor: str) -> list[Any]:
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = keras.callbacks.ModelCheckpoint
    return [
        checkpoint(
            folder / "best.weights.h5", monitor=monitor, save_best_only=True, save_weights_only=True
        ),
        checkpoint(folder / "last.weights.h5", save_weights_only=True),
    ]
