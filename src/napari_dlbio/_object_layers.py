"""Objects as napari layer data: one instance Labels layer per kind, and score rows.

Placed exactly like the prediction's mask (see :mod:`napari_dlbio._layers`); no Qt, no
TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlbio._layers import OBJECTS, ROLE_KEY, LayerData, Placement, result_placement

if TYPE_CHECKING:
    from napari_dlbio.core.object_finder import ObjectKind

#: Metadata of an OBJECTS layer (one per kind of object, see :func:`objects_layers`):
#: ``kind`` ("cells" or the class name: the name of its instance file), ``class`` and
#: ``role`` (the class it comes from and its role, "boundary" or "object"), ``source``,
#: ``slice`` and ``class_names`` as a prediction's, ``settings`` (the object settings as a
#: dict) and ``unit`` (the unit of ``area`` and the other sizes in its features).
OBJECT_KIND_KEY, OBJECT_SETTINGS_KEY, UNIT_KEY = "kind", "settings", "unit"


def objects_layers(
    labels: Mapping[str, np.ndarray],
    table: Mapping[str, np.ndarray],
    kinds: Sequence[ObjectKind],
    placement: Placement,
    image_name: str,
    slice_index: int | None = None,
    *,
    unit: str = "",
    settings: Mapping[str, Any] | None = None,
) -> list[LayerData]:
    """One instance Labels layer per kind of object, placed like the prediction's mask.

    Parameters
    ----------
    labels
        Kind name to (Z, Y, X) uint32 labels of the predicted slices, unique per kind.
    table
        The features of every object (:data:`~napari_dlbio.core.measurements.FEATURE_COLUMNS`),
        the ``class`` column naming the kind; ``slice`` counts in the whole stack.
    kinds
        The kinds, in the order of the layers.
    placement, image_name, slice_index
        As in :func:`prediction_layers`.
    unit
        The unit of the physical sizes (the image layer's), kept in the metadata.
    settings
        The object settings that cut them, kept in the metadata.

    Returns
    -------
    list of LayerData
        Layers named ``"<image> <kind>"`` whose ``features`` are the kind's rows with an
        ``index`` column (napari matches a label to the row whose ``index`` is that label).
    """
    where, flat = result_placement(placement, slice_index)
    classes = np.asarray(table["class"]).astype(str)
    layers = []
    for kind in kinds:
        rows = classes == kind.name
        features = {name: np.asarray(column)[rows] for name, column in table.items()}
        data = np.asarray(labels[kind.name], dtype=np.uint32)
        meta = {
            "name": f"{image_name} {kind.name}",
            **where.meta(),
            "features": {"index": features["label"], **features},
            "opacity": 0.6,
            "metadata": {
                ROLE_KEY: OBJECTS,
                OBJECT_KIND_KEY: kind.name,
                "class": kind.class_name,
                "role": kind.role,
                "source": image_name,
                "slice": slice_index,
                OBJECT_SETTINGS_KEY: dict(settings or {}),
                UNIT_KEY: unit,
            },
        }
        layers.append((data[0] if flat else data, meta, "labels"))
    return layers


OBJECT_SCORE_COLUMNS = (
    "objects",
    "V_rand",
    "V_info",
    "F1@0.5",
    "precision",
    "recall",
    "true",
    "found",
)


def object_score_rows(scores: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table rows of object scores, one per kind of object (undefined figures None).

    Parameters
    ----------
    scores
        Kind name to :func:`~napari_dlbio.core.instance_metrics.instance_report`: V_rand and
        V_info for cells (boundary classes), matching at IoU 0.5 for every kind.
    """
    rows = []
    for name, report in scores.items():
        matching = report.get("cells", report)
        rows.append(
            {
                "objects": name,
                "V_rand": report.get("v_rand"),
                "V_info": report.get("v_info"),
                "F1@0.5": matching["f1"],
                "precision": matching["precision"],
                "recall": matching["recall"],
                "true": matching["n_true"],
                "found": matching["n_predicted"],
            }
        )
    return rows
