"""The Predict widget's background jobs: generators that run in a worker thread.

Each job takes configs and numpy arrays (never layers or widgets), has the engine
(:mod:`._engine`) run the model, yields its events and turns what comes back into plain
results off the GUI thread: napari layers not yet in a viewer, layer data tuples, table
rows, the model's handle.  Scoring and objects are numpy and run here, in napari's process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
from napari_dlbio._widgets._engine import SessionEngine
from napari_dlbio._widgets._object_jobs import (
    NOT_SCORED_NO_OBJECTS,
    FoundObjects,
    ObjectInput,
    iter_objects,
    model_kinds,
    score_objects,
)
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken, Event, Notice
from napari_dlbio.core.labels import classes_from_annotation
from napari_dlbio.core.metrics import segmentation_report
from napari_dlbio.core.object_settings import ObjectSettings, class_roles
from napari_dlbio.engine.protocol import (
    ExplainClass,
    ModelHandle,
    PredictClasses,
    PredictSegmentation,
)

Job = Generator[Event, None, Any]


@dataclass(frozen=True)
class Reference:
    """Labels to score a prediction against, read as an annotation or as a mask."""

    labels: np.ndarray
    is_annotation: bool


@dataclass(frozen=True)
class Evaluation:
    """A segmentation report as table rows and as a mask layer's features, with the object
    scores per kind (or why there are none)."""

    report: dict[str, Any]
    rows: list[dict[str, Any]]
    features: dict[str, list[Any]]
    objects: dict[str, Any] | None = None
    objects_note: str | None = None


def reference_labels(mask: np.ndarray, reference: Reference) -> np.ndarray:
    """The reference's labels as (Z, Y, X), checked against the (Z, Y, X) predicted mask."""
    labels = np.asarray(reference.labels)
    if labels.ndim == mask.ndim - 1:
        labels = labels[np.newaxis]
    if labels.shape != mask.shape:
        raise InputDataError(
            f"The reference labels have shape {labels.shape} but the prediction {mask.shape}; "
            "choose the labels drawn on the predicted image."
        )
    return labels


def evaluate(
    mask: np.ndarray,
    reference: Reference,
    class_names: Sequence[str],
    slice_offset: int,
    roles: Mapping[int, str] | None = None,
    objects: Mapping[str, np.ndarray] | None = None,
) -> Evaluation:
    """Score a (Z, Y, X) predicted mask, and its objects, against labels of the same slices.

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
    roles
        The classes' roles (:meth:`SegmentationConfig.class_roles`); None: no object scores.
    objects
        The objects found in ``mask``, by kind name, of the mask's shape (see
        :func:`score_objects`); None when none were found.
    """
    mask = np.asarray(mask)
    labels = reference_labels(mask, reference)
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
    scores, note = None, None
    if roles is not None and objects is None:
        note = NOT_SCORED_NO_OBJECTS
    elif roles is not None and objects is not None:
        try:
            kinds = model_kinds(class_names, roles)
        except InputDataError as error:
            note = f"Objects were not scored: {error}"
        else:
            scores, note = score_objects(labels, reference.is_annotation, kinds, mask, objects)
    rows, features = metrics_rows(report, slice_offset), metrics_features(report)
    return Evaluation(report, rows, features, scores, note)


def evaluate_job(
    mask: np.ndarray,
    reference: Reference,
    class_names: Sequence[str],
    slice_offset: int,
    boundary_classes: Sequence[str] | None = None,
    objects: Mapping[str, np.ndarray] | None = None,
    *,
    cancel: CancelToken,
) -> Job:
    """:func:`evaluate` as a job (a whole stack takes long enough to stall the GUI).

    ``boundary_classes`` gives the classes' roles (None: the mask has none, no object
    scores); ``objects`` the objects shown for the mask, by kind name.
    """
    yield from ()
    roles = None if boundary_classes is None else class_roles(class_names, boundary_classes)
    return evaluate(mask, reference, class_names, slice_offset, roles, objects)


@dataclass(frozen=True)
class SegmentationOutcome:
    """A segmentation prediction as layers, with its model, (optional) evaluation and
    objects, and what its objects are cut from (None, and why, when the model gives none)."""

    model: ModelHandle
    layers: list[Layer]
    evaluation: Evaluation | None
    objects: FoundObjects | None = None
    object_input: ObjectInput | None = None
    no_objects: str | None = None


