"""Small pieces the dock widgets share: layer pickers, path fields, layer helpers."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
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

from napari_dlbio._layers import ANNOTATION, ROLE_KEY, LayerData, Placement

#: Added to the name of a one-slice result shown next to a whole-stack result.
SLICE_SUFFIX = "(slice)"


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


class PathEdit(QWidget):
    """A path field with a "..." button that opens a file or folder dialog.

    Parameters
    ----------
    folder
        Whether a folder (rather than a file) is chosen.
    save
        Whether the dialog asks for a new file name.
    """

    def __init__(self, folder: bool, save: bool = True, parent: QWidget | None = None):
        super().__init__(parent)
        self._folder = folder
        self._save = save
        self.edit = QLineEdit()
        browse = QPushButton("...")
        browse.setMaximumWidth(32)
        browse.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(browse)

    def text(self) -> str:
        """The path typed or chosen (stripped; empty when none)."""
        return self.edit.text().strip()

    def setText(self, text: str) -> None:
        """Set the path."""
        self.edit.setText(text)

    def _browse(self) -> None:
        if self._folder:
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.text())
        elif self._save:
            path, _ = QFileDialog.getSaveFileName(self, "Save as", self.text())
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Open", self.text())
        if path:
            self.edit.setText(path)


def placement_of(layer: Layer) -> Placement:
    """Scale and translate of ``layer`` (napari leaves the colour axis out of both)."""
    return Placement(tuple(float(s) for s in layer.scale), tuple(float(t) for t in layer.translate))


def image_data(layer: Image) -> Any:
    """The full-resolution data of an image layer, not copied (images are not painted on)."""
    return layer.data[0] if layer.multiscale else layer.data


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


def annotation_class_names(layer: Labels | None) -> list[str]:
    """Class names stored with an annotation layer (empty when it has none)."""
    if layer is None:
        return []
    return [str(name) for name in layer.metadata.get("class_names", ())]


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
    header = table.horizontalHeader()
    header.setStretchLastSection(True)
    table.setMinimumWidth(min(header.length() + table.verticalHeader().width() + 24, 600))


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


def show_layers_in_turns(
    viewer: Any, layers: Sequence[Layer | LayerData]
) -> Generator[None, None, list[Layer]]:
    """:func:`show_layers` one layer at a time, yielding after each.

    napari blocks its window for 200-350 ms to add a layer on a software-GL machine; a
    job's ``on_result`` that yields lets the window redraw and react between layers.
    The layer the user had active stays active (see :func:`keeping_active_layer`).
    """
    shown: list[Layer] = []
    with keeping_active_layer(viewer):
        for item in layers:
            shown += show_layers(viewer, [item])
            yield
    return shown


@contextlib.contextmanager
def keeping_active_layer(viewer: Any) -> Iterator[None]:
    """Make the layer active before the block active again after it.

    napari activates every layer it adds: a result arriving while the user paints would
    otherwise take the brush away.
    """
    active = viewer.layers.selection.active
    try:
        yield
    finally:
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active


def show_layers(viewer: Any, layers: Sequence[Layer | LayerData]) -> list[Layer]:
    """Add result layers, replacing the plugin's earlier result of the same name and role.

    An earlier result of the same kind and dimensions is updated in place (cheap, and the
    user's display settings stay); other earlier results are swapped for the new layer.
    Nothing the user made or painted is ever replaced: layers without a role, and
    annotation layers, get a new layer with a free name next to them.  A result never
    shrinks: a one-slice result next to a whole-stack one is shown as its own
    ``"<name> (slice)"`` layer.  Layers may come ready-made (built in a job's thread, which
    keeps that work off the GUI thread) or as layer data tuples.
    """
    shown = []
    for item in layers:
        new = item if isinstance(item, Layer) else Layer.create(item[0], dict(item[1]), item[2])
        old = _replaced_by(viewer, new)
        if old is None:
            viewer.add_layer(new)
        elif _update_in_place(old, new):
            new = old
        else:
            index = viewer.layers.index(old)
            viewer.layers.remove(old)
            viewer.layers.insert(index, new)
        shown.append(new)
    return shown


def _replaced_by(viewer: Any, new: Layer) -> Layer | None:
    """The plugin's earlier result that ``new`` replaces, if any (``new`` may be renamed)."""
    role = new.metadata.get(ROLE_KEY)
    old = viewer.layers[new.name] if new.name in viewer.layers else None  # noqa: SIM401
    if old is None or role in (None, ANNOTATION) or old.metadata.get(ROLE_KEY) != role:
        return None
    if old.metadata.get("slice") is None and new.metadata.get("slice") is not None:
        new.name = f"{new.name} {SLICE_SUFFIX}"
        return _replaced_by(viewer, new)
    return old


def remove_layers_with_role(viewer: Any, role: str) -> None:
    """Remove the plugin's result layers of ``role`` (marks it drew for the user)."""
    for layer in list(viewer.layers):
        if layer.metadata.get(ROLE_KEY) == role:
            viewer.layers.remove(layer)


def _update_in_place(old: Layer, new: Layer) -> bool:
    """Give ``old`` the data and placement of ``new`` if they are layers of one kind."""
    if type(old) is not type(new) or old.ndim != new.ndim:
        return False
    old.data = new.data
    # Setting an unchanged placement still re-checks the viewer's dimensions and redraws
    # (15 ms a time on a software-GL machine).
    if not np.array_equal(old.scale, new.scale):
        old.scale = new.scale
    if not np.array_equal(old.translate, new.translate):
        old.translate = new.translate
    old.metadata = dict(new.metadata)
    if isinstance(new, Labels):
        old.features = new.features
    return True


def single_shot_timer(parent: QObject, milliseconds: int, slot: Callable[[], Any]) -> QTimer:
    """A timer that calls ``slot`` once, ``milliseconds`` after its last (re)start."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(milliseconds)
    timer.timeout.connect(slot)
    return timer
