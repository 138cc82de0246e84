"""The objects table of Predict & inspect: the objects of one slice, as rows and as text.

Helpers of :mod:`._objects_panel` over instance Labels layers (see
:func:`~napari_dlbio._layers.objects_layers`): which slice to list, the rows of its objects,
a sortable table (numbers stored as numbers) and a count and median size per kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem

from napari_dlbio._object_layers import OBJECT_KIND_KEY, OBJECT_SETTINGS_KEY
from napari_dlbio._widgets._common import slice_at

#: Features columns shown, with their headers ({u}: the image's unit).
TABLE_COLUMNS = (
    ("class", "kind"),
    ("label", "label"),
    ("slice", "slice"),
    ("area_pixels", "area (px)"),
    ("area", "area ({u}²)"),
    ("perimeter", "perimeter ({u})"),
    ("equivalent_diameter", "equivalent diameter ({u})"),
    ("eccentricity", "eccentricity"),
    ("solidity", "solidity"),
    ("mean_intensity", "mean intensity"),
)
_UNIT_TIP = (
    "Physical sizes: pixels times the image layer's scale, in its unit ({u}); a layer "
    "without a unit gives them in the units of its scale."
)


def first_slice(layer: Labels) -> int:
    """Stack index of the layer's first slice (a one-slice result sits on its slice)."""
    return layer.metadata.get("slice") or 0


def table_slice(viewer: Any, layer: Labels) -> tuple[int, bool]:
    """The stack index of the slice to list: the viewer's, or the nearest the layer has;
    and whether it is the viewer's."""
    if layer.ndim < 3:
        return first_slice(layer), True
    local = slice_at(viewer, layer)
    nearest = int(np.clip(local, 0, layer.data.shape[0] - 1))
    return first_slice(layer) + nearest, nearest == local


def object_plane(layer: Labels, z: int) -> np.ndarray | None:
    """The labels of slice ``z`` of the stack, or None when the layer does not have it."""
    if layer.ndim < 3:
        return np.asarray(layer.data)
    local = z - first_slice(layer)
    return np.asarray(layer.data[local]) if 0 <= local < layer.data.shape[0] else None


def rows_at(layer: Labels, z: int) -> list[dict[str, Any]]:
    """The features rows of the objects of ``layer`` in slice ``z`` of the stack."""
    features = layer.features
    if features.empty or "label" not in features:
        return []
    if layer.metadata.get(OBJECT_SETTINGS_KEY, {}).get("through_stack"):
        plane = object_plane(layer, z)
        present = np.unique(plane) if plane is not None else []
        chosen = features[features["label"].isin(present)]
    else:
        chosen = features[features["slice"] == z]
    return [{**row, "slice": z} for row in chosen.to_dict("records")]


def fill_objects_table(
    table: QTableWidget, rows: Sequence[dict[str, Any]], unit: str, volumes: bool
) -> None:
    """Rows in the table, numbers as numbers (they sort as numbers), kind and label kept."""
    table.setSortingEnabled(False)
    table.clearContents()
    table.setColumnCount(len(TABLE_COLUMNS))
    table.setRowCount(len(rows))
    for c, (_, header) in enumerate(TABLE_COLUMNS):
        if volumes:  # objects through the stack are measured as volumes
            header = header.replace("area (px)", "volume (voxels)").replace("area", "volume")
            header = header.replace("²", "³")
        item = QTableWidgetItem(header.format(u=unit))
        if "{u}" in header:
            item.setToolTip(_UNIT_TIP.format(u=unit))
        table.setHorizontalHeaderItem(c, item)
    for r, row in enumerate(rows):
        for c, (column, _) in enumerate(TABLE_COLUMNS):
            table.setItem(r, c, _item(row[column]))
        table.item(r, 0).setData(
            Qt.ItemDataRole.UserRole, (row["class"], int(row["label"]), int(row["slice"]))
        )
    table.setSortingEnabled(True)
    table.resizeColumnsToContents()


def _item(value: Any) -> QTableWidgetItem:
    item = QTableWidgetItem()
    if isinstance(value, str):
        item.setText(value)
    elif isinstance(value, (int, np.integer)):
        item.setData(Qt.ItemDataRole.DisplayRole, int(value))
    elif value is None or np.isnan(value):
        item.setText("n/a")
    else:
        item.setData(Qt.ItemDataRole.DisplayRole, round(float(value), 3))
    return item


def objects_summary(
    layers: Sequence[Labels],
    rows: Sequence[dict[str, Any]],
    z: int,
    here: bool,
    unit: str,
    volumes: bool,
) -> str:
    """Count and median area (volume) per kind of the objects of slice ``z``."""
    size, pixel, power = ("volume", "voxels", "³") if volumes else ("area", "px", "²")
    parts = []
    for layer in layers:
        kind = layer.metadata[OBJECT_KIND_KEY]
        areas = [(row["area_pixels"], row["area"]) for row in rows if row["class"] == kind]
        if areas:
            pixels, physical = np.median(np.asarray(areas, dtype=float), axis=0)
            parts.append(
                f"{kind}: {len(areas)}, median {size} {pixels:.0f} {pixel} "
                f"({physical:.4g} {unit}{power})"
            )
        else:
            parts.append(f"{kind}: 0")
    where = f"slice {z}" if here else f"slice {z}, the predicted one (a row click goes there)"
    return f"{where}: " + "; ".join(parts)
