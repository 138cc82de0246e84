"""The widgets' background jobs: generators that run in a worker thread, never in the GUI.

Each job takes configs and numpy arrays (never layers or widgets), imports the model code
when it starts (so TensorFlow is first imported here, through ``models._tf``), yields typed
events and returns plain results: napari layers not yet in a viewer, layer data tuples,
table rows, a model folder.  No Qt.  Training has its own module,
:mod:`._training_job`, as it runs in a child process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from napari_dlbio._widgets._training_job import Job, ModelSource
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken, Notice
from napari_dlbio.core.labels import classes_from_annotation
from napari_dlbio.core.metrics import segmentation_report

if TYPE_CHECKING:
    from napari_dlbio.models.store import ModelFolder


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
    metadata: Mapping[str, Any],
    *,
    cancel: CancelToken,
) -> Job:
    """Classify (N, H, W, C) images; return a ClassificationOutcome, or None if cancelled.

    ``images`` start at stack index ``first_index`` of a leaf stack whose layer metadata is
    ``metadata``; the photos the reader resized are read again from their files.
    """
    from napari_dlbio.core.io import reread_resized_photos
    from napari_dlbio.models.classification import iter_predict_classifier

    model = yield from source.load(Task.CLASSIFICATION)
    if model is None:
        raise InputDataError("No classifier yet: train one or choose a model folder.")
    photos = reread_resized_photos(np.asarray(images), metadata, first_index)
    prediction = yield from iter_predict_classifier(model, photos, cancel=cancel)
    if prediction is None:
        return None
    names = list(prediction.class_names)
    rows = classification_rows(
        prediction.probabilities, names, true_classes, first_index, prediction.seen_in_training
    )
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
