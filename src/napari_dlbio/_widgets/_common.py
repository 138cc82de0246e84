"""Small pieces the dock widgets share: layer pickers, path fields, layer helpers."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtCore import QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from napari_dlbio._layers import ROLE_KEY, Placement
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


class LayerCombo(QComboBox):
    """A drop-down of the viewer's layers of one type, kept up to date by name.

    Parameters
    ----------
    viewer
        The napari viewer.
    layer_type
        ``napari.layers.Image`` or ``napari.layers.Labels``.
    prefer
        Layers to choose by default (the newest one), e.g. the user's own annotation rather
        than a ground truth that came with the sample, until the user picks a layer.
    """

    def __init__(
        self,
        viewer: Any,
        layer_type: type[Layer],
        parent: QWidget | None = None,
        *,
        prefer: Callable[[Layer], bool] | None = None,
    ):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._prefer = prefer
        self._picked = False
        self._renamable: weakref.WeakSet[Layer] = weakref.WeakSet()
        self.activated.connect(self._picked_by_user)
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            connect_while_alive(event, self.refresh, self)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        current = self.currentText()
        layers = [layer for layer in self._viewer.layers if isinstance(layer, self._type)]
        names = [layer.name for layer in layers]
        for layer in layers:
            if layer not in self._renamable:
                connect_while_alive(layer.events.name, self.refresh, self)
                self._renamable.add(layer)
        choice = current if current in names else None
        preferred = [layer.name for layer in layers if self._prefer and self._prefer(layer)]
        if preferred and not self._picked:
            choice = preferred[-1]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if choice is not None:
            self.setCurrentText(choice)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentIndexChanged.emit(self.currentIndex())

    def layer(self) -> Layer | None:
        """The chosen layer, or ``None`` when there is none."""
        name = self.currentText()
        if name and name in self._viewer.layers:
            return self._viewer.layers[name]
        return None

    def select(self, layer: Layer) -> None:
        """Choose ``layer`` (as if the user had picked it)."""
        self._picked = True
        self.setCurrentText(layer.name)

    def _picked_by_user(self, *_: Any) -> None:
        self._picked = True


def has_role(*roles: str) -> Callable[[Layer], bool]:
    """A ``prefer`` test of :class:`LayerCombo`: layers the plugin made in one of ``roles``."""
    return lambda layer: layer.metadata.get(ROLE_KEY) in roles


#: The file-dialog filter of bioimage.io model packages.
PACKAGE_FILTER = "bioimage.io package (*.zip)"


class PathEdit(QWidget):
    """A path field with a "..." button that opens a file or folder dialog.

    Parameters
    ----------
    folder
        Whether a folder (rather than a file) is chosen.
    save
        Whether the dialog asks for a new file name.
    package
        Whether a bioimage.io model package (``.zip``) may be chosen: with ``folder``, a
        second button ("package...") opens a file dialog for one beside the folder dialog
        ("folder..."); without, the file dialog shows ``.zip`` files and a chosen name gets
        the suffix.
    """

    def __init__(
        self,
        folder: bool,
        save: bool = True,
        parent: QWidget | None = None,
        *,
        package: bool = False,
    ):
        super().__init__(parent)
        self._folder = folder
        self._save = save
        self._package = package
        self.edit = QLineEdit()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        # Two buttons rather than one dialog for both: Qt's file dialogs choose either
        # files or folders, and the native ones ignore the options that would mix them.
        self.browse_button = QPushButton("folder..." if folder and package else "...")
        self.browse_button.clicked.connect(self._browse)
        layout.addWidget(self.browse_button)
        self.package_button: QPushButton | None = None
        if folder and package:
            self.browse_button.setToolTip("Choose a model folder")
            self.package_button = QPushButton("package...")
            self.package_button.setToolTip("Choose a bioimage.io model package (.zip)")
            self.package_button.clicked.connect(self._browse_package)
            layout.addWidget(self.package_button)
        else:
            self.browse_button.setMaximumWidth(32)

    def text(self) -> str:
        """The path typed or chosen (stripped; empty when none)."""
        return self.edit.text().strip()

    def setText(self, text: str) -> None:
        """Set the path."""
        self.edit.setText(text)

    def _browse(self) -> None:
        file_filter = PACKAGE_FILTER if self._package else ""
        if self._folder:
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.text())
        elif self._save:
            path, _ = QFileDialog.getSaveFileName(self, "Save as", self.text(), file_filter)
            if path and self._package and not path.lower().endswith(".zip"):
                path += ".zip"
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Open", self.text(), file_filter)
        if path:
            self.edit.setText(path)

    def _browse_package(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a bioimage.io package", self.text(), PACKAGE_FILTER
        )
        if path:
            self.edit.setText(path)


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
