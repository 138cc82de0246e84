"""What the engine and its clients say to each other: requests, results and envelopes.

A client sends :class:`Submit` (a job id and a request), may send :class:`Feed` (the slices
of an :class:`ArrayFeed`, after the request) and :class:`Cancel`; the engine answers every
job with :class:`EventMessage` (the core's events, as the job generator yields them), then
exactly one :class:`Result` or :class:`Failure`.  A new kind of request is one frozen
dataclass here and one handler in :mod:`napari_dlbio.engine.handlers`.

Everything here is a frozen dataclass of plain values and numpy arrays, so that the
restricted decoder of :mod:`napari_dlbio.engine.codec` can rebuild it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.classifier_config import ClassifierConfig
from napari_dlbio.core.config import JsonConfig, Task
from napari_dlbio.core.errors import ConfigError, DlbioError, InputDataError, ModelFolderError
from napari_dlbio.core.events import Event, RunState, StopReason
from napari_dlbio.core.segmentation_config import SegmentationConfig


class EngineError(DlbioError, RuntimeError):
    """The engine could not be reached, broke the protocol, or failed unexpectedly."""


class EngineDied(EngineError):
    """The engine process stopped (or the connection to it broke) while a job was running."""


class ProtocolError(EngineError):
    """A message that breaks the protocol: too large, malformed, or naming forbidden code."""


# Requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """Base class of everything a client asks the engine to do."""


@dataclass(frozen=True)
class Ping(Request):
    """Ask the engine who it is; the result is a :class:`Pong`."""


@dataclass(frozen=True)
class LoadModel(Request):
    """Load a model once and keep it: ``source`` is a model folder (a path on the engine's
    machine), ``builtin:NAME`` or a bioimage.io package; the result is a :class:`ModelInfo`.

    Loading the same source again returns the loaded model, unless its files changed.
    """

    source: str


@dataclass(frozen=True)
class UnloadModel(Request):
    """Forget a loaded model (by id or source) and free its memory; the result is None."""

    model: str


@dataclass(frozen=True)
class ArrayFeed:
    """Stands for a (Z, Y, X, C) stack that follows its request slice by slice.

    The client sends each slice ``z`` as ``Feed(job_id, z, slice)`` after the request, so
    a volume larger than memory, or than one message, can be predicted in one job.
    """

    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if len(self.shape) != 4 or any(n < 0 for n in self.shape):
            raise ValueError(f"an ArrayFeed is a (Z, Y, X, C) stack, not shape {self.shape}")
        np.dtype(self.dtype)


@dataclass(frozen=True)
class PredictSlices(Request):
    """Predict a segmentation slice after slice, as
    :func:`~napari_dlbio.models.segmentation.iter_predict_slices` does: the job yields its
    ``TileDone``, ``SlicePredicted`` (with the probabilities) and ``Finished`` events, and
    its result is None.

    ``model`` is a loaded model's id or a source (loaded on first use); ``images`` are
    (Y, X), (Y, X, C), (Z, Y, X) or (Z, Y, X, C), or an :class:`ArrayFeed`.
    """

    model: str
    images: np.ndarray | ArrayFeed = field(repr=False)


@dataclass(frozen=True)
class PredictSegmentation(Request):
    """Predict a segmentation of (Z, Y, X[, C]) ``images`` in one piece; the result is a
    :class:`Segmented`, or None when cancelled.  ``model`` is an id or a source."""

    model: str
    images: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class PredictClasses(Request):
    """Classify (N, H, W, C) ``images`` (or a list of photos of their own sizes); the
    result is a :class:`Classified`, or None when cancelled."""

    model: str
    images: np.ndarray | list[np.ndarray] = field(repr=False)


@dataclass(frozen=True)
class ExplainClass(Request):
    """Grad-CAM of one (H, W, C) image for its predicted class: the result is the
    (H, W) heatmap in [0, 1]."""

    model: str
    image: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Train(Request):
    """Train a new network (``start`` None) or fine-tune the model ``start`` (an id or a
    source) and write it to ``save_to``; the result is a :class:`Trained`, or None when
    stopped before an epoch ended.

    ``config`` is a new network's; a fine-tuned model keeps its own, changed by the
    dotted-key ``training`` settings (see :func:`~napari_dlbio.core.config.apply_changes`),
    and a fine-tuned classifier takes ``config``'s class names.  ``targets`` are an
    annotation (Z, Y, X) or class indices (N,).
    """

    task: Task
    images: np.ndarray | list[np.ndarray] = field(repr=False)
    targets: np.ndarray = field(repr=False)
    config: JsonConfig
    save_to: str
    training: Mapping[str, Any] = field(default_factory=dict)
    start: str | None = None


@dataclass(frozen=True)
class Burst(Request):
    """Fine-tune for ``seconds`` on the corrections, then predict one slice again (see
    :class:`~napari_dlbio.models.interactive.FineTuner`); the result is a :class:`Tuned`,
    or None when stopped.

    ``tuner`` names the engine's tuner to go on with (its network lives on between
    bursts); None makes a new one from the model ``start`` (an id or a source) with the
    training settings ``config`` (None: the model's own), or from scratch with ``config``.
    ``annotation`` is what the burst learns (0 = not annotated); ``recent`` the pixels
    painted since the last burst; ``slice_index`` the slice predicted again (None: a 2D
    image).
    """

    tuner: str | None
    start: str | None
    config: SegmentationConfig | None
    images: np.ndarray = field(repr=False)
    annotation: np.ndarray = field(repr=False)
    recent: np.ndarray | None = field(repr=False)
    seconds: float
    slice_index: int | None
    min_region_pixels: int = 0


@dataclass(frozen=True)
class SaveModel(Request):
    """Write a loaded model as a new model folder ``folder``; the result is its path."""

    model: str
    folder: str


@dataclass(frozen=True)
class ExportPackage(Request):
    """Write a model as a new bioimage.io package ``path`` (.zip); the result is its path."""

    model: str
    path: str


# Results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pong:
    """Who answered a :class:`Ping`: the engine's version and process id."""

    version: str
    pid: int


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model: its ``id`` in this engine, the ``source`` it was loaded from, its
    task ("segmentation" or "classification"), its config as the JSON dict of
    ``config.json`` and the folder it came from (a path on the engine's machine)."""

    id: str
    source: str
    task: str
    config: dict[str, Any]
    path: str | None


@dataclass(frozen=True)
class ModelHandle:
    """A model of the engine as the widgets hold it: how the engine knows it (``id``),
    what loads it again in a new engine (``source``: its folder or ``builtin:NAME``),
    its task and config, and the folder it was saved to by the user (``path``)."""

    id: str
    source: str
    task: Task
    config: JsonConfig
    path: Path | None

    @classmethod
    def of(cls, info: ModelInfo, *, saved: bool = True) -> ModelHandle:
        """The handle of a loaded model; ``saved`` False for a model the engine wrote to
        a scratch folder (it then has no ``path``, but still a ``source``)."""
        task = Task(info.task)
        config_type = SegmentationConfig if task is Task.SEGMENTATION else ClassifierConfig
        path = Path(info.path) if saved and info.path is not None else None
        return cls(info.id, info.source, task, config_type.from_dict(info.config), path)


@dataclass(frozen=True)
class Segmented:
    """A segmentation: the model that made it, the (Z, Y, X) uint8 mask (0 = background)
    and the (Z, Y, X, K) float32 probabilities."""

    model: ModelInfo
    mask: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Classified:
    """Class probabilities (N, K) of the images, the model's classes, and which images
    the model was trained on (N,) bool."""

    model: ModelInfo
    probabilities: np.ndarray = field(repr=False)
    class_names: tuple[str, ...]
    seen_in_training: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Tuned:
    """A burst's outcome: the tuner that goes on, its model now, and the slice predicted
    again (mask and probabilities as in :class:`Segmented`)."""

    tuner: str
    model: ModelInfo
    mask: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Trained:
    """A training run's model (its best weights, written to ``Train.save_to``) and how
    the run ended."""

    model: ModelInfo
    state: RunState
    best_epoch: int | None
    seconds: float
    stop_reason: StopReason


# Envelopes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Submit:
    """Client to engine: run ``request`` as job ``job_id`` (unique per connection)."""

    job_id: int
    request: Request


@dataclass(frozen=True)
class Cancel:
    """Client to engine: stop job ``job_id`` at its next check (it still ends normally)."""

    job_id: int


@dataclass(frozen=True)
class Feed:
    """Client to engine: slice ``index`` of job ``job_id``'s :class:`ArrayFeed`."""

    job_id: int
    index: int
    array: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class FeedTaken:
    """Engine to client: job ``job_id`` is done with the slices before ``index``; more may
    be sent (the client keeps a bounded number of slices in flight)."""

    job_id: int
    index: int


@dataclass(frozen=True)
class EventMessage:
    """Engine to client: job ``job_id`` yielded ``event``."""

    job_id: int
    event: Event


@dataclass(frozen=True)
class Result:
    """Engine to client: job ``job_id`` returned ``value``; nothing follows for this job."""

    job_id: int
    value: Any


@dataclass(frozen=True)
class Failure:
    """Engine to client: job ``job_id`` raised an exception of type ``kind`` (its class
    name) with ``message``; nothing follows for this job."""

    job_id: int
    kind: str
    message: str

    @classmethod
    def of(cls, job_id: int, error: BaseException) -> Failure:
        """The failure that reports ``error``; TensorFlow's out-of-memory is a MemoryError."""
        kind = type(error).__name__
        if kind == "ResourceExhaustedError":
            kind = MemoryError.__name__
        return cls(job_id, kind, str(error) or kind)

    def error(self) -> Exception:
        """The exception to raise in the client: the engine's own type where it is one of
        the errors users are shown (:data:`USER_ERRORS`), else an :class:`EngineError`."""
        known = USER_ERRORS.get(self.kind)
        if known is not None:
            return known(self.message)
        return EngineError(f"the engine failed: {self.kind}: {self.message}")


#: Exceptions that keep their type on the way from the engine to the client.
USER_ERRORS: dict[str, type[Exception]] = {
    kind.__name__: kind
    for kind in (
        DlbioError,
        InputDataError,
        ConfigError,
        ModelFolderError,
        EngineError,
        ProtocolError,
        MemoryError,
    )
}