def predict_segmentation(
    engine: SessionEngine,
    model: str,
    images: Any,
    placement: Placement,
    image_name: str,
    slice_index: int | None,
    reference: Reference | None,
    objects: ObjectSettings | None = None,
    unit: str = "",
    *,
    cancel: CancelToken,
) -> Job:
    """Predict (Z, Y, X[, C]) slices with ``model`` (a source or an engine id); return a
    SegmentationOutcome, or None if cancelled.

    With ``objects`` settings, the objects of every class with a role are found too (their
    sizes in ``unit``, the image's, from ``placement``'s scale).
    """
    request = PredictSegmentation(model, np.asarray(images))
    prediction = yield from engine.run(request, cancel=cancel)
    if prediction is None:
        return None
    handle = ModelHandle.of(prediction.model)
    names = list(handle.config.class_names)
    boundary = list(handle.config.boundary_classes)
    # Built here, in the job's thread: a Labels layer of a whole stack takes a noticeable
    # fraction of a second to construct, which the GUI thread would otherwise stall on.
    layers = [
        Layer.create(data, dict(meta), kind)
        for data, meta, kind in prediction_layers(
            prediction.mask,
            prediction.probabilities,
            names,
            placement,
            image_name,
            slice_index,
            boundary,
        )
    ]
    object_input, found, no_objects = None, None, None
    try:
        kinds = model_kinds(names, class_roles(names, boundary))
    except InputDataError as error:
        no_objects = f"No objects: {error}"
        if objects is not None:
            yield Notice(no_objects)
    else:
        object_input = ObjectInput(
            prediction.probabilities,
            prediction.mask,
            images,
            kinds,
            placement,
            image_name,
            slice_index,
            unit,
            reference,
        )
        if objects is not None:
            found = yield from iter_objects(object_input, objects, cancel)
            if found is None:
                return None
    evaluation = None
    if reference is not None:
        try:
            evaluation = evaluate(
                prediction.mask,
                reference,
                names,
                slice_index or 0,
                class_roles(names, boundary) if object_input is not None else None,
                found.labels if found is not None else None,
            )
        except InputDataError as error:
            # The prediction is still worth showing when the chosen reference does not fit.
            yield Notice(f"The prediction was not scored: {error}")
    return SegmentationOutcome(handle, layers, evaluation, found, object_input, no_objects)


def find_objects(source: ObjectInput, settings: ObjectSettings, *, cancel: CancelToken) -> Job:
    """Cut a prediction's objects again with other settings; scored when its reference is
    complete.  Returns :class:`FoundObjects`, or None if cancelled."""
    found = yield from iter_objects(source, settings, cancel)
    if found is None or source.reference is None:
        return found
    try:
        labels = reference_labels(source.mask, source.reference)
    except InputDataError:
        return found
    scores, note = score_objects(
        labels, source.reference.is_annotation, source.kinds, source.mask, found.labels
    )
    return dataclasses.replace(found, scores=scores, note=note)


@dataclass(frozen=True)
class ClassificationOutcome:
    """Per-image predictions of a leaf stack as table rows."""

    model: ModelHandle
    rows: list[dict[str, Any]]
    probabilities: np.ndarray
    class_names: list[str]


def predict_classes(
    engine: SessionEngine,
    model: str,
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

    photos = reread_resized_photos(np.asarray(images), metadata, first_index)
    prediction = yield from engine.run(PredictClasses(model, photos), cancel=cancel)
    if prediction is None:
        return None
    names = list(prediction.class_names)
    rows = classification_rows(
        prediction.probabilities, names, true_classes, first_index, prediction.seen_in_training
    )
    probabilities = np.asarray(prediction.probabilities)
    return ClassificationOutcome(ModelHandle.of(prediction.model), rows, probabilities, names)


def explain(
    engine: SessionEngine,
    model: str,
    image: np.ndarray,
    placement: Placement,
    image_name: str,
    index: int | None,
    *,
    cancel: CancelToken,
) -> Job:
    """Grad-CAM of one image for its predicted class, as an Image layer data tuple."""
    heatmap = yield from engine.run(ExplainClass(model, np.asarray(image)), cancel=cancel)
    return gradcam_layer(heatmap, placement, image_name, index)
