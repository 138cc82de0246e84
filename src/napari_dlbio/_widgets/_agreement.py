"""Accept a prediction into an annotation and score their agreement (numpy, no Qt).

The Correct & fine-tune widget copies a predicted mask into the user's annotation, keeps
the pixels an Accept wrote apart from the user's strokes, and shows how a newer prediction
agrees with both, with marks drawn on one slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from napari.layers import Labels

from napari_dlbio._layers import ROLE_KEY, LayerData
from napari_dlbio._widgets._common import annotation_class_names, placement_of
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.labels import classes_from_annotation, prediction_edit
from napari_dlbio.core.metrics import segmentation_report

DISAGREEMENT = "disagreement"
"""Role of the layer marking painted pixels where the prediction says otherwise."""


ACCEPTED = "accepted"
"""Role of the layer outlining, on one slice, the pixels that hold an accepted prediction."""


#: Accepts whose pixels an undo can bring back as accepted (each costs a byte per pixel).
ACCEPTS_KEPT = 4


@dataclass
class AcceptedPixels:
    """Which pixels of an annotation layer hold an accepted prediction, not the user's strokes.

    The values each Accept wrote are kept and compared with the layer's: a pixel painted
    over with another class or erased no longer matches and is a stroke (or unannotated)
    again, so no paint event needs reading.  The last :data:`ACCEPTS_KEPT` accepts are
    kept, so undoing an Accept brings the previous one's pixels back as accepted.
    """

    layer: int | None = None  # id() of the annotation layer
    writes: list[np.ndarray] = field(default_factory=list)  # values written, 0 elsewhere

    def mask(self, annotation: Labels, z: int | None = None) -> np.ndarray:
        """Boolean mask of the accepted pixels of ``annotation`` (of slice ``z`` only)."""
        data = np.asarray(annotation.data if z is None else annotation.data[z])
        accepted = np.zeros(data.shape, bool)
        for values in self._writes(annotation):
            values = values if z is None else values[z]
            accepted |= (values != 0) & (data == values)
        return accepted

    def record(
        self, annotation: Labels, indices: tuple[np.ndarray, ...], values: np.ndarray
    ) -> None:
        """Note an accept edit (as given to ``data_setitem``) before it is applied."""
        data = np.asarray(annotation.data)
        writes = self._writes(annotation)
        # The pixels accepted before and left alone stay accepted with their values.
        written = np.where(self.mask(annotation), data, 0).astype(data.dtype)
        written[indices] = values
        self.layer = id(annotation)
        self.writes = [*writes[-(ACCEPTS_KEPT - 1) :], written]

    def _writes(self, annotation: Labels) -> list[np.ndarray]:
        fits = all(values.shape == annotation.data.shape for values in self.writes)
        return self.writes if self.layer == id(annotation) and fits else []


def aligned(prediction: Labels, annotation: Labels) -> tuple[int, np.ndarray]:
    """The prediction as (Z', Y, X) and the annotation slice its first slice lies on."""
    mask = np.asarray(prediction.data)
    shape = annotation.data.shape
    if annotation.ndim == 2 and mask.shape in (shape, (1, *shape)):
        return 0, mask.reshape(1, *shape)
    if annotation.ndim != 3 or mask.ndim != 3 or mask.shape[1:] != shape[1:]:
        raise InputDataError(
            f"the prediction {mask.shape} does not fit the annotation {shape}; choose the "
            "mask predicted for this image."
        )
    first = round((prediction.translate[0] - annotation.translate[0]) / annotation.scale[0])
    return int(first), mask


def accept_edit(
    annotation: Labels,
    prediction: Labels,
    index: int | None,
    overwrite: bool,
    accepted: AcceptedPixels,
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The undoable edit copying the prediction into slice ``index`` (``None``: all slices).

    Unpainted pixels and pixels of an earlier Accept take the prediction; the user's
    strokes are kept unless ``overwrite``.  Returns full-dimensional indices and values
    for ``annotation.data_setitem``.
    """
    stack = annotation.ndim == 3
    data = annotation.data if stack else annotation.data[np.newaxis]
    first, mask = aligned(prediction, annotation)
    if index is None:
        low, high = max(first, 0), min(first + len(mask), len(data))
    else:
        low, high = index, index + 1
    if low < first or high > first + len(mask) or low >= high:
        raise InputDataError(f"the prediction does not cover slice {low}; predict it first.")
    before = accepted.mask(annotation)
    before = before if stack else before[np.newaxis]
    indices, values = prediction_edit(
        np.asarray(data[low:high]),
        mask[low - first : high - first],
        overwrite=overwrite,
        accepted=before[low:high],
    )
    return ((indices[0] + low, *indices[1:]) if stack else indices[1:]), values


def agreement(
    annotation: Labels, prediction: Labels, z: int, accepted: np.ndarray
) -> tuple[str, np.ndarray]:
    """How the prediction agrees with slice ``z``: IoU / Dice per class on the pixels the
    user painted, and the share of the accepted pixels it still matches, as text; and the
    (Y, X) mask of painted pixels it disagrees with.

    ``accepted`` is the (Y, X) mask of pixels of slice ``z`` that hold an accepted
    prediction (see :class:`AcceptedPixels`): they are not the user's strokes.
    """
    first, mask = aligned(prediction, annotation)
    if not first <= z < first + len(mask):
        raise InputDataError(f"the prediction does not cover slice {z}; predict it.")
    painted = np.asarray(annotation.data[z] if annotation.ndim == 3 else annotation.data)
    classes, annotated = classes_from_annotation(painted)
    strokes = annotated & ~accepted
    predicted = mask[z - first]
    names = [str(name) for name in prediction.metadata.get("class_names", ())]
    names = names or annotation_class_names(annotation)
    n_classes = max(int(classes.max()), int(predicted.max())) + 1
    names += [f"class {k}" for k in range(len(names), n_classes)]
    report = segmentation_report(classes, predicted, names, strokes)
    lines = [f"slice {z}: {int(strokes.sum())} painted pixels"]
    for name, figures in report["classes"].items():
        iou, dice = (_figure(figures[key]) for key in ("iou", "dice"))
        lines.append(f"{name}: IoU {iou}, Dice {dice}")
    if accepted.any():
        same = float(np.mean(classes[accepted] == predicted[accepted]))
        lines.append(
            f"accepted prediction: {int(accepted.sum())} pixels, {100 * same:.1f} % as now"
        )
    return "\n".join(lines), strokes & (classes != predicted)


def accepted_layer(accepted: np.ndarray, annotation: Labels, z: int) -> LayerData:
    """A one-slice Labels layer outlining the accepted pixels of slice ``z`` of ``annotation``.

    Strokes and an accepted prediction share the annotation's colours; the outline tells
    them apart.
    """
    from skimage.segmentation import find_boundaries

    outline = find_boundaries(accepted, mode="inner")
    return _slice_marks(outline, annotation, z, f"{annotation.name} accepted", ACCEPTED, "#ffffff")


def disagreement_layer(wrong: np.ndarray, annotation: Labels, z: int) -> LayerData:
    """A one-slice Labels layer on slice ``z`` of ``annotation`` marking ``wrong`` pixels."""
    return _slice_marks(
        wrong, annotation, z, f"{annotation.name} disagreement", DISAGREEMENT, "#ff0000"
    )


def _slice_marks(
    marked: np.ndarray,
    annotation: Labels,
    z: int,
    name: str,
    role: str,
    colour: str,
) -> LayerData:
    data, where = marked.astype(np.uint8), placement_of(annotation)
    if annotation.ndim == 3:
        data, where = data[np.newaxis], where.at_slice(z)
    meta = {
        "name": name,
        **where.meta(),
        "colormap": {None: "transparent", 0: "transparent", 1: colour},
        "metadata": {ROLE_KEY: role, "slice": z},
        "opacity": 0.8,
    }
    return data, meta, "labels"


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
