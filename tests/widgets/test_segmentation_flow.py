"""Train -> predict -> evaluate -> export through the widgets, on the real threaded path."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from napari_dlbio._widgets._model_choices import CURRENT_MODEL
from napari_dlbio._widgets.export_widget import PNGS, ExportWidget
from napari_dlbio._widgets.predict_widget import WHOLE_STACK, PredictWidget
from napari_dlbio._widgets.train_widget import TrainWidget
from napari_dlbio.core.config import Task

pytestmark = pytest.mark.gui

TINY = {
    "network.depth": 2,
    "network.base_filters": 4,
    "patch_size": 32,
    "batch_size": 2,
    "steps_per_epoch": 3,
    "epochs": 2,
    "tile_size": 256,
}


def _tiny(widget: TrainWidget, **changes) -> None:
    for key, value in {**TINY, **changes}.items():
        widget.segmentation_form.set_value(key, value)


def test_train_predict_evaluate_export_end_to_end(
    viewer, isbi, tmp_path, shown_errors, finish
) -> None:
    image, annotation = isbi
    image.scale = (2.0, 1.0, 1.0)
    annotation.scale = (2.0, 1.0, 1.0)
    painted = annotation.data.copy()
    train = TrainWidget(viewer)
    predict = PredictWidget(viewer)
    export = ExportWidget(viewer)
    for widget in (train, predict, export):
        viewer.window.add_dock_widget(widget)
    train.image_combo.select(image)
    train.annotation_combo.select(annotation)
    _tiny(train)
    train.save_to.setText(str(tmp_path / "membrane-unet"))

    train.train_button.click()
    assert not train.train_button.isEnabled()
    assert train.stop_button.isEnabled()
    finish(train)

    assert train.train_button.isEnabled()
    assert train.outcome is not None
    assert (tmp_path / "membrane-unet" / "config.json").is_file()
    assert train.session.current(Task.SEGMENTATION) is train.outcome.model
    assert "CPU" in train.device_label.text() or "GPU" in train.device_label.text()
    assert len(train.plot.series["loss"]) == 2
    assert train.progress_bar.value() == train.progress_bar.maximum()  # full when done
    np.testing.assert_array_equal(annotation.data, painted)

    predict.image_combo.select(image)
    predict.scope_combo.setCurrentText(WHOLE_STACK)
    predict.metrics.reference_combo.select(annotation)
    predict.predict_button.click()
    finish(predict)
    assert shown_errors() == []

    mask = viewer.layers["ISBI 2012 EM mask"]
    assert mask.data.shape == image.data.shape
    np.testing.assert_allclose(mask.scale, image.scale)
    membrane = viewer.layers["ISBI 2012 EM P(membrane)"]
    assert membrane.data.shape == image.data.shape
    assert 0.0 <= membrane.data.min() <= membrane.data.max() <= 1.0
    assert viewer.layers["ISBI 2012 EM uncertainty"].data.shape == image.data.shape
    assert list(mask.features["class"]) == ["background", "membrane"]
    assert 0.0 <= mask.features["iou"][1] <= 1.0
    assert len(mask.metadata["metrics"]["slices"]) == 5
    assert predict.metrics.table.rowCount() == 2 + 5 * 2
    viewer.dims.set_point(0, 3 * 2.0)
    assert viewer.canvas.overlays.text.visible
    assert viewer.canvas.overlays.text.text.startswith("slice 3: membrane IoU")
    np.testing.assert_array_equal(annotation.data, painted)

    export.mask_combo.select(mask)
    export.mask_path.setText(str(tmp_path / "mask.tif"))
    export.mask_button.click()
    finish(export)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "mask.tif"), mask.data)

    export.format_combo.setCurrentText(PNGS)
    export.mask_path.setText(str(tmp_path / "mask-slices"))
    export.mask_button.click()
    finish(export)
    assert len(list((tmp_path / "mask-slices").glob("*.png"))) == 5

    export.metrics_path.setText(str(tmp_path / "metrics.csv"))
    export.metrics_button.click()
    finish(export)
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["class"] for row in rows} == {"background", "membrane"}

    export.image_combo.select(membrane)
    export.image_path.setText(str(tmp_path / "membrane.tif"))
    export.image_button.click()
    finish(export)
    assert tifffile.imread(tmp_path / "membrane.tif").shape == image.data.shape

    export.model_path.setText(str(tmp_path / "exported-model"))
    export.model_button.click()
    finish(export)
    assert (tmp_path / "exported-model" / "model.keras").is_file()

    # Fine-tune the model in memory, predicting one slice afterwards.
    train.start_combo.setCurrentText(CURRENT_MODEL)
    _tiny(train, epochs=1)
    train.save_to.setText("")
    train.train_button.click()
    finish(train)
    assert train.outcome is not None
    assert train.outcome.model is not None
    np.testing.assert_array_equal(annotation.data, painted)
