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
from napari_dlbio.core.config import Task, apply_changes
from napari_dlbio.core.errors import InputDataError, ModelFolderError
from napari_dlbio.core.events import CancelToken, Event, Notice, RunState
from napari_dlbio.core.io import refuse_occupied_folder
from napari_dlbio.engine.protocol import (
    Burst,
    Classified,
    ExplainClass,
    ExportPackage,
    LoadModel,
    ModelInfo,
    Ping,
    Pong,
    PredictClasses,
    PredictSegmentation,
    PredictSlices,
    Request,
    SaveModel,
    Segmented,
    Train,
    Trained,
    Tuned,
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


@handles(PredictSegmentation)
def predict_segmentation(
    request: PredictSegmentation, job: JobContext
) -> Generator[Event, None, Segmented | None]:
    """Predict a whole segmentation and return its mask and probabilities."""
    from napari_dlbio.models.segmentation import iter_predict_segmentation

    loaded = _model(job, request.model, Task.SEGMENTATION)
    prediction = yield from iter_predict_segmentation(
        loaded.folder, request.images, cancel=job.cancel
    )
    if prediction is None:
        return None
    return Segmented(model_info(loaded), prediction.mask, prediction.probabilities)


@handles(PredictClasses)
def predict_classes(
    request: PredictClasses, job: JobContext
) -> Generator[Event, None, Classified | None]:
    """Classify images and return their class probabilities."""
    from napari_dlbio.models.classification import iter_predict_classifier

    loaded = _model(job, request.model, Task.CLASSIFICATION)
    prediction = yield from iter_predict_classifier(
        loaded.folder, request.images, cancel=job.cancel
    )
    if prediction is None:
        return None
    return Classified(
        model_info(loaded),
        prediction.probabilities,
        tuple(prediction.class_names),
        prediction.seen_in_training,
    )


@handles(ExplainClass)
def explain_class(request: ExplainClass, job: JobContext) -> Generator[Event, None, Any]:
    """The Grad-CAM heatmap of one image for its predicted class."""
    from napari_dlbio.models.gradcam import grad_cam

    yield from ()
    return grad_cam(_model(job, request.model, Task.CLASSIFICATION).folder, request.image)


@handles(Train)
def train(request: Train, job: JobContext) -> Generator[Event, None, Trained | None]:
    """Train or fine-tune, write the model folder and keep the model loaded."""
    from napari_dlbio.models.store import save_model_folder

    refuse_occupied_folder(Path(request.save_to), "the model's files")  # now, not at the end
    initial = None if request.start is None else _model(job, request.start, request.task).folder
    config = request.config
    if initial is not None:
        # Fine-tuning keeps the model's architecture; only training changes.  A classifier
        # keeps its classes too unless the images show others: it then gets a new top.
        config = apply_changes(initial.config, request.training)
        if request.task is Task.CLASSIFICATION:
            config = config.replace(class_names=request.config.class_names)
    if request.task is Task.SEGMENTATION:
        from napari_dlbio.models.segmentation import iter_train_segmentation as iter_train
    else:
        from napari_dlbio.models.classification import iter_train_classifier as iter_train
    result = yield from iter_train(
        request.images, request.targets, config, cancel=job.cancel, initial=initial
    )
    model, fit = result.model, result.fit
    if fit.state is RunState.CANCELLED and fit.best_epoch is None:
        yield Notice("Stopped before the first epoch ended: no model was kept.")
        return None
    saved = save_model_folder(
        request.save_to, model.model, model.task, model.config, fit.history, model.metrics
    )
    model.path = saved
    loaded = job.models.add(str(saved), model)
    return Trained(model_info(loaded), fit.state, fit.best_epoch, fit.seconds, fit.stop_reason)


@handles(Burst)
def burst(request: Burst, job: JobContext) -> Generator[Event, None, Tuned | None]:
    """Fine-tune a tuner (made now if needed) for a burst, then predict the slice again.

    The tuned model is kept under the source ``tuner-N``: it lives in this engine only,
    until it is saved.
    """
    from napari_dlbio.models.interactive import FineTuner
    from napari_dlbio.models.segmentation import iter_predict_segmentation

    if request.tuner is None:
        start = None
        if request.start is not None:
            start = _model(job, request.start, Task.SEGMENTATION).folder
        config = request.config or start.config  # type: ignore[union-attr]
        tuner_id = job.models.keep_tuner(FineTuner(config, start))
    else:
        tuner_id = request.tuner
    tuner = job.models.tuner(tuner_id)
    tuner.config = tuner.config.replace(min_region_pixels=request.min_region_pixels)
    model = yield from tuner.iter_burst(
        request.images,
        request.annotation,
        seconds=request.seconds,
        recent=request.recent,
        cancel=job.cancel,
    )
    if job.cancel.cancelled:
        return None
    index = request.slice_index
    images = request.images if index is None else request.images[index : index + 1]
    prediction = yield from iter_predict_segmentation(model, images, cancel=job.cancel)
    if prediction is None:
        return None
    loaded = job.models.add(tuner_id, model)
    return Tuned(tuner_id, model_info(loaded), prediction.mask, prediction.probabilities)


@handles(SaveModel)
def save_model(request: SaveModel, job: JobContext) -> Generator[Event, None, str]:
    """Write a loaded model as a new model folder (an existing one is never replaced)."""
    from napari_dlbio.models.store import save_model_folder

    folder = Path(request.folder)
    refuse_occupied_folder(folder, "the model's files")
    model = job.models.get(_reference(request.model)).folder
    saved = save_model_folder(
        folder, model.model, model.task, model.config, model.history, model.metrics
    )
    yield Notice(f"Saved the model folder {saved}.")
    return str(saved)


@handles(ExportPackage)
def export_package(request: ExportPackage, job: JobContext) -> Generator[Event, None, str]:
    """Write a model as a new bioimage.io package (see
    :func:`~napari_dlbio.models.bioimageio_export.export_bioimageio`)."""
    from napari_dlbio.models.bioimageio_export import export_bioimageio

    model = job.models.get(_reference(request.model)).folder
    written = export_bioimageio(model, request.path)
    yield Notice(f"Saved the bioimage.io package {written}.")
    return str(written)


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
    """A model or tuner id as it is, a source made canonical."""
    return model if model.startswith(("model-", "tuner-")) else canonical_source(model)


def _model(job: JobContext, model: str, task: Task) -> LoadedModel:
    """The loaded model ``model`` (an id or a source), checked to be a ``task`` model."""
    loaded = job.models.get(_reference(model))
    if loaded.folder.task is not task:
        raise InputDataError(
            f"The model is a {loaded.folder.task.value} model; this needs a {task.value} "
            "model. Train one or load a model folder."
        )
    return loaded


def _load_folder(source: str) -> Any:
    if source.startswith("tuner-"):
        raise ModelFolderError(
            "this fine-tuned model lived only in an engine that stopped, and was not saved; "
            "fine-tune again (or train) to get a model to use"
        )
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
