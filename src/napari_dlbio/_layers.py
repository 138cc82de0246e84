"""Pure adapters from results to napari layer data: no Qt, no TensorFlow.

Predictions, metrics and Grad-CAM maps become ``(data, meta, layer_type)`` tuples (napari's
LayerDataTuple) aligned with the image they came from: the image's scale and translate are
copied, and a result for a single slice is shifted onto that slice.  Label colours are shared
between the annotation (1 = background, k + 1 = class k) and the predicted mask (k = class k),
so a class keeps its colour from painting to prediction.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_dlbio.core.uncertainty import entropy_map

LayerData = tuple[Any, dict[str, Any], str]

ROLE_KEY = "dlbio_role"
"""Metadata key naming what a layer made by the plugin holds."""
ANNOTATION, PREDICTION, PROBABILITY, UNCERTAINTY, GRAD_CAM, OBJECTS = (
    "annotation",
    "prediction",
    "probability",
    "uncertainty",
    "grad-cam",
    "objects",
)

# Background strokes must stand out on grey EM: a grey one changed the brightness by 18/255.
_BACKGROUND_COLOUR = "#2a6cff"
_CLASS_COLOURS = (
    "#ffb000",
    "#00c2ff",
    "#ff3d7f",
    "#6bd425",
    "#a259ff",
    "#ff6f00",
    "#00e0a1",
    "#f5e663",
    "#b07a3c",
    "#ff9ecf",
)


@dataclass(frozen=True)
class Placement:
    """Where an image lies in the world: its per-axis scale and translate (no colour axis)."""

    scale: tuple[float, ...]
    translate: tuple[float, ...]

    @property
    def is_stack(self) -> bool:
        """Whether the image has a slice axis in front of Y and X."""
        return len(self.scale) >= 3

    def for_slices(self) -> Placement:
        """Placement of a (Z, Y, X) result; a 2D image gets a unit Z axis in front."""
        if self.is_stack:
            return self
        return Placement((1.0, *self.scale), (0.0, *self.translate))

    def at_slice(self, index: int) -> Placement:
        """Placement of a result whose first slice belongs at slice ``index`` of the stack."""
        whole = self.for_slices()
        translate = (whole.translate[0] + index * whole.scale[0], *whole.translate[1:])
        return Placement(whole.scale, translate)

    def meta(self) -> dict[str, tuple[float, ...]]:
        """The ``scale`` and ``translate`` keywords of a layer."""
        return {"scale": self.scale, "translate": self.translate}


def class_colour(class_index: int) -> str:
    """Display colour of class ``class_index`` (0 = background)."""
    if class_index == 0:
        return _BACKGROUND_COLOUR
    return _CLASS_COLOURS[(class_index - 1) % len(_CLASS_COLOURS)]


def annotation_colormap(n_classes: int) -> dict[int | None, str]:
    """Label colours of an annotation: 0 (not annotated) transparent, k + 1 for class k."""
    colours: dict[int | None, str] = {None: "transparent", 0: "transparent"}
    colours.update({k + 1: class_colour(k) for k in range(n_classes)})
    return colours


def mask_colormap(n_classes: int) -> dict[int | None, str]:
    """Label colours of a predicted mask: background transparent, class k as in annotations."""
    colours: dict[int | None, str] = {None: "transparent", 0: "transparent"}
    colours.update({k: class_colour(k) for k in range(1, n_classes)})
    return colours


def annotation_layer(
    shape: tuple[int, ...], class_names: Sequence[str], placement: Placement, name: str
) -> LayerData:
    """An empty annotation Labels layer matching an image of spatial ``shape``.

    Parameters
    ----------
    shape
        Spatial shape of the image, (Y, X) or (Z, Y, X), without a colour axis.
    class_names
        Classes, background first; class k is painted with label k + 1.
    placement
        The image's scale and translate.
    name
        Layer name.
    """
    names = list(class_names)
    features = {
        "index": list(range(len(names) + 1)),
        "class": ["not annotated", *names],
    }
    meta = {
        "name": name,
        **placement.meta(),
        "colormap": annotation_colormap(len(names)),
        "features": features,
        "metadata": {ROLE_KEY: ANNOTATION, "class_names": names},
        "opacity": 0.6,
    }
    return np.zeros(shape, dtype=np.uint8), meta, "labels"


def prediction_layers(
    mask: np.ndarray,
    probabilities: np.ndarray | None,
    class_names: Sequence[str],
    placement: Placement,
    image_name: str,
    slice_index: int | None = None,
    boundary_classes: Sequence[str] = (),
) -> list[LayerData]:
    """Mask, per-class probabilities and uncertainty of a segmentation, aligned with the image.

    Parameters
    ----------
    mask
        Predicted classes (Z, Y, X), 0 = background.
    probabilities
        Class probabilities (Z, Y, X, K); None when they were not kept (the mask alone).
    class_names
        The model's classes, background first.
    placement
        Scale and translate of the image that was predicted.
    image_name
        Name of that image layer; the new layers are named after it.
    slice_index
        The stack index of the first predicted slice (of one slice or a range); ``None``
        for the whole stack.
    boundary_classes
        The model's boundary classes (kept in the mask's metadata: the class roles).

    Returns
    -------
    list of LayerData
        The mask Labels layer first, then one probability Image layer per class that is
        not background, then the uncertainty (entropy) Image layer.  Lazy arrays (dask,
        read from a store on disk) stay lazy and get no uncertainty layer: its users read
        a map whole.
    """
    names = list(class_names)
    where, flat = result_placement(placement, slice_index)
    if flat:
        mask = mask[0]
        probabilities = None if probabilities is None else probabilities[0]
    origin = {"source": image_name, "slice": slice_index, "class_names": names}
    layers: list[LayerData] = [
        (
            _layer_array(mask, np.uint8),
            {
                "name": f"{image_name} mask",
                **where.meta(),
                "colormap": mask_colormap(len(names)),
                "features": {"index": list(range(len(names))), "class": names},
                "metadata": {
                    ROLE_KEY: PREDICTION,
                    **origin,
                    "boundary_classes": list(boundary_classes),
                },
                "opacity": 0.5,
            },
            "labels",
        )
    ]
    if probabilities is None:
        return layers
    for k in range(1, len(names)):
        layers.append(
            (
                _layer_array(probabilities[..., k], np.float32),
                {
                    "name": f"{image_name} P({names[k]})",
                    **where.meta(),
                    "colormap": "magma",
                    "contrast_limits": (0.0, 1.0),
                    "blending": "additive",
                    "visible": False,
                    "metadata": {ROLE_KEY: PROBABILITY, "class": names[k], **origin},
                },
                "image",
            )
        )
    if not isinstance(probabilities, np.ndarray):
        return layers
    layers.append(
        (
            entropy_map(probabilities),
            {
                "name": f"{image_name} uncertainty",
                **where.meta(),
                "colormap": "viridis",
                "contrast_limits": (0.0, 1.0),
                "visible": False,
                "metadata": {ROLE_KEY: UNCERTAINTY, **origin},
            },
            "image",
        )
    )
    return layers


def _layer_array(data: Any, dtype: type) -> Any:
    """``data`` as ``dtype``: a numpy array contiguous, a lazy (dask) one still lazy."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data, dtype=dtype)
    return data.astype(dtype)


