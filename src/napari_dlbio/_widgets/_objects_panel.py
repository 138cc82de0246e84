"""The Objects section of Predict & inspect: settings, a summary and a table of the objects.

A prediction's objects (one instance Labels layer per kind, see
:func:`~napari_dlbio._layers.objects_layers`) are found in the prediction's job; this panel
chooses the settings, cuts them again from the last prediction in a job of its own, and
shows the objects of the slice the viewer is on: a count and median size per kind, and a
sortable table whose rows select their object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, FloatSpinBox, PushButton
from napari.layers import Labels, Layer
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QLabel,
    QProgressBar,
    QTableWidget,
    QVBoxLayout,
)

from napari_dlbio._object_layers import OBJECT_KIND_KEY, OBJECT_SETTINGS_KEY, UNIT_KEY
from napari_dlbio._widgets._common import centre_view_on, connect_while_alive
from napari_dlbio._widgets._jobs import find_objects
from napari_dlbio._widgets._object_jobs import FoundObjects, ObjectInput
from napari_dlbio._widgets._objects_table import (
    fill_objects_table,
    first_slice,
    object_plane,
    objects_summary,
    rows_at,
    table_slice,
)
from napari_dlbio._widgets._result_layers import show_layers_in_turns
from napari_dlbio._widgets._worker import Job
from napari_dlbio.core.events import RunState
from napari_dlbio.core.object_settings import ObjectSettings

_NO_OBJECTS = "No objects yet: predict with 'find objects' ticked."


def unit_of(layer: Layer) -> str:
    """The unit of a layer's Y and X axes as users write it ("nm", "µm"), or ""."""
    units = getattr(layer, "units", None)  # napari >= 0.6
    if not units:
        return ""
    unit = format(units[-1], "~")
    return "" if unit == "pixel" else unit


