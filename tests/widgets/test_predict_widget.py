"""Predict & inspect: one slice lands on its slice, scores follow the viewer, Cancel is clean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qtpy.QtWidgets import QFileDialog

from napari_dlbio._widgets._fields import PACKAGE_FILTER
from napari_dlbio._widgets._metrics_panel import AS_MASK
from napari_dlbio._widgets._model_choices import MODEL_FOLDER
from napari_dlbio._widgets._session import session_for
from napari_dlbio._widgets.predict_widget import CURRENT_SLICE, WHOLE_STACK, PredictWidget
from napari_dlbio.core.config import Task
from napari_dlbio.core.events import RunState

pytestmark = pytest.mark.gui


def _widget(viewer, image, model) -> PredictWidget:
    session_for(viewer).add(model, "test model")
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.select(image)
    return widget


def test_current_slice_prediction_sits_on_that_slice_with_its_scores(
    viewer, isbi, tiny_unet, finish, shown_errors
) -> None:
    image, annotation = isbi
    image.scale = annotation.scale = (3.0, 1.0, 1.0)
    widget = _widget(viewer, image, tiny_unet)
    widget.metrics.reference_combo.select(annotation)
    viewer.dims.set_point(0, 3 * 3.0)
    widget.scope_combo.setCurrentText(CURRENT_SLICE)
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []

    mask = viewer.layers["ISBI 2012 EM mask"]
    assert mask.data.shape == (1, 512, 512)
    assert mask.translate[0] == pytest.approx(9.0)
    assert mask.metadata["slice"] == 3
    assert [entry["slice"] for entry in mask.metadata["metrics"]["slices"]] == [0]
    rows = mask.metadata["metrics_rows"]
    assert {row["slice"] for row in rows if row["scope"] == "slice"} == {3}
    overlay = viewer.canvas.overlays.text
    assert overlay.text.startswith("slice 3: membrane IoU")
    viewer.dims.set_point(0, 2 * 3.0)
    assert overlay.text == "slice 2: no metrics"

    # Predicting again replaces the plugin's own layers instead of piling them up.
    count = len(viewer.layers)
    widget.predict_button.click()
    finish(widget)
    assert len(viewer.layers) == count
    assert viewer.layers["ISBI 2012 EM mask"].metadata["slice"] == 2


def test_evaluating_against_a_ground_truth_mask(viewer, isbi, tiny_unet, finish) -> None:
    image, annotation = isbi
    truth = viewer.add_labels((annotation.data == 2).astype(np.uint8), name="membrane truth")
    widget = _widget(viewer, image, tiny_unet)
    widget.scope_combo.setCurrentText(WHOLE_STACK)
    widget.metrics.reference_combo.select(truth)
    widget.predict_button.click()
    finish(widget)
    mask = viewer.layers["ISBI 2012 EM mask"]
    scored_by_prediction = mask.metadata["metrics"]

    widget.metrics.read_as.setCurrentText(AS_MASK)
    widget.metrics.prediction_combo.select(mask)
    widget.metrics.evaluate_button.click()
    finish(widget.metrics)
    assert mask.metadata["metrics"] == scored_by_prediction
    membrane_iou = mask.features["iou"][1]
    predicted, true = mask.data == 1, truth.data == 1
    expected = (predicted & true).sum() / (predicted | true).sum()
    assert membrane_iou == pytest.approx(expected, rel=1e-6)
    assert widget.metrics.table.rowCount() == 2 + 5 * 2


def test_cancel_leaves_the_layers_as_they_were(viewer, isbi, tiny_unet, finish) -> None:
    image, _ = isbi
    names = [layer.name for layer in viewer.layers]
    widget = _widget(viewer, image, tiny_unet)
    widget.scope_combo.setCurrentText(WHOLE_STACK)
    widget.predict_button.click()
    widget.cancel_button.click()
    finish(widget)
    assert widget.job.state is RunState.CANCELLED
    assert [layer.name for layer in viewer.layers] == names
    assert widget.predict_button.isEnabled()
    assert not widget.cancel_button.isEnabled()
    assert "Cancelled" in widget.status_label.text()


def test_before_any_training_predict_uses_the_built_in_model(
    viewer, isbi, finish, shown_errors
) -> None:
    image, truth = isbi
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.select(image)
    assert widget.model_combo.currentText() == "built-in em-membranes"
    viewer.dims.set_point(0, 2)
    widget.scope_combo.setCurrentText(CURRENT_SLICE)
    widget.predict_button.click()
    finish(widget)
    assert shown_errors() == []
    mask = viewer.layers["ISBI 2012 EM mask"].data[0] == 1
    membrane = truth.data[2] == 2
    # The shipped model scores 0.726 on this slice.
    assert np.count_nonzero(mask & membrane) / np.count_nonzero(mask | membrane) > 0.65
    # The loaded model joins the session, read-only, and is used from memory from now on.
    model = widget.session.current(Task.SEGMENTATION)
    assert widget.session.label(model).endswith("built-in em-membranes (shipped with napari-dlbio)")
    assert widget.model_combo.currentText() == "the current model"


def test_the_model_field_takes_a_folder_or_a_bioimageio_package(viewer, monkeypatch) -> None:
    widget = PredictWidget(viewer)
    widget.model_combo.setCurrentText(MODEL_FOLDER)
    assert widget.model_folder_label.text() == "Model folder or .zip"
    asked = []

    def open_file(parent, caption, start, file_filter):
        asked.append(file_filter)
        return "/data/em.zip", file_filter

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(open_file))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *_: "/data/model"))
    widget.model_folder.package_button.click()
    assert asked == [PACKAGE_FILTER]
    assert widget._model_source() == str(Path("/data/em.zip").resolve())
    widget.model_folder.browse_button.click()
    assert widget._model_source() == str(Path("/data/model").resolve())
