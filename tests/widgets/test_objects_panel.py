"""Objects in Predict & inspect: instance layers per kind, their table, re-cutting, scores."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels
from qtpy.QtCore import Qt

from napari_dlbio._layers import OBJECTS, ROLE_KEY
from napari_dlbio._widgets._metrics_panel import AS_ANNOTATION, AS_MASK
from napari_dlbio._widgets._model_choices import builtin_choices
from napari_dlbio._widgets._objects_table import TABLE_COLUMNS
from napari_dlbio._widgets.predict_widget import CURRENT_SLICE, WHOLE_STACK, PredictWidget
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError

pytestmark = pytest.mark.gui

SCALE = (3.0, 2.0, 2.0)


def _widget(viewer, image, model: str) -> PredictWidget:
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.select(image)
    assert f"built-in {model}" in builtin_choices(Task.SEGMENTATION)
    widget.model_combo.setCurrentText(f"built-in {model}")
    return widget


def _column(name: str) -> int:
    return [column for column, _ in TABLE_COLUMNS].index(name)


def test_a_slice_gives_aligned_cells_and_mitochondria_with_their_table_and_scores(
    viewer, isbi, finish, shown_errors
) -> None:
    image, annotation = isbi
    image.scale = SCALE
    truth = viewer.add_labels(
        (annotation.data == 2).astype(np.uint8), name="membrane truth", scale=SCALE
    )
    widget = _widget(viewer, image, "em-membranes-mitochondria")
    widget.metrics.reference_combo.select(truth)
    assert widget.metrics.read_as.currentText() == AS_MASK
    viewer.dims.set_point(0, 3 * SCALE[0])
    widget.scope_combo.setCurrentText(CURRENT_SLICE)
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []

    cells = viewer.layers["ISBI 2012 EM cells"]
    mitochondria = viewer.layers["ISBI 2012 EM mitochondrion"]
    mask = viewer.layers["ISBI 2012 EM mask"]
    for layer in (cells, mitochondria):
        assert isinstance(layer, Labels)
        assert layer.data.dtype == np.uint32
        assert layer.data.shape == mask.data.shape == (1, 512, 512)
        np.testing.assert_array_equal(layer.scale, mask.scale)
        np.testing.assert_array_equal(layer.translate, mask.translate)
        assert layer.metadata[ROLE_KEY] == OBJECTS
        assert set(layer.features["slice"]) <= {3}
    assert cells.translate[0] == pytest.approx(9.0)
    features = cells.features
    labels = features["label"].to_numpy()
    assert len(labels) > 50
    np.testing.assert_array_equal(features["index"], labels)
    pixels = np.bincount(cells.data.ravel())
    np.testing.assert_array_equal(features["area_pixels"], pixels[labels])
    np.testing.assert_allclose(features["area"], pixels[labels] * SCALE[1] * SCALE[2])
    assert f"cells: {len(labels)}, median area" in widget.objects.summary.text()
    table = widget.objects.table
    assert table.rowCount() == len(labels) + len(mitochondria.features)
    assert "units²" in table.horizontalHeaderItem(_column("area")).text()

    # Sorting is numeric; a row click selects its object and goes back to its slice.
    table.sortItems(_column("area_pixels"), Qt.SortOrder.DescendingOrder)
    areas = [table.item(r, _column("area_pixels")).data(Qt.DisplayRole) for r in range(5)]
    assert areas == sorted(pixels[labels], reverse=True)[:5]
    viewer.dims.set_point(0, 1 * SCALE[0])
    assert table.rowCount() == len(labels) + len(mitochondria.features)
    assert widget.objects.summary.text().startswith("slice 3, the predicted one")
    row = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == "cells")
    label = table.item(row, _column("label")).data(Qt.DisplayRole)
    table.cellClicked.emit(row, 1)
    assert viewer.layers.selection.active is cells
    assert cells.selected_label == label
    assert viewer.dims.point[0] == pytest.approx(3 * SCALE[0])
    assert annotation.selected_label == 1  # the user's layers are left alone

    # Dense ground truth read as a mask: the cells are scored as the field scores them.
    scores = mask.metadata["object_metrics"]
    assert 0.5 < scores["cells"]["v_rand"] <= 1.0
    assert scores["cells"]["v_info"] is not None
    assert "f1" in scores["mitochondrion"]
    assert not widget.metrics.object_table.isHidden()
    assert widget.metrics.object_table.item(0, 0).text() == "cells"


def test_finding_objects_again_updates_the_layers_in_place(viewer, isbi, finish) -> None:
    image, annotation = isbi
    sparse = np.where(np.arange(512)[:, None] < 400, annotation.data[2], 0)
    scribbles = viewer.add_labels(np.stack([sparse] * 5).astype(np.uint8), name="scribbles")
    scribbles.metadata["class_names"] = ["background", "membrane"]
    widget = _widget(viewer, image, "em-membranes")
    widget.metrics.reference_combo.select(scribbles)
    widget.metrics.read_as.setCurrentText(AS_ANNOTATION)
    viewer.dims.set_point(0, 2)
    widget.scope_combo.setCurrentText(CURRENT_SLICE)
    widget.predict_button.click()
    finish(widget)
    cells = viewer.layers["ISBI 2012 EM cells"]
    before = len(cells.features)
    assert "unannotated" in widget.metrics.object_note.text()
    assert "unannotated" in widget.status_label.text()
    count = len(viewer.layers)

    widget.objects.seed_threshold.value = 0.02
    assert widget.objects.find_again_button.enabled
    widget.objects.find_again_button.native.click()
    finish(widget.objects)
    assert len(viewer.layers) == count
    assert viewer.layers["ISBI 2012 EM cells"] is cells
    assert len(cells.features) != before
    assert cells.metadata["settings"]["seed_threshold"] == pytest.approx(0.02)
    assert f"cells: {len(cells.features)}," in widget.objects.summary.text()
    assert widget.predict_button.isEnabled()


def test_through_the_stack_objects_are_volumes(viewer, isbi, finish, shown_errors) -> None:
    image, _ = isbi
    small = viewer.add_image(image.data[:2, :192, :192], name="crop")
    widget = _widget(viewer, small, "em-membranes")
    widget.scope_combo.setCurrentText(WHOLE_STACK)
    widget.objects.through_stack.value = True
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []
    cells = viewer.layers["crop cells"]
    assert cells.data.shape == (2, 192, 192)
    labels = cells.features["label"].to_numpy()
    assert len(set(labels)) == len(labels)  # one row per object, not per slice
    np.testing.assert_array_equal(labels, np.unique(cells.data)[1:])
    header = widget.objects.table.horizontalHeaderItem(_column("area")).text()
    assert header.startswith("volume")


def test_a_classifier_has_no_objects_section(viewer, isbi, leaves) -> None:
    image, _ = isbi
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.select(image)
    assert not widget.objects.isHidden()
    widget.image_combo.select(leaves)
    assert widget.objects.isHidden()


def test_a_model_without_kinds_of_object_says_so(
    viewer, isbi, finish, shown_errors, monkeypatch
) -> None:
    from napari_dlbio._widgets import _jobs

    def no_kinds(*_):
        raise InputDataError("this model has no structure class to find objects of.")

    monkeypatch.setattr(_jobs, "model_kinds", no_kinds)
    image, _ = isbi
    widget = _widget(viewer, image, "em-membranes")
    widget.scope_combo.setCurrentText(CURRENT_SLICE)
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []
    assert "ISBI 2012 EM mask" in viewer.layers
    assert "ISBI 2012 EM cells" not in viewer.layers
    assert "no structure class" in widget.objects.summary.text()
    assert not widget.objects.find_again_button.enabled
