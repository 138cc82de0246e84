"""Objects of a predicted stack, kind by kind, with their features table.

A model's classes with a role (:meth:`SegmentationConfig.class_roles`) give one kind of
object each: the cells a boundary class encloses, or the objects of an object class.
:class:`SliceObjectFinder` cuts and measures them one slice at a time while the slices are
predicted, so a stack larger than memory never has to be held (labels stay unique across the
whole stack); :func:`find_objects_through_stack` does the same for 3D objects, which need the
whole stack at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.instance_metrics import instance_report
from napari_dlbio.core.measurements import FEATURE_COLUMNS, measure_objects
from napari_dlbio.core.objects import (
    BOUNDARY,
    ObjectSettings,
    cells_from_boundary,
    instances,
    next_first_label,
    objects_from_mask,
)

CELLS = "cells"


@dataclass(frozen=True)
class ObjectKind:
    """One kind of object of a model: cells of a boundary class, or an object class's own."""

    class_index: int
    class_name: str
    role: str

    @property
    def name(self) -> str:
        """``cells`` for a boundary class, the class name for an object class."""
        return CELLS if self.role == BOUNDARY else self.class_name

    @property
    def file_name(self) -> str:
        """The kind's instance file: ``cells.tif`` or ``<class>.tif``."""
        return f"{self.name}.tif"


def object_kinds(class_names: Sequence[str], roles: Mapping[int, str]) -> list[ObjectKind]:
    """The kinds of object of a model, boundary classes first.

    Raises
    ------
    InputDataError
        When the model has no class with a role, or two boundary classes (both would write
        ``cells``).
    """
    kinds = [ObjectKind(index, class_names[index], role) for index, role in roles.items()]
    kinds.sort(key=lambda kind: (kind.role != BOUNDARY, kind.class_index))
    if not kinds:
        raise InputDataError(
            "This model has no structure class to find objects of; objects come from a "
            "segmentation model with at least one class besides the background."
        )
    names = [kind.name for kind in kinds]
    if len(set(names)) < len(names):
        raise InputDataError(
            f"The model's classes give two kinds of object named {names}; a model may have "
            "one boundary class, and no object class called 'cells'."
        )
    return kinds


def empty_table() -> dict[str, np.ndarray]:
    """A features table without rows."""
    return measure_objects(np.zeros((0, 0), np.uint32), np.zeros((0, 0)), "")


def concatenate_tables(tables: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Rows of several features tables in one."""
    if not tables:
        return empty_table()
    return {name: np.concatenate([table[name] for table in tables]) for name in FEATURE_COLUMNS}


class SliceObjectFinder:
    """Cut and measure the objects of a stack one slice at a time.

    Parameters
    ----------
    kinds
        The kinds of object to find (:func:`object_kinds`).
    settings
        Smoothing and seed threshold; ``through_stack`` must be False.
    scale
        Pixel size (y, x) or (z, y, x), for the physical sizes in the table.
    """

    def __init__(
        self, kinds: Sequence[ObjectKind], settings: ObjectSettings, scale: Sequence[float]
    ) -> None:
        if settings.through_stack:
            raise InputDataError("Objects through the stack need the whole stack at once.")
        self.kinds = list(kinds)
        self.settings = settings
        self.scale = tuple(scale)
        self._first_labels = {kind.name: 1 for kind in self.kinds}

    def add(
        self, index: int, probabilities: np.ndarray, image: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Objects of slice ``index``: labels per kind name, and their features table.

        Parameters
        ----------
        index
            The slice's index in the stack (the table's ``slice`` column).
        probabilities
            (Y, X, K) class probabilities of the slice.
        image
            The slice itself, (Y, X) or (Y, X, C), for the objects' mean intensity.
        """
        predicted = None
        labels: dict[str, np.ndarray] = {}
        tables = []
        for kind in self.kinds:
            first = self._first_labels[kind.name]
            if kind.role == BOUNDARY:
                found = cells_from_boundary(
                    probabilities[..., kind.class_index], self.settings, first
                )
            else:
                if predicted is None:
                    predicted = np.argmax(probabilities, axis=-1)
                found = objects_from_mask(predicted == kind.class_index, self.settings, first)
            self._first_labels[kind.name] = next_first_label(found, first)
            labels[kind.name] = found
            tables.append(
                measure_objects(found, image, kind.name, self.scale[-2:], first_slice=index)
            )
        return labels, concatenate_tables(tables)


def find_objects_through_stack(
    probabilities: np.ndarray,
    images: np.ndarray,
    kinds: Sequence[ObjectKind],
    settings: ObjectSettings,
    scale: Sequence[float],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """3D objects of a whole (Z, Y, X, K) prediction: labels per kind name and the table.

    Each object is one row, measured as a volume (``slice`` is the first slice it is in).
    """
    roles = {kind.class_index: kind.role for kind in kinds}
    found = instances(probabilities, roles, settings.replace(through_stack=True))
    labels = {kind.name: found[kind.class_index] for kind in kinds}
    tables = [
        measure_objects(labels[kind.name], images, kind.name, scale, volumetric=True)
        for kind in kinds
    ]
    return labels, concatenate_tables(tables)


def score_objects(
    truth: np.ndarray,
    mask: np.ndarray,
    kinds: Sequence[ObjectKind],
    objects: Mapping[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Scores of found objects per kind name, against dense ground truth.

    Parameters
    ----------
    truth
        (Z, Y, X) true classes of every pixel (0 = background, k = class k).
    mask
        The predicted classes, same shape.
    kinds
        The kinds to score (those missing from ``objects`` are left out).
    objects
        Kind name to the found objects' labels, of ``mask``'s shape.

    Returns
    -------
    dict
        Kind name to :func:`~napari_dlbio.core.instance_metrics.instance_report`.
    """
    return {
        kind.name: instance_report(
            kind.role,
            truth == kind.class_index,
            mask == kind.class_index,
            predicted_objects=np.asarray(objects[kind.name]).reshape(mask.shape),
        )
        for kind in kinds
        if kind.name in objects
    }
