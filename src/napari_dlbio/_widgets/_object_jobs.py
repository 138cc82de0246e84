"""The object step of Predict & inspect: cut, measure and score objects in a worker thread.

What a prediction leaves for its objects (:class:`ObjectInput`) is kept by the widget, so the
objects can be cut again with other settings without predicting again.  The object
algorithms (scikit-image) are imported when a job starts, never in the GUI thread.  No Qt.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Layer

from napari_dlbio._layers import Placement
from napari_dlbio._object_layers import objects_layers
from napari_dlbio.core.events import CancelToken, Event, Notice, TileDone
from napari_dlbio.core.object_settings import ObjectSettings

if TYPE_CHECKING:
    from napari_dlbio._widgets._jobs import Reference
    from napari_dlbio.core.object_finder import ObjectKind

LabelsByKind = dict[str, np.ndarray]
Table = dict[str, np.ndarray]

NOT_SCORED_SPARSE = (
    "Objects were not scored (V_rand, F1): the reference leaves pixels unannotated, and "
    "object scores need ground truth on every pixel. Choose a complete ground truth (read "
    "as a mask) as Reference."
)
NOT_SCORED_NO_OBJECTS = (
    "Objects were not scored: none were found for this prediction (Objects: find objects)."
)


@dataclass(frozen=True)
class ObjectInput:
    """What a prediction's objects are cut from, kept to cut them again.

    Attributes
    ----------
    probabilities
        (Z, Y, X, K) class probabilities of the predicted slices.
    mask
        (Z, Y, X) predicted classes of those slices.
    images
        The (Z, Y, X[, C]) slices themselves (for the mean intensity).
    kinds
        The kinds of object of the model's classes.
    placement, image_name, slice_index
        Where the prediction lies (see :func:`~napari_dlbio._layers.prediction_layers`).
    unit
        The image layer's unit, for the sizes in the features table.
    reference
        The labels the prediction was scored against, if any.
    """

    probabilities: np.ndarray
    mask: np.ndarray
    images: Any
    kinds: tuple[ObjectKind, ...]
    placement: Placement
    image_name: str
    slice_index: int | None
    unit: str
    reference: Reference | None = None


@dataclass(frozen=True)
class FoundObjects:
    """Objects as layers (one per kind, not yet in a viewer), with their labels and scores."""

    layers: list[Layer]
    labels: LabelsByKind
    scores: dict[str, Any] | None = None
    note: str | None = None


def model_kinds(class_names: Sequence[str], roles: Mapping[int, str]) -> tuple[ObjectKind, ...]:
    """The kinds of object of a model's classes (raises InputDataError when there are none)."""
    from napari_dlbio.core.object_finder import object_kinds

    return tuple(object_kinds(list(class_names), roles))


def iter_cut_objects(
    source: ObjectInput, settings: ObjectSettings, cancel: CancelToken
) -> Generator[Event, None, tuple[LabelsByKind, Table, ObjectSettings] | None]:
    """Labels per kind (Z, Y, X), their features and the settings used; None if cancelled.

    Per slice, one slice at a time (cancel checked between slices); through the stack when
    asked and more than one slice was predicted.
    """
    from napari_dlbio.core.object_finder import (
        SliceObjectFinder,
        concatenate_tables,
        find_objects_through_stack,
    )

    count = len(source.probabilities)
    scale = source.placement.for_slices().scale
    if settings.through_stack and count > 1:
        labels, table = find_objects_through_stack(
            source.probabilities, np.asarray(source.images), source.kinds, settings, scale
        )
        return labels, table, settings
    if settings.through_stack:
        yield Notice(
            "Objects through the stack need a stack predicted whole; the objects of this "
            "slice were found in 2D."
        )
        settings = settings.replace(through_stack=False)
    finder = SliceObjectFinder(source.kinds, settings, scale)
    planes: dict[str, list[np.ndarray]] = {kind.name: [] for kind in source.kinds}
    tables = []
    for z in range(count):
        if cancel.cancelled:
            return None
        found, table = finder.add(
            (source.slice_index or 0) + z, source.probabilities[z], np.asarray(source.images[z])
        )
        for name, plane in found.items():
            planes[name].append(plane)
        tables.append(table)
        yield TileDone(z + 1, count)
    return (
        {name: np.stack(stack) for name, stack in planes.items()},
        concatenate_tables(tables),
        settings,
    )


def iter_objects(
    source: ObjectInput, settings: ObjectSettings, cancel: CancelToken
) -> Generator[Event, None, FoundObjects | None]:
    """The objects of a prediction as layers built in the job's thread; None if cancelled."""
    cut = yield from iter_cut_objects(source, settings, cancel)
    if cut is None:
        return None
    labels, table, used = cut
    layers = [
        Layer.create(data, dict(meta), kind)
        for data, meta, kind in objects_layers(
            labels,
            table,
            source.kinds,
            source.placement,
            source.image_name,
            source.slice_index,
            unit=source.unit,
            settings=used.to_dict(),
        )
    ]
    return FoundObjects(layers, labels)


def score_objects(
    truth: np.ndarray,
    is_annotation: bool,
    kinds: Sequence[ObjectKind],
    mask: np.ndarray,
    objects: Mapping[str, np.ndarray],
) -> tuple[dict[str, Any] | None, str | None]:
    """Object scores per kind name (:func:`~napari_dlbio.core.instance_metrics.instance_report`)
    of found ``objects`` against (Z, Y, X) reference labels, or None and why not.

    ``truth`` is an annotation (class k is k + 1; it must leave no pixel at 0) or a mask.
    """
    from napari_dlbio.core.object_finder import score_objects as scores_of

    if is_annotation and np.any(truth == 0):
        return None, NOT_SCORED_SPARSE
    report = scores_of(truth - 1 if is_annotation else truth, mask, kinds, objects)
    return (report, None) if report else (None, NOT_SCORED_NO_OBJECTS)
