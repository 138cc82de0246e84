"""Data & annotation: an annotation layer that matches the image, and labels converted."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

from napari_dlbio._widgets.data_widget import VALUES_READING, DataWidget

pytestmark = pytest.mark.gui


def test_create_annotation_matches_image_with_named_classes_and_brush(viewer, isbi) -> None:
    image, _ = isbi
    image.scale = (50.0, 4.0, 4.0)
    image.translate = (0.0, 10.0, 20.0)
    widget = DataWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.select(image)
    widget.classes_edit.setText("background, membrane, mitochondria")
    widget.create_button.click()

    layer = viewer.layers["ISBI 2012 EM annotation"]
    assert isinstance(layer, Labels)
    assert layer.data.shape == image.data.shape
    assert not layer.data.any()
    np.testing.assert_allclose(layer.scale, image.scale)
    np.testing.assert_allclose(layer.translate, image.translate)
    assert layer.metadata["class_names"] == ["background", "membrane", "mitochondria"]
    assert list(layer.features["class"]) == [
        "not annotated",
        "background",
        "membrane",
        "mitochondria",
    ]
    assert viewer.layers.selection.active is layer
    assert layer.mode == "paint"
    assert layer.selected_label == 2
    colours = {tuple(np.round(layer.colormap.map(v), 3)) for v in (1, 2, 3)}
    assert len(colours) == 3


def test_one_class_name_is_refused_with_a_notification(viewer, isbi, shown_errors) -> None:
    widget = DataWidget(viewer)
    widget.classes_edit.setText("membrane")
    before = len(viewer.layers)
    widget.create_button.click()
    assert len(viewer.layers) == before
    assert any("two different class names" in text for text in shown_errors())


def test_isbi_values_become_an_annotation_and_the_source_stays(viewer) -> None:
    isbi_labels = np.where(np.arange(5 * 4 * 4).reshape(5, 4, 4) % 3 == 0, 0, 255).astype(np.uint8)
    source = viewer.add_labels(isbi_labels.copy(), name="train-labels")
    widget = DataWidget(viewer)
    widget.labels_combo.select(source)
    widget.reading_combo.setCurrentText(VALUES_READING)
    widget.values_edit.setText("255=background, 0=membrane")
    widget.classes_edit.setText("background, membrane")
    widget.convert_button.click()

    annotation = viewer.layers["train-labels annotation"]
    np.testing.assert_array_equal(annotation.data, np.where(isbi_labels == 0, 2, 1))
    np.testing.assert_array_equal(source.data, isbi_labels)
    assert annotation.metadata["class_names"] == ["background", "membrane"]


def test_a_mask_is_accepted_as_annotation(viewer) -> None:
    mask = viewer.add_labels(np.array([[[0, 1], [2, 0]]], np.uint8), name="em mask")
    mask.metadata["class_names"] = ["background", "membrane", "mitochondria"]
    widget = DataWidget(viewer)
    widget.labels_combo.select(mask)
    widget.convert_button.click()
    annotation = viewer.layers["em mask annotation"]
    np.testing.assert_array_equal(annotation.data, [[[1, 2], [3, 1]]])


def test_leaf_stack_is_recognised_for_the_classifier(viewer, leaves) -> None:
    widget = DataWidget(viewer)
    widget.image_combo.select(leaves)
    assert "Leaf stack" in widget.kind_label.text()
    assert not widget.create_button.isEnabled()
    assert widget.class_names() == list(leaves.metadata["class_names"])