def result_placement(placement: Placement, slice_index: int | None) -> tuple[Placement, bool]:
    """Where (Z, Y, X) results of an image lie, and whether they are shown as (Y, X).

    A result of some slices starts on its first slice (``slice_index``); a 2D image's
    results stay 2D, to match it axis for axis.
    """
    if slice_index is not None:
        return placement.at_slice(slice_index), False
    if placement.is_stack:
        return placement, False
    return placement, True


def gradcam_layer(
    heatmap: np.ndarray, placement: Placement, image_name: str, index: int | None
) -> LayerData:
    """A Grad-CAM heatmap overlaid on image ``index`` of a stack (or on a single image)."""
    if index is None:
        where, data = placement, np.asarray(heatmap, dtype=np.float32)
    else:
        where, data = placement.at_slice(index), np.asarray(heatmap, dtype=np.float32)[None]
    meta = {
        "name": f"{image_name} Grad-CAM",
        **where.meta(),
        "colormap": "inferno",
        "blending": "additive",
        "opacity": 0.5,
        "contrast_limits": (0.0, 1.0),
        "metadata": {ROLE_KEY: GRAD_CAM, "source": image_name, "slice": index},
    }
    return data, meta, "image"


def metrics_rows(report: Mapping[str, Any], slice_offset: int = 0) -> list[dict[str, Any]]:
    """Table rows of a segmentation report: overall per class, then per slice and class.

    Parameters
    ----------
    report
        The dict of :func:`napari_dlbio.core.metrics.segmentation_report`.
    slice_offset
        Added to the report's slice numbers (a one-slice prediction of slice z reports 0).

    Returns
    -------
    list of dict
        Rows with keys ``scope`` ("overall" or "slice"), ``slice`` (None overall),
        ``class``, ``iou``, ``dice`` and ``pixels``; undefined figures are None.
    """
    rows = [_row("overall", None, name, figures) for name, figures in report["classes"].items()]
    for entry in report["slices"]:
        z = entry["slice"] + slice_offset
        rows.extend(_row("slice", z, name, figures) for name, figures in entry["classes"].items())
    return rows


