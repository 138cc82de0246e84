"""Correct & fine-tune: accept, live agreement, bursts that keep the network, Stop, uncertainty."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from napari.layers import Layer
from skimage.measure import label

from napari_dlbio._layers import Placement, prediction_layers
from napari_dlbio._widgets._agreement_controls import WHOLE_STACK
from napari_dlbio._widgets._burst_settings import BURST_SECONDS
from napari_dlbio._widgets._common import current_index
from napari_dlbio._widgets._model_choices import CURRENT_MODEL, NEW_NETWORK
from napari_dlbio._widgets.refine_widget import RefineWidget
from napari_dlbio.core.config import Task
from napari_dlbio.core.events import RunState
from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig

pytestmark = pytest.mark.gui

NAMES = ["background", "membrane"]
TINY = SegmentationConfig(
    network=UNetConfig(depth=2, base_filters=4),
    patch_size=32,
    batch_size=2,
    tile_size=128,
    tile_overlap=16,
)


def _widget(viewer) -> RefineWidget:
    widget = RefineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def _predicted(viewer, mask, probabilities=None, scale=(1.0, 1.0, 1.0)):
    """An image, an empty annotation and the plugin's prediction layers for that image."""
    image = viewer.add_image(np.zeros(mask.shape, np.uint8), name="em", scale=scale)
    annotation = viewer.add_labels(
        np.zeros(mask.shape, np.uint8), name="painted", scale=scale, metadata={"class_names": NAMES}
    )
    if probabilities is None:
        probabilities = np.eye(2, dtype=np.float32)[mask]
    where = Placement(scale, (0.0,) * 3)
    for data in prediction_layers(mask, probabilities, NAMES, where, "em"):
        viewer.add_layer(Layer.create(*data))
    return image, annotation


