"""The widgets' background jobs: generators that run in a worker thread, never in the GUI.

Each job takes configs and numpy arrays (never layers or widgets), imports the model code
when it starts (so TensorFlow is first imported here, through ``models._tf``), yields typed
events and returns plain results: napari layers not yet in a viewer, layer data tuples,
table rows, a model folder.  No Qt.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Layer

from napari_dlbio._layers import (
    Placement,
    classification_rows,
    gradcam_layer,
    metrics_features,
    metrics_rows,
    prediction_layers,
)
from napari_dlbio.core.config import JsonConfig, Task
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken, Event, Notice, RunState
from napari_dlbio.core.labels import classes_from_annotation
from napari_dlbio.core.metrics import segmentation_report

if TYPE_CHECKING:
    from napari_dlbio.models.store import ModelFolder
    from napari_dlbio.models.training import FitResult

Job = Generator[Event, None, Any]


@dataclass(frozen=True)
class ModelSource:
    """Where a job gets its model: the one in memory, a folder, or none (a new network)."""

    model: ModelFolder | None = None
    folder: Path | None = None

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
    """

    task: Task
    images: Any
    targets: np.ndarray
    config: JsonConfig
    training: Mapping[str, Any] = field(default_factory=dict)
    start: ModelSource = field(default_factory=ModelSource)
    save_to: Path | None = None


@dataclass(frozen=True)
class TrainOutcome:
    """What training gave: the model (best weights) and how the fit ended."""

    model: ModelFolder
    fit: FitResult
    saved: Path | None


def train(request: TrainRequest, *, cancel: CancelToken) -> Job:
    """Train or fine-tune, then save the model folder if asked; return a TrainOutcome."""
    initial = yield from request.start.load(request.task)
    config = request.config
    if initial is not None:
        # Fine-tuning keeps the model's architecture and classes; only training changes.
        config = apply_changes(initial.config, request.training)
    images = np.asarray(request.images)
    if request.task is Task.SEGMENTATION:
        from napari_dlbio.models.segmentation import iter_train_segmentation

        result = yield from iter_train_segmentation(
            images, request.targets, config, cancel=cancel, initial=initial
        )
    else:
        from napari_dlbio.models.classification import iter_train_classifier

        result = yield from iter_train_classifier(
            images, request.targets, config, cancel=cancel, initial=initial
        )
    model, fit = result.model, result.fit
    if fit.state is RunState.CANCELLED and fit.best_epoch is None:
        yield Notice("Stopped before the first epoch ended: no model was kept.")
        return None
    saved = None
    if request.save_to is not None:
        from napari_dlbio.models.store import save_model_folder

        saved = save_model_folder(
            request.save_to, model.model, model.task, model.config, fit.history, model.metrics
        )
        model.path = saved
        yield Notice(f"Model saved to {saved}.")
    return TrainOutcome(model=model, fit=fit, saved=saved)


@dataclass(frozen=True)
class Reference:
    """Labels to score a prediction against, read as an annotation or as a mask."""

    labels: np.ndarray
    is_annotation: bool


@dataclass(frozen=True)
class Evaluation:
    """A segmentation report as table rows and as a mask layer's features."""

    report: dict[str, Any]
    rows: list[dict[str, Any]]
    features: dict[str, list[Any]]


def evaluate(
    mask: np.ndarray, reference: Reference, class_names: Sequence[str], slice_offset: int
) -> Evaluation:
    """Score a (Z, Y, X) predicted mask against reference labels of the same slices.

    Parameters
    ----------
    mask
        Predicted classes, 0 = background.
    reference
        Annotation (0 = not annotated, only annotated pixels count) or a mask.
    class_names
        The model's classes.
    slice_offset
        Stack index of the mask's first slice (for a one-slice prediction).
    """
    mask = np.asarray(mask)
    labels = np.asarray(reference.labels)
    if labels.ndim == mask.ndim - 1:
        labels = labels[np.newaxis]
    if labels.shape != mask.shape:
        raise InputDataError(
            f"The reference labels have shape {labels.shape} but the prediction {mask.shape}; "
            "choose the labels drawn on the predicted image."
        )
    if reference.is_annotation:
        truth, valid = classes_from_annotation(labels)
    else:
        truth, valid = labels, None
    if int(truth.max(initial=0)) >= len(class_names):
        raise InputDataError(
            f"The reference labels hold class {int(truth.max())} but the model knows only "
            f"{len(class_names)} classes ({', '.join(class_names)}); check 'Read as'."
        )
    report = segmentation_report(truth, mask, class_names, valid)
    return Evaluation(report, metrics_rows(report, slice_offset), metrics_features(report))


