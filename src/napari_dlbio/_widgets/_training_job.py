"""The Train widget's job: train or fine-tune a network in a child process.

Tracing a Keras training step ends in TensorFlow's graph-to-function conversion, which
holds the interpreter lock for 180-320 ms on a 2-core CPU, so napari froze that long at
the start of every training run (``benchmarks/gui_responsiveness.py``).  In a child
process that lock is the child's own.  The child also keeps a crash away from the user's
work: if the system kills it for lack of memory, napari, its layers and the annotation
live on and the user is told what happened.

The child is started with ``spawn`` (a fresh interpreter, nothing of napari's threads or
Qt copied into it) and imports only this module, which never imports napari or Qt.  It
sends its events through a queue, and the trained model as a model folder on disk, which
the parent loads back (Keras safe mode, like any model folder).
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import signal
import tempfile
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlbio.core.config import JsonConfig, Task
from napari_dlbio.core.errors import DlbioError, InputDataError
from napari_dlbio.core.events import CancelToken, Event, Notice, RunState, run_to_end
from napari_dlbio.core.io import refuse_occupied_folder

if TYPE_CHECKING:
    from napari_dlbio.models.store import ModelFolder
    from napari_dlbio.models.training import FitResult

Job = Generator[Event, None, Any]

# How often the parent looks at the queue, the Stop button and the child's health (s).
POLL_SECONDS = 0.1
# How long a child that was asked to stop may take to end before it is killed (s).
STOP_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class ModelSource:
    """Where a job gets its model: the one in memory, a folder or built-in model
    (``builtin:NAME``), or none (a new network)."""

    model: ModelFolder | None = None
    folder: Path | str | None = None

    def load(self, task: Task) -> Generator[Event, None, ModelFolder | None]:
        """The model (loading the folder in the calling thread), checked to fit ``task``."""
        if self.folder is not None:
            from napari_dlbio.models.store import load_model_folder

            model = load_model_folder(self.folder, task)
            yield Notice(f"Loaded the {task.value} model from {self.folder}.")
            return model
        if self.model is not None and self.model.task is not task:
            raise InputDataError(
                f"The current model is a {self.model.task.value} model; this needs a "
                f"{task.value} model. Train one or load a model folder."
            )
        return self.model


@dataclass(frozen=True)
class TrainRequest:
    """Everything a training job needs, copied out of the widgets.

    Attributes
    ----------
    task
        Segmentation (images + annotation) or classification (images + class indices).
    images
        (Z, Y, X[, C]) slices or (N, H, W, C) leaf photos.
    targets
        Annotation (Z, Y, X) or class indices (N,).
    config
        The form's settings for a new network.
    training
        The form's training settings alone, applied to a fine-tuned model's own config.
    start
        The model to fine-tune; empty for a new network.
    save_to
        The model folder to write at the end, or ``None`` to keep the model in memory only.
    image_metadata
        A leaf stack's layer metadata: it lists the photos the reader resized, which are
        read again from their files so that each is resized once, as ``dlbio train`` does.
    """

    task: Task
    images: Any
    targets: np.ndarray
    config: JsonConfig
    training: Mapping[str, Any] = field(default_factory=dict)
    start: ModelSource = field(default_factory=ModelSource)
    save_to: Path | None = None
    image_metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainOutcome:
    """What training gave: the model (best weights) and how the fit ended."""

    model: ModelFolder
    fit: FitResult
    saved: Path | None


def train(request: TrainRequest, *, cancel: CancelToken) -> Job:
    """Train or fine-tune in this process, then save the model folder if asked.

    Returns a :class:`TrainOutcome`, or ``None`` when stopped before any weights were kept.
    """
    if request.save_to is not None:  # found now, not after training
        refuse_occupied_folder(request.save_to, "the model's files")
    initial = yield from request.start.load(request.task)
    config = request.config
    if initial is not None:
        # Fine-tuning keeps the model's architecture; only training changes.  A classifier
        # keeps its classes too unless the images show others: it then gets a new top.
        config = apply_changes(initial.config, request.training)
        if request.task is Task.CLASSIFICATION:
            config = config.replace(class_names=request.config.class_names)
    images = np.asarray(request.images)
    if request.task is Task.SEGMENTATION:
        from napari_dlbio.models.segmentation import iter_train_segmentation

        result = yield from iter_train_segmentation(
            images, request.targets, config, cancel=cancel, initial=initial
        )
    else:
        from napari_dlbio.core.io import reread_resized_photos
        from napari_dlbio.models.classification import iter_train_classifier

        photos = reread_resized_photos(images, request.image_metadata)
        result = yield from iter_train_classifier(
            photos, request.targets, config, cancel=cancel, initial=initial
        )
    model, fit = result.model, result.fit
    if fit.state is RunState.CANCELLED and fit.best_epoch is None:
        yield Notice("Stopped before the first epoch ended: no model was kept.")
        return None
    saved = None
    if request.save_to is not None:
        saved = model.path = _save(model, fit, request.save_to)
        yield Notice(f"Model saved to {saved}.")
    return TrainOutcome(model=model, fit=fit, saved=saved)


def _save(model: ModelFolder, fit: FitResult, folder: Path) -> Path:
    """Write the trained model folder (with the fit's history) atomically; return its path."""
    from napari_dlbio.models.store import save_model_folder

    return save_model_folder(
        folder, model.model, model.task, model.config, fit.history, model.metrics
    )


def train_in_child_process(request: TrainRequest, *, cancel: CancelToken) -> Job:
    """:func:`train` in a child process; its events come through, its model is loaded here.

    Stop (``cancel``) reaches the child within one batch, as in :func:`train`.

    Raises
    ------
    MemoryError
        When the system killed the child (the usual reason is lack of memory).
    DlbioError
        When the child ended in another way without a result, or the error it raised
        could not be sent over (its type and message are kept).
    """
    from napari_dlbio.models.store import load_model_folder, save_model_folder

    with tempfile.TemporaryDirectory(prefix="dlbio-training-") as scratch:
        start = request.start
        if start.model is not None and start.folder is None:
            # A model in memory cannot be sent to another process: it goes through disk.
            model = start.model
            folder = save_model_folder(
                Path(scratch) / "start", model.model, model.task, model.config, model.history
            )
            start = ModelSource(folder=folder)
        portable = replace(request, images=np.asarray(request.images), start=start)
        context = multiprocessing.get_context("spawn")
        messages = context.Queue()
        stop = context.Event()
        child = context.Process(
            target=_run_child,
            args=(portable, Path(scratch) / "trained", messages, stop),
            name="dlbio-training",
            daemon=True,
        )
        child.start()
        try:
            trained = yield from _relay(child, messages, stop, cancel)
        finally:
            _end_child(child, stop)
        if trained is None:
            return None
        folder, fit, saved = trained
        model = load_model_folder(folder, request.task)
        model.path = saved
        return TrainOutcome(model=model, fit=fit, saved=saved)


def _relay(
    child: Any, messages: Any, stop: Any, cancel: CancelToken
) -> Generator[Event, None, tuple[Path, FitResult, Path | None] | None]:
    """Yield the child's events until its result; pass Stop on; notice a dead child."""
    while True:
        if cancel.cancelled:
            stop.set()
        try:
            kind, payload = messages.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if child.is_alive():
                continue
            try:  # the last message may still be on its way out of the pipe
                kind, payload = messages.get(timeout=1.0)
            except queue.Empty:
                raise _child_died(child.exitcode) from None
        if kind == "event":
            yield payload
        elif kind == "error":
            raise payload
        else:
            return payload


def _child_died(exit_code: int | None) -> BaseException:
    if exit_code is not None and exit_code == -signal.SIGKILL:
        return MemoryError(
            "the system stopped the training process (signal 9), most often for lack of memory"
        )
    return DlbioError(
        f"the training process ended unexpectedly (exit code {exit_code}). Your layers are "
        "unchanged; try again, and if it happens again lower the batch or patch size."
    )


def _end_child(child: Any, stop: Any) -> None:
    """Let the child finish (asking it to stop first if it is still training)."""
    if child.is_alive():
        stop.set()
        child.join(STOP_GRACE_SECONDS)
    if child.is_alive():
        child.kill()
        child.join()


def _run_child(request: TrainRequest, scratch: Path, messages: Any, stop: Any) -> None:
    """The child's whole life: train, save the model folder, send events and the result."""

    def send(event: Event) -> None:
        messages.put(("event", event))

    try:
        outcome = run_to_end(train(request, cancel=CancelToken(stop)), send)
        result = None
        if outcome is not None:
            folder = outcome.saved or _save(outcome.model, outcome.fit, scratch)
            result = (folder, outcome.fit, outcome.saved)
        messages.put(("result", result))
    except BaseException as error:  # noqa: BLE001  (re-raised in the parent)
        messages.put(("error", _sendable(error)))
    finally:
        messages.close()
        messages.join_thread()


def _sendable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling; else one that keeps its meaning and message."""
    if any(cls.__name__ == "ResourceExhaustedError" for cls in type(error).__mro__):
        return MemoryError(str(error))
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001  (many library errors cannot be rebuilt from a pickle)
        return DlbioError(f"{type(error).__name__}: {error}")


def apply_changes(config: JsonConfig, values: Mapping[str, Any]) -> JsonConfig:
    """``config`` with dotted-key ``values`` replaced, nested configs included (validated).

    ``{"epochs": 5, "network.depth": 2}`` changes ``config.epochs`` and
    ``config.network.depth``.
    """
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            top[key] = value
    for head, changes in nested.items():
        top[head] = apply_changes(getattr(config, head), changes)
    return config.replace(**top)
