"""Train: Stop keeps the best weights and leaves the widget ready; failures leave it usable."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_dlbio._widgets._model_choices import MODEL_FOLDER, NEW_NETWORK
from napari_dlbio._widgets.train_widget import TrainWidget
from napari_dlbio.core.config import Task
from napari_dlbio.core.events import RunState

pytestmark = pytest.mark.gui

TINY = {
    "network.depth": 2,
    "network.base_filters": 4,
    "patch_size": 32,
    "batch_size": 2,
    "steps_per_epoch": 3,
}


def _ready(viewer, isbi, **changes) -> TrainWidget:
    image, annotation = isbi
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.select(image)
    widget.annotation_combo.select(annotation)
    for key, value in {**TINY, **changes}.items():
        widget.segmentation_form.set_value(key, value)
    return widget


def test_stop_keeps_best_weights_and_the_widget_trains_again(
    viewer, isbi, wait_until, finish, shown_notifications
) -> None:
    _, annotation = isbi
    painted = annotation.data.copy()
    layers_before = [layer.name for layer in viewer.layers]
    widget = _ready(viewer, isbi, epochs=500)
    widget.train_button.click()
    job = widget.job
    wait_until(lambda: len(widget.plot.series["loss"]) >= 1)
    widget.stop_button.click()
    assert not widget.stop_button.isEnabled()
    finish(widget)

    assert job.state is RunState.CANCELLED
    assert len(widget.plot.series["loss"]) < 500
    # How the data were split stays beside the plot instead of covering the canvas.
    assert "validating on" in widget.notes_label.text()
    assert not any("validating on" in text for text in shown_notifications())
    assert widget.outcome is not None
    assert widget.outcome.fit.best_epoch is not None
    assert widget.session.current(Task.SEGMENTATION) is widget.outcome.model
    assert widget.train_button.isEnabled()
    assert not widget.stop_button.isEnabled()
    assert widget.segmentation_form.isEnabled()
    assert [layer.name for layer in viewer.layers] == layers_before
    np.testing.assert_array_equal(annotation.data, painted)

    widget.segmentation_form.set_value("epochs", 1)
    widget.train_button.click()
    finish(widget)
    assert widget.job.state is RunState.DONE
    assert widget.train_button.isEnabled()


def test_a_missing_model_folder_is_reported_and_nothing_changes(
    viewer, isbi, tmp_path, shown_errors, finish
) -> None:
    _, annotation = isbi
    painted = annotation.data.copy()
    widget = _ready(viewer, isbi, epochs=1)
    widget.start_combo.setCurrentText(MODEL_FOLDER)
    widget.start_folder.setText(str(tmp_path / "no-such-model"))
    widget.train_button.click()
    finish(widget)
    assert widget.job.state is RunState.FAILED
    assert any("no-such-model" in text for text in shown_errors())
    assert widget.train_button.isEnabled()
    assert widget.session.current(Task.SEGMENTATION) is None
    np.testing.assert_array_equal(annotation.data, painted)
    widget.start_combo.setCurrentText(NEW_NETWORK)
    assert widget.segmentation_form.fields["network.depth"].enabled


def test_nothing_painted_is_refused_before_any_thread_starts(viewer, isbi, shown_errors) -> None:
    _, annotation = isbi
    annotation.data = np.zeros_like(annotation.data)
    widget = _ready(viewer, isbi)
    widget.train_button.click()
    assert widget.job is None
    assert any("Nothing is annotated" in text for text in shown_errors())
    assert widget.train_button.isEnabled()


def test_impossible_settings_are_refused_with_the_reason(viewer, isbi, shown_errors) -> None:
    widget = _ready(viewer, isbi, patch_size=30)
    widget.train_button.click()
    assert widget.job is None
    assert any("multiple of 8" in text for text in shown_errors())


def test_importing_the_widgets_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import napari_dlbio._widgets.data_widget, napari_dlbio._widgets.train_widget\n"
        "import napari_dlbio._widgets.predict_widget, napari_dlbio._widgets.export_widget\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_start_from_lists_the_built_in_models_of_the_task(viewer, isbi, leaves) -> None:
    image, _ = isbi
    widget = TrainWidget(viewer)
    widget.image_combo.select(image)

    def choices() -> list[str]:
        return [widget.start_combo.itemText(i) for i in range(widget.start_combo.count())]

    assert choices()[-2:] == ["built-in em-membranes", "built-in em-membranes-mitochondria"]
    widget.start_combo.setCurrentText("built-in em-membranes")
    assert widget._request().start == "builtin:em-membranes"
    widget.image_combo.select(leaves)
    assert choices()[-1] == "built-in plantvillage-15"
    assert "built-in em-membranes" not in choices()
    assert widget.start_combo.currentText() == NEW_NETWORK  # no leaf model of that name


def test_ticked_boundary_classes_travel_with_the_request(viewer, isbi) -> None:
    _, annotation = isbi
    widget = _ready(viewer, isbi)
    ticks = widget.boundary_classes
    assert ticks.names() == ["membrane"]  # the structure classes, not the background
    assert ticks.ticked() == ()
    request = widget._request()
    assert request.config.boundary_classes == ()
    assert "boundary_classes" not in request.training  # a fine-tuned model keeps its own

    ticks.tick(["membrane"])
    request = widget._request()
    assert request.config.boundary_classes == ("membrane",)
    assert request.config.class_roles() == {1: "boundary"}
    widget.start_combo.setCurrentText("built-in em-membranes")
    assert "keeps its own" in ticks.hint.text()
    assert widget._request().training["boundary_classes"] == ("membrane",)

    # New class names are listed at once; a class still there keeps its tick.
    annotation.metadata = {**annotation.metadata, "class_names": ["bg", "membrane", "mito"]}
    assert ticks.names() == ["membrane", "mito"]
    assert ticks.ticked() == ("membrane",)


def test_a_leaf_stack_has_no_boundary_classes(viewer, isbi, leaves) -> None:
    image, annotation = isbi
    widget = TrainWidget(viewer)
    widget.image_combo.select(image)
    widget.annotation_combo.select(annotation)
    assert not widget.boundary_classes.isHidden()
    widget.image_combo.select(leaves)
    assert widget.boundary_classes.isHidden()
    assert "boundary_classes" not in widget._request().config.to_dict()
