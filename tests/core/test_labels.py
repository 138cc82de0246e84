"""Label conventions: dense labels, masks and annotations."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio.core.errors import ConfigError, InputDataError
from napari_dlbio.core.labels import (
    annotated_classes,
    annotation_from_dense,
    annotation_from_mask,
    check_annotation,
    classes_from_annotation,
    parse_label_values,
    prediction_edit,
    with_reviewed_slices,
)

ISBI_CLASSES = ["background", "membrane"]


def test_parse_label_values():
    assert parse_label_values("255=background, 0 = membrane") == {
        255: "background",
        0: "membrane",
    }
    assert parse_label_values("0=bg,1=bg,2=cell,") == {0: "bg", 1: "bg", 2: "cell"}
    assert parse_label_values("-1=bg") == {-1: "bg"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "No label values"),
        (" , ", "No label values"),
        ("255", "no '='"),
        ("x=membrane", "not a whole number"),
        ("0=", "no class name"),
        ("0=a,0=b", "given twice"),
    ],
)
def test_parse_label_values_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_label_values(text)


def test_annotation_from_dense_maps_values_to_class_plus_one():
    labels = np.array([[0, 255], [255, 255]], dtype=np.uint8)
    annotation = annotation_from_dense(labels, {255: "background", 0: "membrane"}, ISBI_CLASSES)
    np.testing.assert_array_equal(annotation, [[2, 1], [1, 1]])
    assert annotation.dtype == np.uint8


def test_annotation_from_dense_lists_unmapped_values_and_the_fix():
    labels = np.array([0, 255, 7, 9])
    with pytest.raises(InputDataError, match=r"7, 9.*--label-values"):
        annotation_from_dense(labels, {255: "background", 0: "membrane"}, ISBI_CLASSES)


def test_annotation_from_dense_rejects_unknown_class_names():
    with pytest.raises(InputDataError, match="'nucleus'"):
        annotation_from_dense(np.zeros(3, int), {0: "nucleus"}, ISBI_CLASSES)


def test_isbi_labels_give_about_22_percent_membrane(isbi_dir):
    tifffile = pytest.importorskip("tifffile")
    labels = tifffile.imread(isbi_dir / "train-labels.tif")
    mapping = parse_label_values("255=background,0=membrane")
    annotation = annotation_from_dense(labels, mapping, ISBI_CLASSES)
    assert annotation.shape == (30, 512, 512)
    classes, annotated = classes_from_annotation(annotation)
    assert annotated.all()
    assert classes.mean() == pytest.approx(0.22, abs=0.01)
    check_annotation(annotation, 2, image_shape=(30, 512, 512))


def test_mask_annotation_round_trip():
    mask = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    annotation = annotation_from_mask(mask)
    np.testing.assert_array_equal(annotation, mask + 1)
    classes, annotated = classes_from_annotation(annotation)
    np.testing.assert_array_equal(classes, mask)
    assert annotated.all()
    with pytest.raises(InputDataError):
        annotation_from_mask(np.array([-1, 0]))


def test_classes_from_sparse_annotation():
    annotation = np.array([0, 1, 2, 3, 0], dtype=np.uint8)
    classes, annotated = classes_from_annotation(annotation)
    np.testing.assert_array_equal(classes, [0, 0, 1, 2, 0])
    np.testing.assert_array_equal(annotated, [False, True, True, True, False])
    assert annotated_classes(annotation) == {0, 1, 2}
    assert annotated_classes(np.array([0, 0, 3], dtype=np.int32)) == {2}
    assert annotated_classes(np.zeros(4, np.uint8)) == set()


def test_check_annotation_accepts_a_good_annotation():
    annotation = np.zeros((2, 4, 4), np.uint8)
    annotation[0, 1, 1] = 1
    annotation[1, 2, 2] = 3
    check_annotation(annotation, 3)
    check_annotation(annotation, 3, image_shape=(2, 4, 4, 3))


@pytest.mark.parametrize(
    ("annotation", "n_classes", "shape", "message"),
    [
        (np.full((1, 2, 2), 1.0), 2, None, "whole numbers"),
        (np.full((1, 2, 2), 4, np.uint8), 2, None, "value 4"),
        (np.full((1, 2, 2), -1, np.int16), 2, None, "negative"),
        (np.zeros((1, 2, 2), np.uint8), 2, None, "paint at least a few strokes"),
        (np.ones((1, 2, 2), np.uint8), 2, (1, 3, 2), r"\(1, 2, 2\).*\(1, 3, 2\)"),
        (np.ones((1, 2, 2), np.uint8), 2, (1, 2, 2, 3, 1), "shape"),
    ],
)
def test_check_annotation_errors(annotation, n_classes, shape, message):
    with pytest.raises(InputDataError, match=message):
        check_annotation(annotation, n_classes, image_shape=shape)


def test_accepting_a_prediction_keeps_what_the_user_painted():
    annotation = np.array([[0, 2, 0], [1, 0, 0]], np.uint8)
    mask = np.array([[1, 0, 1], [1, 0, 0]], np.uint8)  # classes: 0 background, 1 membrane
    indices, values = prediction_edit(annotation, mask)
    edited = annotation.copy()
    edited[indices] = values
    np.testing.assert_array_equal(edited, [[2, 2, 2], [1, 1, 1]])
    assert values.dtype == annotation.dtype


def test_accepting_with_overwrite_replaces_the_users_pixels_too():
    annotation = np.array([[0, 2], [1, 1]], np.uint8)
    mask = np.array([[1, 0], [1, 0]], np.uint8)
    indices, values = prediction_edit(annotation, mask, overwrite=True)
    edited = annotation.copy()
    edited[indices] = values
    np.testing.assert_array_equal(edited, [[2, 1], [2, 1]])
    assert len(values) == 3  # the unchanged pixel is not part of the edit


def test_accepting_a_prediction_of_another_image_is_refused():
    with pytest.raises(InputDataError, match="does not match"):
        prediction_edit(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))


def test_reviewed_slices_add_the_seen_mask_where_nothing_was_painted() -> None:
    annotation = np.zeros((3, 2, 3), np.uint8)
    annotation[1, 0, 0] = 2  # a correction: class 1
    annotation[2, 1, 1] = 1  # paint on a slice that was not reviewed
    seen = np.array([[0, 1, 1], [0, 0, 1]])

    labels = with_reviewed_slices(annotation, {1: seen})

    np.testing.assert_array_equal(labels[1], [[2, 2, 2], [1, 1, 2]])  # the stroke wins
    np.testing.assert_array_equal(labels[[0, 2]], annotation[[0, 2]])
    assert annotation[1].sum() == 2  # the user's annotation is not changed
    assert with_reviewed_slices(annotation, {}) is annotation


def test_a_reviewed_2d_annotation_is_one_slice() -> None:
    annotation = np.zeros((2, 2), np.uint8)
    annotation[0, 0] = 1
    labels = with_reviewed_slices(annotation, {0: np.ones((2, 2), np.uint8)})
    np.testing.assert_array_equal(labels, [[1, 2], [2, 2]])