def _half_membrane(shape=(3, 32, 32)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[..., : shape[-1] // 2] = 1
    return mask


def test_accept_keeps_painted_pixels_undo_restores_and_overwrite_replaces(viewer) -> None:
    mask = _half_membrane()
    _, annotation = _predicted(viewer, mask)
    annotation.data[1, :4] = 2  # the user painted membrane over the top rows of slice 1
    before = annotation.data.copy()
    widget = _widget(viewer)
    assert widget.annotation_combo.layer() is annotation
    assert widget.prediction_combo.currentText() == "em mask"
    viewer.dims.set_point(0, 1)

    widget.accept_button.click()
    np.testing.assert_array_equal(annotation.data[1, :4], 2)
    np.testing.assert_array_equal(annotation.data[1, 4:], mask[1, 4:] + 1)
    np.testing.assert_array_equal(annotation.data[[0, 2]], 0)
    assert "Accepted" in widget.status_label.text()
    annotation.undo()
    np.testing.assert_array_equal(annotation.data, before)

    widget.overwrite_check.setChecked(True)
    widget.scope_combo.setCurrentText(WHOLE_STACK)
    widget.accept_button.click()
    np.testing.assert_array_equal(annotation.data, mask + 1)


def test_agreement_follows_painting_and_disagreement_marks_the_wrong_pixels(
    viewer, wait_until
) -> None:
    _, annotation = _predicted(viewer, _half_membrane())
    widget = _widget(viewer)
    viewer.layers.selection.active = annotation
    viewer.dims.set_point(0, 0)
    rows, cols = np.nonzero(np.ones((2, 32), bool))
    annotation.data_setitem((np.zeros_like(rows), rows, cols), 2)  # two rows of membrane

    wait_until(lambda: "membrane: IoU 0.500, Dice 0.667" in widget.agreement_label.text())
    assert "background: IoU 0.000" in widget.agreement_label.text()
    assert "slice 0: 64 painted pixels" in widget.agreement_label.text()

    widget.disagreement_check.setChecked(True)
    wait_until(lambda: "painted disagreement" in viewer.layers)
    disagreement = viewer.layers["painted disagreement"]
    expected = np.zeros((1, 32, 32), np.uint8)
    expected[0, :2, 16:] = 1
    np.testing.assert_array_equal(disagreement.data, expected)
    assert viewer.layers.selection.active is annotation  # the brush stays on the annotation

    # Background painted where the prediction says background: agreement, nothing marked.
    annotation.data_setitem((np.zeros(16, int), np.full(16, 5), np.arange(16, 32)), 1)
    wait_until(lambda: "80 painted" in widget.agreement_label.text())
    assert disagreement.data[0, 5].sum() == 0
    np.testing.assert_array_equal(disagreement.data, expected)
    widget.disagreement_check.setChecked(False)
    assert "painted disagreement" not in viewer.layers


def test_most_uncertain_region_moves_to_its_slice_and_centre(viewer, shown_errors) -> None:
    widget = _widget(viewer)
    widget.uncertain_button.click()
    assert any("No uncertainty map yet" in text for text in shown_errors())

    mask = np.zeros((3, 256, 256), np.uint8)
    probabilities = np.eye(2, dtype=np.float32)[mask]
    probabilities[2, 128:, :128] = 0.5
    image, _ = _predicted(viewer, mask, probabilities, scale=(2.0, 1.0, 1.0))
    viewer.dims.set_point(0, 0)
    widget.uncertain_button.click()
    assert current_index(viewer, image) == 2
    camera = getattr(viewer, "scene", viewer).camera
    assert camera.center[-2:] == pytest.approx((192.0, 64.0))


def test_fine_tuning_with_nothing_painted_says_what_to_do(viewer, isbi, shown_errors) -> None:
    image, _ = isbi
    empty = viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="empty")
    widget = _widget(viewer)
    widget.annotation_combo.select(empty)
    widget.fine_tune_button.click()
    assert widget.job is None
    assert any("paint at least a few strokes" in text for text in shown_errors())
    assert widget.fine_tune_button.isEnabled()


def _scribbles(viewer, isbi):
    image, dense = isbi
    scribbles = np.zeros_like(dense.data)
    scribbles[0, ::16] = dense.data[0, ::16]  # every 16th row of slice 0
    annotation = viewer.add_labels(scribbles, name="scribbles", metadata={"class_names": NAMES})
    widget = _widget(viewer)
    widget.image_combo.select(image)
    widget.annotation_combo.select(annotation)
    widget.start_combo.setCurrentText(NEW_NETWORK)  # from scratch, not the built-in model
    widget.config = TINY
    viewer.dims.set_point(0, 0)
    viewer.layers.selection.active = annotation
    return widget, annotation


def test_bursts_on_scribbles_show_a_mask_and_keep_the_network(
    viewer, isbi, finish, shown_errors
) -> None:
    widget, annotation = _scribbles(viewer, isbi)
    assert widget.burst.seconds_spin.value() == BURST_SECONDS  # = the engine's, tests/engine
    widget.burst.seconds_spin.setValue(2.0)
    widget.fine_tune_button.click()
    assert not widget.fine_tune_button.isEnabled()
    assert widget.stop_button.isEnabled()
    finish(widget)
    assert shown_errors() == []
    assert widget.job.state is RunState.DONE
    mask = viewer.layers["ISBI 2012 EM mask"]
    assert mask.data.shape == (1, 512, 512)
    assert mask.metadata["slice"] == 0
    assert set(np.unique(mask.data)) <= {0, 1}
    assert widget.prediction_combo.layer() is mask
    assert "membrane: IoU" in widget.agreement_label.text()
    assert widget.session.current(Task.SEGMENTATION).config.class_names == tuple(NAMES)
    assert viewer.layers.selection.active is annotation
    assert widget.fine_tune_button.isEnabled()
    assert not widget.stop_button.isEnabled()

    tuner, first_model = widget.slot.tuner, widget.session.current(Task.SEGMENTATION)
    seen = mask.data[0].copy()
    rows, cols = np.nonzero(np.ones((4, 512), bool))
    annotation.data_setitem((np.zeros_like(rows), rows + 200, cols), 1)  # a correction
    assert widget.slot.reviewed == {}
    widget.burst.specks_spin.setValue(60)  # "Remove specks under 60 px"
    widget.fine_tune_button.click()
    # The corrected slice counts as reviewed: its unpainted pixels are learned as the
    # mask the user saw while correcting.
    np.testing.assert_array_equal(widget.slot.reviewed[0], seen)
    finish(widget)
    assert widget.job.state is RunState.DONE
    assert widget.slot.tuner == tuner  # the compiled network was kept (the same engine tuner)
    assert widget.session.current(Task.SEGMENTATION) is not first_model
    tuned = widget.session.current(Task.SEGMENTATION)
    assert tuned.config.min_region_pixels == 60  # kept with the model
    sizes = np.bincount(label(mask.data[0], connectivity=1).ravel())[1:]
    assert np.all(sizes >= 60)
    np.testing.assert_array_equal(widget.slot.baseline[1], annotation.data)

    widget.burst.trust_check.setChecked(False)
    assert widget._request().reviewed == {}  # the user's choice: strokes only


def test_the_speck_setting_shows_the_current_models(viewer) -> None:
    widget = _widget(viewer)
    assert widget.burst.specks_spin.value() == 0
    segmentation = SimpleNamespace(
        config=TINY.replace(min_region_pixels=25), task=Task.SEGMENTATION, path=None
    )
    widget.session.add(segmentation, "test")
    assert widget.burst.specks_spin.value() == 25
    classifier = SimpleNamespace(config=object(), task=Task.CLASSIFICATION, path=None)
    widget.session.add(classifier, "test")  # no such setting, and another task's model
    assert widget.burst.specks_spin.value() == 25


def test_stop_during_an_auto_burst_leaves_annotation_and_layers_untouched(
    viewer, isbi, wait_until, finish, shown_errors
) -> None:
    widget, annotation = _scribbles(viewer, isbi)
    widget.burst.seconds_spin.setValue(120.0)
    widget.burst.auto_check.setChecked(True)
    rows, cols = np.nonzero(np.ones((2, 512), bool))
    annotation.data_setitem((np.zeros_like(rows), rows + 300, cols), 1)  # the user paints
    painted = annotation.data.copy()
    names = [layer.name for layer in viewer.layers]
    wait_until(lambda: widget.job is not None)  # ~1.5 s after painting
    wait_until(lambda: "step" in widget.status_label.text())
    widget.stop_button.click()
    assert not widget.stop_button.isEnabled()
    finish(widget)
    assert shown_errors() == []
    assert widget.job.state is RunState.CANCELLED
    np.testing.assert_array_equal(annotation.data, painted)
    assert [layer.name for layer in viewer.layers] == names
    assert widget.session.current(Task.SEGMENTATION) is None
    assert widget.fine_tune_button.isEnabled()
    assert not widget.stop_button.isEnabled()
    assert "Stopped" in widget.status_label.text()


def test_a_second_accept_refreshes_the_accepted_pixels_and_keeps_the_strokes(
    viewer, wait_until
) -> None:
    mask = _half_membrane()  # membrane on the left half, background on the right
    _, annotation = _predicted(viewer, mask)
    annotation.data[1, :4] = 2  # strokes: membrane over the top 4 rows of slice 1
    widget = _widget(viewer)
    viewer.dims.set_point(0, 1)
    assert widget.accept_prediction() == 28 * 32  # every unpainted pixel

    wait_until(lambda: "accepted prediction: 896 pixels, 100.0 %" in widget.agreement_label.text())
    assert "slice 1: 128 painted pixels" in widget.agreement_label.text()
    # Outlined, so they are told apart from the strokes of the same colour.
    outline = viewer.layers["painted accepted"].data[0].astype(bool)
    accepted = np.zeros((32, 32), bool)
    accepted[4:] = True
    assert 0 < outline.sum() < accepted.sum()
    assert not (outline & ~accepted).any()

    # The user corrects one accepted pixel; then a newer prediction says all background.
    annotation.data_setitem((np.array([1]), np.array([10]), np.array([0])), 1)
    viewer.layers["em mask"].data = np.zeros_like(mask)
    # Only accepted pixels change: the left half's, less the corrected one.
    assert widget.accept_prediction() == 28 * 16 - 1
    np.testing.assert_array_equal(annotation.data[1, :4], 2)  # the strokes are kept
    np.testing.assert_array_equal(annotation.data[1, 4:], 1)
    wait_until(lambda: "129 painted pixels" in widget.agreement_label.text())

    annotation.undo()  # the second accept: the first one's pixels are accepted again
    wait_until(lambda: "129 painted pixels" in widget.agreement_label.text())
    annotation.undo()  # the correction
    annotation.undo()  # the first accept
    wait_until(lambda: "accepted" not in widget.agreement_label.text())
    assert "painted accepted" not in viewer.layers
    assert "slice 1: 128 painted pixels" in widget.agreement_label.text()


def test_without_a_model_the_first_burst_starts_from_the_built_in_model(
    viewer, isbi, finish, shown_errors
) -> None:
    """A few strokes and one short burst give the built-in model's good mask at once."""
    image, truth = isbi
    strokes = np.zeros_like(truth.data)
    strokes[1, 100:104] = truth.data[1, 100:104]
    annotation = viewer.add_labels(strokes, name="strokes", metadata={"class_names": NAMES})
    widget = _widget(viewer)
    choices = [widget.start_combo.itemText(i) for i in range(widget.start_combo.count())]
    assert choices[0] == CURRENT_MODEL
    assert choices[-1] == NEW_NETWORK  # a new network stays one click away
    assert widget.start_combo.currentText() == "built-in em-membranes"
    widget.image_combo.select(image)
    widget.annotation_combo.select(annotation)
    widget.burst.seconds_spin.setValue(1.0)
    viewer.dims.set_point(0, 1)
    widget.fine_tune_button.click()
    finish(widget)
    assert shown_errors() == []
    assert widget.job.state is RunState.DONE
    mask = viewer.layers["ISBI 2012 EM mask"].data[0] == 1
    membrane = truth.data[1] == 2
    assert np.count_nonzero(mask & membrane) / np.count_nonzero(mask | membrane) > 0.6
    tuned = widget.session.current(Task.SEGMENTATION)
    assert tuned.config.network.base_filters == 16  # the built-in network, not a new one
    assert "fine-tuned" in widget.session.label(tuned)
    assert widget.start_combo.currentText() == CURRENT_MODEL  # later bursts go on from it
