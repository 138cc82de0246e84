"""Nothing a user made is lost or silently replaced: strokes, models, files, results."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from napari_dlbio._widgets._session import session_for
from napari_dlbio._widgets.data_widget import VALUES_READING, DataWidget
from napari_dlbio._widgets.export_widget import ExportWidget
from napari_dlbio._widgets.predict_widget import CURRENT_SLICE, WHOLE_STACK, PredictWidget
from napari_dlbio._widgets.train_widget import TrainWidget
from napari_dlbio.core.config import Task
from napari_dlbio.core.events import RunState

pytestmark = pytest.mark.gui

TINY = {
    "network.depth": 2,
    "network.base_filters": 4,
    "patch_size": 32,
    "batch_size": 2,
    "steps_per_epoch": 2,
}


def _paint(layer, value: int = 2) -> int:
    """Paint a square of ``value`` on slice 0 as a brush would; return the painted pixels."""
    rows, cols = np.nonzero(np.ones((20, 30), bool))
    layer.data_setitem((np.zeros_like(rows), rows + 100, cols + 100), value)
    return int((layer.data != 0).sum())


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_create_annotation_again_selects_the_painted_layer(viewer, isbi) -> None:
    image, _ = isbi
    widget = DataWidget(viewer)
    widget.image_combo.select(image)
    first = widget.create_annotation()
    painted = _paint(first)
    viewer.layers.selection.active = image

    again = widget.create_annotation()

    assert again is first
    assert viewer.layers[f"{image.name} annotation"] is first
    assert int((first.data != 0).sum()) == painted == 600
    assert viewer.layers.selection.active is first
    # Other classes make a new layer with a free name; the painted one stays as it was.
    widget.classes_edit.setText("background, membrane, mitochondria")
    other = widget.create_annotation()
    assert other is not first
    assert other.name != first.name
    assert first in viewer.layers
    assert int((first.data != 0).sum()) == painted


def test_converting_labels_twice_never_replaces_the_first_annotation(viewer, isbi) -> None:
    _, truth = isbi
    widget = DataWidget(viewer)
    widget.labels_combo.select(truth)
    widget.reading_combo.setCurrentText(VALUES_READING)
    widget.values_edit.setText("1=background, 2=membrane")
    first = widget.convert_labels()
    first.data_setitem((np.array([0]), np.array([5]), np.array([5])), 0)  # the user erases
    edited = first.data.copy()
    second = widget.convert_labels()
    assert second is not first
    np.testing.assert_array_equal(first.data, edited)


def test_export_never_overwrites_a_model_folder(
    viewer, tiny_unet, tmp_path, finish, shown_errors
) -> None:
    session_for(viewer).add(tiny_unet, "test model")
    widget = ExportWidget(viewer)
    folder = tmp_path / "membrane model"
    widget.model_path.setText(str(folder))
    widget.model_button.click()
    finish(widget)
    assert widget.job.state is RunState.DONE
    saved = _tree(folder)
    assert "config.json" in saved

    widget.model_button.click()
    finish(widget)
    assert widget.job.state is RunState.FAILED
    assert any("already exists and is not empty" in text for text in shown_errors())
    assert _tree(folder) == saved
    # The session lists the model with the folder it was saved in.
    assert "saved in membrane model" in widget.model_picker.currentText()


def test_a_slice_prediction_never_shrinks_the_stack_result(viewer, isbi, tiny_unet, finish) -> None:
    image, truth = isbi
    session_for(viewer).add(tiny_unet, "test model")
    widget = PredictWidget(viewer)
    widget.image_combo.select(image)
    widget.metrics.reference_combo.select(truth)
    widget.scope_combo.setCurrentText(WHOLE_STACK)
    widget.predict_button.click()
    finish(widget)
    stack = viewer.layers["ISBI 2012 EM mask"]
    whole, figures = stack.data.copy(), stack.metadata["metrics"]
    assert whole.shape == (5, 512, 512)

    viewer.dims.set_point(0, 2)
    widget.scope_combo.setCurrentText(CURRENT_SLICE)
    widget.predict_button.click()
    finish(widget)

    assert viewer.layers["ISBI 2012 EM mask"] is stack
    np.testing.assert_array_equal(stack.data, whole)
    assert stack.metadata["metrics"] == figures
    one = viewer.layers["ISBI 2012 EM mask (slice)"]
    assert one.data.shape == (1, 512, 512)
    assert one.metadata["slice"] == 2
    for name in ("P(membrane)", "uncertainty"):
        assert viewer.layers[f"ISBI 2012 EM {name}"].data.shape[0] == 5


def test_a_grey_model_refuses_a_colour_photo(
    viewer, leaves, tiny_unet, finish, shown_errors
) -> None:
    session_for(viewer).add(tiny_unet, "EM model")
    photo = viewer.add_image(np.asarray(leaves.data[0]), rgb=True, name="leaf photo")
    names = [layer.name for layer in viewer.layers]
    widget = PredictWidget(viewer)
    widget.image_combo.select(photo)
    widget.predict_button.click()
    finish(widget)
    assert widget.job.state is RunState.FAILED
    errors = " ".join(shown_errors())
    assert "trained on grey images (1 channel)" in errors
    assert "3 colour channels" in errors
    assert [layer.name for layer in viewer.layers] == names


def test_a_model_loaded_for_another_task_keeps_the_current_one(
    viewer, isbi, leaves, tiny_unet, tmp_path, finish, trained_in_engine
) -> None:
    from napari_dlbio.core.classifier_config import ClassifierConfig
    from napari_dlbio.engine.protocol import Train

    session = session_for(viewer)
    session.add(tiny_unet, "trained, not saved")
    indices = np.asarray(leaves.metadata["class_indices"])
    config = ClassifierConfig(
        class_names=tuple(leaves.metadata["class_names"]),
        input_size=32,
        filters=4,
        blocks=3,
        convs_per_block=1,
        stem_stride=1,
        epochs=1,
    )
    folder = tmp_path / "leaf model"
    images = np.asarray(leaves.data)
    trained_in_engine(Train(Task.CLASSIFICATION, images, indices, config, str(folder)))

    widget = PredictWidget(viewer)
    widget.image_combo.select(leaves)
    widget.model_combo.setCurrentText("a model folder")
    widget.model_folder.setText(str(folder))
    widget.predict_button.click()
    finish(widget)

    assert widget.job.state is RunState.DONE
    assert session.current(Task.SEGMENTATION) is tiny_unet  # unsaved, and still current
    assert session.current(Task.CLASSIFICATION).path == folder
    assert len(session.models()) == 2
    widget.image_combo.select(isbi[0])
    assert widget.model_picker.model() is tiny_unet


def test_train_stop_train_predict_export_create_loses_nothing(
    viewer, isbi, tmp_path, wait_until, finish, shown_errors
) -> None:
    image, truth = isbi
    data = DataWidget(viewer)
    data.image_combo.select(image)
    annotation = data.create_annotation()
    annotation.data = np.array(truth.data, copy=True)  # the user painted every pixel
    strokes = annotation.data.copy()
    session = session_for(viewer)

    train = TrainWidget(viewer)
    train.image_combo.select(image)
    assert train.annotation_combo.layer() is annotation  # the user's, not the ground truth
    for key, value in {**TINY, "epochs": 1}.items():
        train.segmentation_form.set_value(key, value)
    train.train_button.click()
    finish(train)
    assert train.job.state is RunState.DONE
    first = session.current(Task.SEGMENTATION)
    assert first is train.outcome.model

    train.segmentation_form.set_value("epochs", 500)
    train.train_button.click()
    wait_until(lambda: len(train.plot.series["loss"]) >= 2)
    train.stop_button.click()
    finish(train)
    assert train.job.state is RunState.CANCELLED
    stopped = train.outcome.model
    assert stopped is not first
    assert session.current(Task.SEGMENTATION) is first  # not displaced by the stopped run
    assert [id(model) for model in session.models(Task.SEGMENTATION)] == [id(stopped), id(first)]
    assert "still" in train.status_label.text()

    predict = PredictWidget(viewer)
    predict.image_combo.select(image)
    predict.scope_combo.setCurrentText(WHOLE_STACK)
    predict.predict_button.click()
    finish(predict)
    viewer.dims.set_point(0, 1)
    predict.scope_combo.setCurrentText(CURRENT_SLICE)
    predict.predict_button.click()
    finish(predict)
    assert viewer.layers["ISBI 2012 EM mask"].data.shape == (5, 512, 512)

    export = ExportWidget(viewer)
    export.model_path.setText(str(tmp_path / "first model"))
    for _ in range(2):
        export.model_button.click()
        finish(export)
    assert export.job.state is RunState.FAILED  # the second time: the folder exists

    assert data.create_annotation() is annotation
    np.testing.assert_array_equal(annotation.data, strokes)
    # The same two models (the exported one now listed with its folder: a new handle).
    assert sorted(model.id for model in session.models()) == sorted([first.id, stopped.id])
    # The stopped run is one click away.
    train.model_picker.setCurrentIndex(0)
    train.model_picker.activated.emit(0)
    assert session.current(Task.SEGMENTATION).id == stopped.id