def metrics_features(report: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Features table of a mask layer: one row per label (class index) with overall figures."""
    names = list(report["classes"])
    figures = [report["classes"][name] for name in names]
    return {
        "index": list(range(len(names))),
        "class": names,
        "iou": [_nan_if_none(f["iou"]) for f in figures],
        "dice": [_nan_if_none(f["dice"]) for f in figures],
        "pixels": [f["pixels"] for f in figures],
    }


def metrics_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of :func:`metrics_rows` (empty cells for undefined figures)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["scope", "slice", "class", "iou", "dice", "pixels"], lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


def slice_metrics_text(rows: Sequence[Mapping[str, Any]], slice_index: int) -> str:
    """One line of IoU / Dice per class for ``slice_index`` (background left out)."""
    figures = [row for row in rows if row["scope"] == "slice" and row["slice"] == slice_index]
    # Rows follow the class order, background first: its IoU is high and says little.
    parts = [
        f"{row['class']} IoU {_figure(row['iou'])} Dice {_figure(row['dice'])}"
        for row in figures[1:]
    ]
    if not parts:
        return f"slice {slice_index}: no metrics"
    return f"slice {slice_index}: " + " | ".join(parts)


def classification_rows(
    probabilities: np.ndarray,
    class_names: Sequence[str],
    true_classes: Sequence[int] | None = None,
    first_index: int = 0,
    seen_in_training: Sequence[bool] | None = None,
) -> list[dict[str, Any]]:
    """Table rows of a classification: image number, predicted class, its probability,
    truth, and whether the model was trained on the image ("trained on": yes / no).

    Parameters
    ----------
    probabilities
        (N, K) class probabilities of images ``first_index`` .. ``first_index + N - 1``.
    class_names
        The model's classes.
    true_classes
        Known class index of every image of the stack (all N + first_index), if any.
    first_index
        Stack index of the first predicted image.
    seen_in_training
        Per predicted image, whether the model was trained on it.
    """
    names = list(class_names)
    seen = [False] * len(probabilities) if seen_in_training is None else seen_in_training
    rows = []
    for offset, row in enumerate(np.asarray(probabilities)):
        index = first_index + offset
        best = int(np.argmax(row))
        true = None if true_classes is None else names[int(true_classes[index])]
        rows.append(
            {
                "image": index,
                "predicted": names[best],
                "probability": float(row[best]),
                "true": true,
                "trained on": "yes" if seen[offset] else "no",
            }
        )
    return rows


def accuracy_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Accuracy of classified rows with a known class, apart for the images the model was
    trained on (a model is right on most of them whether it learned anything or not)."""
    parts = []
    for trained, words in ((False, "not seen in training"), (True, "it was trained on")):
        known = [r for r in rows if r["true"] is not None and (r["trained on"] == "yes") is trained]
        if known:
            right = sum(row["true"] == row["predicted"] for row in known)
            parts.append(f"{right / len(known):.2f} on {len(known)} image(s) {words}")
    if not parts:
        return "Done: the classes are in the table (no true classes to score against)."
    return "Accuracy: " + "; ".join(parts) + "."


def classification_text(rows: Sequence[Mapping[str, Any]], image_index: int) -> str:
    """Overlay text for the current image of a classified stack."""
    for row in rows:
        if row["image"] == image_index:
            truth = "" if row["true"] is None else f" (true: {row['true']})"
            return f"image {image_index}: {row['predicted']} p={row['probability']:.2f}{truth}"
    return f"image {image_index}: not predicted"


def _row(scope: str, z: int | None, name: str, figures: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "scope": scope,
        "slice": z,
        "class": name,
        "iou": figures["iou"],
        "dice": figures["dice"],
        "pixels": figures["pixels"],
    }


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