class ObjectsPanel(QGroupBox):
    """Objects of the last prediction: settings, "Find objects again", summary and table.

    Parameters
    ----------
    viewer
        The napari viewer.
    bar
        The widget's progress bar, for the "Find objects again" job.
    on_running, on_done
        Called with True when that job starts, and with its final state (the widget's
        buttons and status).
    on_scores
        Called with the object scores of the objects cut again (and why there are none)
        when the last prediction was scored.
    """

    def __init__(
        self,
        viewer: Any,
        bar: QProgressBar,
        on_running: Callable[[bool], None],
        on_done: Callable[[RunState], None],
        on_scores: Callable[[dict[str, Any] | None, str | None], None],
    ) -> None:
        super().__init__("Objects")
        self.viewer = viewer
        self.job: Job | None = None
        self._bar = bar
        self._on_running = on_running
        self._on_done = on_done
        self._on_scores = on_scores
        self._input: ObjectInput | None = None
        self._layers: list[Labels] = []
        self._generation = 0  # counts the results shown, to list a new one's objects
        self._shown: tuple[Any, ...] | None = None
        self._rows: list[dict[str, Any]] = []
        self._empty_text = _NO_OBJECTS
        defaults = ObjectSettings()
        self.find_check = CheckBox(value=True, text="find objects")
        self.find_check.tooltip = (
            "Cut the prediction into objects: the cells a boundary class (membrane) "
            "encloses, and the regions of every other class (mitochondria)."
        )
        self.smoothing = FloatSpinBox(value=defaults.smoothing, min=0.0, max=20.0, step=0.5)
        self.smoothing.tooltip = "Gaussian sigma (pixels) applied to the boundary probability."
        self.seed_threshold = FloatSpinBox(
            value=defaults.seed_threshold, min=0.01, max=0.99, step=0.05
        )
        self.seed_threshold.tooltip = (
            "Regions where the boundary probability is below this seed one cell each: lower "
            "splits more, higher merges cells through faint membranes."
        )
        self.through_stack = CheckBox(value=defaults.through_stack, text="through the stack (3D)")
        self.find_again_button = PushButton(text="Find objects again")
        self.summary = QLabel(_NO_OBJECTS)
        self.summary.setWordWrap(True)
        self.table = QTableWidget()
        self.table.setMinimumHeight(160)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        form = QFormLayout()
        form.addRow(self.find_check.native)
        form.addRow("smoothing (px)", self.smoothing.native)
        form.addRow("seed threshold", self.seed_threshold.native)
        form.addRow(self.through_stack.native)
        form.addRow(self.find_again_button.native)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        self.find_again_button.changed.connect(self.find_again)
        self.table.cellClicked.connect(self.select_row)
        connect_while_alive(viewer.dims.events.current_step, self.refresh, self)
        self.set_input(None)

    def requested(self) -> ObjectSettings | None:
        """The settings to find a prediction's objects with; None when not to find them."""
        return self.settings() if self.find_check.value else None

    def settings(self) -> ObjectSettings:
        """The settings of the form (the spin boxes' ranges keep them valid)."""
        return ObjectSettings().replace(
            smoothing=float(self.smoothing.value),
            seed_threshold=float(self.seed_threshold.value),
            through_stack=bool(self.through_stack.value),
        )

    def set_input(self, source: ObjectInput | None, why_none: str | None = None) -> None:
        """Keep what the last prediction's objects are cut from (None: nothing to cut, and
        ``why_none`` says why: the objects listed so far are then dropped from the list)."""
        self._input = source
        self.find_again_button.enabled = source is not None
        if why_none is not None:
            self._layers, self._empty_text = [], why_none
            self.refresh()

    def set_running(self, running: bool) -> None:
        """Disable "Find objects again" while a job of the widget runs."""
        self.find_again_button.enabled = not running and self._input is not None

    def find_again(self, *_: Any) -> Job | None:
        """Cut the last prediction's objects again with the form's settings, in a job."""
        if self._input is None:
            show_error("Predict first: objects are cut from the last prediction.")
            return None
        scored = self._input.reference is not None
        self.job = Job(
            find_objects,
            self._input,
            self.settings(),
            description="Finding objects",
            on_result=lambda found: self._show_again(found, scored),
            on_done=self._on_done,
            bar=self._bar,
        )
        self._on_running(True)
        return self.job.start()

    def stop(self) -> None:
        """Stop a running "Find objects again" after its current slice."""
        if self.job is not None and self.job.running:
            self.job.stop()

    def show_in_turns(self, found: FoundObjects) -> Iterator[None]:
        """Add (or update) the objects layers one per turn of the event loop, then list them."""
        self._layers = list((yield from show_layers_in_turns(self.viewer, found.layers)))
        self._generation, self._empty_text = self._generation + 1, _NO_OBJECTS
        self.refresh()

    def layers(self) -> list[Labels]:
        """The objects layers shown last that are still in the viewer."""
        return [layer for layer in self._layers if layer in self.viewer.layers]

    def refresh(self, *_: Any) -> None:
        """Summary and table of the objects on the viewer's slice (or the nearest found)."""
        layers = self.layers()
        if not layers:
            self._shown = None
            self.summary.setText(self._empty_text)
            self.table.setRowCount(0)
            return
        z, here = table_slice(self.viewer, layers[0])
        unit = layers[0].metadata.get(UNIT_KEY) or "units"
        volumes = bool(layers[0].metadata.get(OBJECT_SETTINGS_KEY, {}).get("through_stack"))
        key = (z, self._generation, len(layers))
        if key != self._shown:  # else the user's sorting and selection stay
            self._shown = key
            self._rows = [row for layer in layers for row in rows_at(layer, z)]
            fill_objects_table(self.table, self._rows, unit, volumes)
        self.summary.setText(objects_summary(layers, self._rows, z, here, unit, volumes))

    def select_row(self, row: int, *_: Any) -> None:
        """Select the object of a table row: its layer active, its label, its slice shown."""
        item = self.table.item(row, 0)
        if item is None:
            return
        kind, label, z = item.data(Qt.ItemDataRole.UserRole)
        layer = next((la for la in self.layers() if la.metadata[OBJECT_KIND_KEY] == kind), None)
        if layer is None:
            return
        self.viewer.layers.selection.active = layer
        layer.selected_label = int(label)
        if layer.ndim >= 3:
            world_z = layer.translate[0] + (z - first_slice(layer)) * layer.scale[0]
            self.viewer.dims.set_point(self.viewer.dims.ndim - layer.ndim, world_z)
        plane = object_plane(layer, z)
        if plane is not None and np.any(plane == label):
            centre = np.mean(np.nonzero(plane == label), axis=1)
            yx = np.asarray(layer.translate[-2:]) + centre * np.asarray(layer.scale[-2:])
            centre_view_on(self.viewer, tuple(float(v) for v in yx))

    def _show_again(self, found: FoundObjects, scored: bool) -> Iterator[None]:
        yield from self.show_in_turns(found)
        if scored:
            self._on_scores(found.scores, found.note)