def evaluate_job(
    mask: np.ndarray,
    reference: Reference,
    class_names: Sequence[str],
    slice_offset: int,
    *,
    cancel: CancelToken,
) -> Job:
    """:func:`evaluate` as a job (a whole stack takes long enough to stall the GUI)."""
    yield from ()
    return evaluate(mask, reference, class_names, slice_offset)


@dataclass(frozen=True)
class SegmentationOutcome:
    """A segmentation prediction as layers, with its model and (optional) evaluation."""

    model: ModelFolder
    layers: list[Layer]
    evaluation: Evaluation | None


def predict_segmentation(
    source: ModelSource,
    images: Any,
    placement: Placement,
    image_name: str,
    slice_index: int | None,
    reference: Reference | None,
    *,
    cancel: CancelToken,
) -> Job:
    """Predict (Z, Y, X[, C]) slices; return a SegmentationOutcome, or None if cancelled."""
    from napari_dlbio.models.segmentation import iter_predict_segmentation

    model = yield from source.load(Task.SEGMENTATION)
    if model is None:
        raise InputDataError("No model yet: train one or choose a model folder.")
    prediction = yield from iter_predict_segmentation(model, np.asarray(images), cancel=cancel)
    if prediction is None:
        return None
    names = list(model.config.class_names)
    # Built here, in the job's thread: a Labels layer of a whole stack takes a noticeable
    # fraction of a second to construct, which the GUI thread would otherwise stall on.
    layers = [
        Layer.create(data, dict(meta), kind)
        for data, meta, kind in prediction_layers(
            prediction.mask, prediction.probabilities, names, placement, image_name, slice_index
        )
    ]
    evaluation = None
    if reference is not None:
        try:
            evaluation = evaluate(prediction.mask, reference, names, slice_index or 0)
        except InputDataError as error:
            # The prediction is still worth showing when the chosen reference does not fit.
            yield Notice(f"The prediction was not scored: {error}")
    return SegmentationOutcome(model, layers, evaluation)


@dataclass(frozen=True)
class ClassificationOutcome:
    """Per-image predictions of a leaf stack as table rows."""

    model: ModelFolder
    rows: list[dict[str, Any]]
    probabilities: np.ndarray
    class_names: list[str]


def predict_classes(
    source: ModelSource,
    images: Any,
    first_index: int,
    true_classes: np.ndarray | None,
    *,
    cancel: CancelToken,
) -> Job:
    """Classify (N, H, W, C) images; return a ClassificationOutcome, or None if cancelled."""
    from napari_dlbio.models.classification import iter_predict_classifier

    model = yield from source.load(Task.CLASSIFICATION)
    if model is None:
        raise InputDataError("No classifier yet: train one or choose a model folder.")
    prediction = yield from iter_predict_classifier(model, np.asarray(images), cancel=cancel)
    if prediction is None:
        return None
    names = list(prediction.class_names)
    rows = classification_rows(prediction.probabilities, names, true_classes, first_index)
    return ClassificationOutcome(model, rows, np.asarray(prediction.probabilities), names)


def explain(
    source: ModelSource,
    image: np.ndarray,
    placement: Placement,
    image_name: str,
    index: int | None,
    *,
    cancel: CancelToken,
) -> Job:
    """Grad-CAM of one image for its predicted class, as an Image layer data tuple."""
    from napari_dlbio.models.gradcam import grad_cam

    model = yield from source.load(Task.CLASSIFICATION)
    if model is None:
        raise InputDataError("No classifier yet: train one or choose a model folder.")
    heatmap = grad_cam(model, np.asarray(image))
    return gradcam_layer(heatmap, placement, image_name, index)


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
