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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_dlbio.core.errors import ConfigError, DlbioError, InputDataError, ModelFolderError
from napari_dlbio.core.events import Event


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
