"""The leaf stack: train a classifier, predict classes per image, Grad-CAM overlay."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from napari_dlbio._widgets._classes_panel import PREDICTIONS_KEY
from napari_dlbio._widgets._model_choices import CURRENT_MODEL
from napari_dlbio._widgets.predict_widget import WHOLE_STACK, PredictWidget
from napari_dlbio._widgets.train_widget import TrainWidget
from napari_dlbio.core.config import Task
from napari_dlbio.core.events import RunState

pytestmark = pytest.mark.gui

TINY = {"input_size": 32, "filters": 4, "blocks": 2, "batch_size": 16, "epochs": 1}


def test_classifier_train_predict_and_grad_cam(viewer, leaves, shown_errors, finish) -> None:
    pixels = leaves.data.copy()
    train = TrainWidget(viewer)
    predict = PredictWidget(viewer)
    viewer.window.add_dock_widget(train)
    viewer.window.add_dock_widget(predict)
    train.image_combo.select(leaves)
    assert train.classifier_form.isVisibleTo(train)
    assert not train.segmentation_form.isVisibleTo(train)
    for key, value in TINY.items():
        train.classifier_form.set_value(key, value)
    train.train_button.click()
    finish(train)
    assert shown_errors() == []
    assert train.job.state is RunState.DONE
    classifier = train.session.current(Task.CLASSIFICATION)
    assert classifier.config.class_names == tuple(leaves.metadata["class_names"])
    assert train.plot.score_name == "val accuracy"

    predict.image_combo.select(leaves)
    assert predict.classes_box.isVisibleTo(predict)
    predict.scope_combo.setCurrentText(WHOLE_STACK)
    predict.predict_button.click()
    finish(predict)
    rows = leaves.metadata[PREDICTIONS_KEY]
    assert [row["image"] for row in rows] == list(range(len(pixels)))
    assert predict.class_table.rowCount() == len(pixels)
    assert all(row["predicted"] in leaves.metadata["class_names"] for row in rows)
    viewer.dims.set_point(0, 4)
    assert viewer.canvas.overlays.text.text.startswith("image 4:")
    np.testing.assert_array_equal(leaves.data, pixels)

    if importlib.util.find_spec("napari_dlbio.models.gradcam") is None:
        pytest.skip("models/gradcam.py is not there yet")
    predict.gradcam_button.click()
    finish(predict)
    assert shown_errors() == []
    heatmap = viewer.layers["PlantVillage leaves Grad-CAM"]
    assert heatmap.data.shape == (1, *pixels.shape[1:3])
    assert heatmap.translate[0] == pytest.approx(4.0)
    assert heatmap.colormap.name == "inferno"
    assert heatmap.blending == "additive"
    assert 0.0 <= heatmap.data.min() <= heatmap.data.max() <= 1.0


def test_a_segmentation_model_on_leaves_is_refused_with_what_to_do(
    viewer, leaves, isbi, shown_errors, finish
) -> None:
    image, annotation = isbi
    train = TrainWidget(viewer)
    train.image_combo.select(image)
    train.annotation_combo.select(annotation)
    tiny = {"network.depth": 2, "network.base_filters": 4, "patch_size": 32, "epochs": 1}
    for key, value in {**tiny, "steps_per_epoch": 2, "batch_size": 2}.items():
        train.segmentation_form.set_value(key, value)
    train.train_button.click()
    finish(train)
    layers_before = [layer.name for layer in viewer.layers]
    predict = PredictWidget(viewer)
    predict.image_combo.select(leaves)
    # Without a classifier of the session, Predict offers the built-in leaf model first.
    assert predict.model_combo.currentText() == "built-in plantvillage-15"
    predict.model_combo.setCurrentText(CURRENT_MODEL)
    predict.predict_button.click()
    # The session keeps one current model per task: the U-Net is not a classifier.
    assert predict.job is None
    assert any("no classifier yet" in text for text in shown_errors())
    assert predict.predict_button.isEnabled()
    assert [layer.name for layer in viewer.layers] == layers_before
