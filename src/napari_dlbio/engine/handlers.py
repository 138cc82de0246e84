"""What the engine does for each kind of request: one handler each.

A handler is a generator function ``handler(request, job)`` registered for its request
type with :func:`handles`: it yields the core's events and returns the job's result, as
the models package's ``iter_*`` functions do, and stops when ``job.cancel`` is set.  A new
kind of request (training, classes, Grad-CAM, fine-tuning bursts, export) is one request
class in :mod:`.protocol` and one handler here.

This is the engine's only module that uses the models package, and only inside handlers,
so that importing the engine (or its client) never imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from napari_dlbio import __version__
from napari_dlbio.core.builtin_models import is_builtin_reference
from napari_dlbio.core.events import CancelToken, Event
from napari_dlbio.engine.protocol import (
    LoadModel,
    ModelInfo,
    Ping,
    Pong,
    PredictSlices,
    Request,
    UnloadModel,
)
from napari_dlbio.engine.registry import LoadedModel, ModelRegistry

R = TypeVar("R", bound=Request)


@dataclass(frozen=True)
class JobContext:
    """What a handler gets besides its request: the job's cancel token (set by the
    client's Cancel, or when its connection breaks) and the engine's loaded models."""

    cancel: CancelToken
    models: ModelRegistry


Handler = Callable[[Any, JobContext], Generator[Event, None, Any]]

#: The handler of each request type.
HANDLERS: dict[type[Request], Handler] = {}


def handles(kind: type[R]) -> Callable[[Handler], Handler]:
    """Register the decorated generator function as the handler of ``kind``."""

    def register(handler: Handler) -> Handler:
        HANDLERS[kind] = handler
        return handler

    return register


def new_registry() -> ModelRegistry:
    """An empty registry that loads model folders, built-in models and packages."""
    return ModelRegistry(_load_folder, _source_stamp)


@handles(Ping)
def ping(request: Ping, job: JobContext) -> Generator[Event, None, Pong]:
    """Answer with the engine's version and process id."""
    yield from ()
    return Pong(version=__version__, pid=os.getpid())


@handles(LoadModel)
def load_model(request: LoadModel, job: JobContext) -> Generator[Event, None, ModelInfo]:
    """Load a model (once) and describe it."""
    yield from ()
    return model_info(job.models.load(canonical_source(request.source)))


@handles(UnloadModel)
def unload_model(request: UnloadModel, job: JobContext) -> Generator[Event, None, None]:
    """Forget a loaded model."""
    yield from ()
    job.models.unload(_reference(request.model))


@handles(PredictSlices)
def predict_slices(request: PredictSlices, job: JobContext) -> Generator[Event, None, None]:
    """Predict the slices with :func:`~napari_dlbio.models.segmentation.iter_predict_slices`."""
    from napari_dlbio.models.segmentation import iter_predict_slices

    model = job.models.get(_reference(request.model)).folder
    yield from iter_predict_slices(model, request.images, cancel=job.cancel)


def model_info(loaded: LoadedModel) -> ModelInfo:
    """The description a client gets of a loaded model."""
    folder = loaded.folder
    return ModelInfo(
        id=loaded.id,
        source=loaded.source,
        task=folder.task.value,
        config=folder.config.to_dict(),
        path=None if folder.path is None else str(folder.path),
    )


def canonical_source(source: str) -> str:
    """``builtin:NAME`` as it is; a path made absolute, so that one folder is one model."""
    if is_builtin_reference(source):
        return source
    return str(Path(source).expanduser().resolve())


def _reference(model: str) -> str:
    """A model id as it is, a source made canonical."""
    return model if model.startswith("model-") else canonical_source(model)


def _load_folder(source: str) -> Any:
    from napari_dlbio.models.store import load_model_folder

    return load_model_folder(source)


def _source_stamp(source: str) -> Hashable:
    """The modification times and sizes of a source's files (built-in models never change)."""
    if is_builtin_reference(source):
        return source
    path = Path(source)
    try:
        if path.is_dir():
            return tuple(
                sorted(
                    (entry.name, entry.stat().st_mtime_ns, entry.stat().st_size)
                    for entry in os.scandir(path)
                    if entry.is_file()
                )
            )
        status = path.stat()
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size)
