"""Small pieces the dock widgets share: signal connections, layer and view helpers,
tables, canvas text."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import QObject, Qt, QTimer
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem

from napari_dlbio._layers import Placement
from napari_dlbio.core.config import Task
from napari_dlbio.core.io import reread_resized_photos


def connect_while_alive(emitter: Any, callback: Callable[..., Any], widget: QObject) -> None:
    """Connect ``callback`` to a napari or psygnal event until ``widget`` is destroyed.

    A closed dock widget must not be called back by the viewer it was docked in.
    """
    emitter.connect(callback)
    widget.destroyed.connect(lambda *_: _disconnect(emitter, callback))


def _disconnect(emitter: Any, callback: Callable[..., Any]) -> None:
    # A viewer closed before the widget has already torn its events down.
    with contextlib.suppress(AttributeError, RuntimeError, ValueError):
        emitter.disconnect(callback)


class Connections:
    """Callbacks connected to napari or psygnal events until replaced by others, or until
    ``widget`` is destroyed: a widget following the layers the user chose."""

    def __init__(self, widget: QObject) -> None:
        self._widget = widget
        self._pairs: list[tuple[Any, Callable[..., Any]]] = []

    def replace(self, pairs: Sequence[tuple[Any, Callable[..., Any]]]) -> None:
        """Disconnect the callbacks connected so far, then connect each (emitter, callback)."""
        for emitter, callback in self._pairs:
            _disconnect(emitter, callback)
        self._pairs = list(pairs)
        for emitter, callback in self._pairs:
            connect_while_alive(emitter, callback, self._widget)


def placement_of(layer: Layer) -> Placement:
    """Scale and translate of ``layer`` (napari leaves the colour axis out of both)."""
    return Placement(tuple(float(s) for s in layer.scale), tuple(float(t) for t in layer.translate))


def image_data(layer: Image) -> Any:
    """The full-resolution data of an image layer, not copied (images are not painted on)."""
    return layer.data[0] if layer.multiscale else layer.data


def is_lazy(layer: Image) -> bool:
    """Whether an image layer's pixels stay on disk until read (dask, zarr, a pyramid)."""
    return bool(layer.multiscale) or not isinstance(image_data(layer), np.ndarray)


def painted_slices(image: Image, annotation: np.ndarray) -> np.ndarray | None:
    """The slices of a lazy stack that ``annotation`` paints on (None: use every slice).

    Training reads these alone, so a volume larger than memory is never read whole.
    """
    if not is_lazy(image) or len(spatial_shape(image)) != 3:
        return None
    return np.flatnonzero(annotation.reshape(len(annotation), -1).any(axis=1))


def spatial_shape(layer: Image) -> tuple[int, ...]:
    """Shape of an image layer without its colour axis."""
    shape = tuple(image_data(layer).shape)
    return shape[:-1] if layer.rgb else shape


def class_stack_metadata(layer: Layer | None) -> tuple[list[str], np.ndarray] | None:
    """Class names and per-image class indices of a leaf stack (classifier mode), if any."""
    if layer is None or not isinstance(layer, Image):
        return None
    metadata = layer.metadata
    if "class_names" not in metadata or "class_indices" not in metadata:
        return None
    return list(metadata["class_names"]), np.asarray(metadata["class_indices"], dtype=np.int64)


def task_of(layer: Layer | None) -> Task:
    """Classification for a leaf stack with class metadata, segmentation otherwise."""
    if class_stack_metadata(layer) is not None:
        return Task.CLASSIFICATION
    return Task.SEGMENTATION


def annotation_class_names(layer: Labels | None) -> list[str]:
    """Class names stored with an annotation layer (empty when it has none)."""
    if layer is None:
        return []
    return [str(name) for name in layer.metadata.get("class_names", ())]


def default_class_names(annotation: np.ndarray) -> list[str]:
    """Class names for an annotation without any: background and one per painted label."""
    classes = max(int(annotation.max(initial=0)), 2)
    return ["background", *(f"class {k}" for k in range(1, classes))]


def slice_at(viewer: Any, layer: Layer) -> int:
    """Index along the first axis of ``layer`` of the slice the viewer shows (unclipped)."""
    if layer.ndim < 3:
        return 0
    world = viewer.dims.point[viewer.dims.ndim - layer.ndim]
    return round((world - layer.translate[0]) / layer.scale[0])


def current_index(viewer: Any, layer: Layer) -> int:
    """Like :func:`slice_at`, clipped to the slices ``layer`` has."""
    return int(np.clip(slice_at(viewer, layer), 0, layer.level_shapes[0][0] - 1))


def centre_view_on(viewer: Any, point: Sequence[float]) -> None:
    """Show the slice of a (Z, Y, X) or (Y, X) world ``point`` and centre the camera on it."""
    if len(point) == 3:
        viewer.dims.set_point(viewer.dims.ndim - 3, point[0])
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: scene
    camera.center = tuple(point[-2:])


_MAX_COLUMN_WIDTH = 150  # pixels


def fill_table(
    table: QTableWidget, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Show ``rows`` (dicts) in ``table``: numbers with 3 decimals, missing values as "n/a"."""
    table.setSortingEnabled(False)
    table.clear()
    table.setColumnCount(len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            value = row.get(column)
            if value is None:
                text = "n/a" if column not in ("slice", "true") else ""
            elif isinstance(value, float):
                text = f"{value:.3f}"
            else:
                text = str(value)
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            table.setItem(r, c, item)
    table.resizeColumnsToContents()
    # Long class names ("Tomato_Spider_mites_Two_spotted_spider_mite") would push the
    # other columns out of a dock: they are shortened in the middle, in full on hover.
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    for c in range(len(columns)):
        table.setColumnWidth(c, min(table.columnWidth(c), _MAX_COLUMN_WIDTH))
    # No minimum width from the contents: a dock that widened with every result would
    # narrow the canvas under the user's eyes (and redraw it in full); wider tables scroll.
    table.horizontalHeader().setStretchLastSection(True)


def text_overlay(viewer: Any) -> Any:
    """The canvas text overlay (``viewer.canvas.overlays.text`` since napari 0.9)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    return overlays.text if overlays is not None else viewer.text_overlay


def show_canvas_text(viewer: Any, text: str) -> None:
    """Write ``text`` in the canvas's top-left corner (notifications use the bottom right)."""
    overlay = text_overlay(viewer)
    overlay.text = text
    overlay.position = "top_left"
    overlay.visible = True


def single_shot_timer(parent: QObject, milliseconds: int, slot: Callable[[], Any]) -> QTimer:
    """A timer that calls ``slot`` once, ``milliseconds`` after its last (re)start."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(milliseconds)
    timer.timeout.connect(slot)
    return timer


def training_images(
    image: Image, slices: np.ndarray | None = None
) -> np.ndarray | list[np.ndarray]:
    """The images to train on: a copy of the layer's (only ``slices`` when given), with each
    photo of a leaf stack that the reader resized read again from its file (resized once, as
    ``dlbio train`` does)."""
    data = image_data(image)
    images = np.asarray(data if slices is None else data[slices])
    if class_stack_metadata(image) is None:
        return images
    return reread_resized_photos(images, image.metadata)
