"""IoU, Dice and the JSON reports the CLI prints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.metrics import (
    classification_report,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    pixel_accuracy,
    precision_recall,
    segmentation_report,
)

TRUE = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
PRED = np.array([[0, 1, 1, 1], [0, 0, 0, 1]])


def test_confusion_matrix_counts_true_rows_predicted_columns():
    cm = confusion_matrix(TRUE, PRED, 2)
    np.testing.assert_array_equal(cm, [[3, 1], [1, 3]])
    assert cm.dtype == np.int64


def test_iou_and_dice_match_hand_computation():
    cm = confusion_matrix(TRUE, PRED, 2)
    # class 1: TP 3, FP 1, FN 1 -> IoU 3/5, Dice 6/8
    np.testing.assert_allclose(iou_per_class(cm), [3 / 5, 3 / 5])
    np.testing.assert_allclose(dice_per_class(cm), [6 / 8, 6 / 8])
    assert pixel_accuracy(cm) == pytest.approx(6 / 8)
    precision, recall = precision_recall(cm)
    np.testing.assert_allclose(precision, [3 / 4, 3 / 4])
    np.testing.assert_allclose(recall, [3 / 4, 3 / 4])


def test_unannotated_pixels_are_ignored():
    valid = np.array([[True, False, True, True], [True, True, False, True]])
    cm = confusion_matrix(TRUE, PRED, 2, valid=valid)
    np.testing.assert_array_equal(cm, [[3, 0], [0, 3]])
    assert pixel_accuracy(cm) == 1.0


def test_class_absent_everywhere_is_nan_not_zero():
    cm = confusion_matrix(np.zeros(4, int), np.zeros(4, int), 3)
    iou = iou_per_class(cm)
    assert iou[0] == 1.0
    assert np.isnan(iou[1:]).all()
    assert np.isnan(dice_per_class(cm)[1:]).all()


def test_out_of_range_class_is_a_clear_error():
    with pytest.raises(InputDataError, match=r"0\.\.1"):
        confusion_matrix(np.array([0, 2]), np.array([0, 1]), 2)
    with pytest.raises(InputDataError, match="shapes"):
        confusion_matrix(np.zeros(3, int), np.zeros(4, int), 2)


def test_confusion_matrix_on_large_arrays_spans_chunks():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, 5_000_000, dtype=np.uint8)
    predicted = rng.integers(0, 3, 5_000_000, dtype=np.uint8)
    cm = confusion_matrix(true, predicted, 3)
    assert cm.sum() == true.size
    assert cm[1, 2] == np.count_nonzero((true == 1) & (predicted == 2))


def test_segmentation_report_shape_and_json():
    true = np.stack([TRUE, np.zeros_like(TRUE)])
    predicted = np.stack([PRED, np.zeros_like(PRED)])
    valid = np.ones(true.shape, bool)
    valid[1, 0, 0] = False
    report = segmentation_report(true, predicted, ["background", "membrane"], valid)
    json.dumps(report, allow_nan=False)
    assert set(report) == {"pixel_accuracy", "classes", "slices", "confusion_matrix"}
    assert set(report["classes"]) == {"background", "membrane"}
    assert set(report["classes"]["membrane"]) == {"iou", "dice", "pixels"}
    assert report["classes"]["membrane"]["pixels"] == 4
    assert report["classes"]["background"]["pixels"] == 4 + 7
    assert report["classes"]["membrane"]["iou"] == pytest.approx(3 / 5)
    assert [s["slice"] for s in report["slices"]] == [0, 1]
    second = report["slices"][1]
    assert second["pixel_accuracy"] == 1.0
    assert second["classes"]["membrane"] == {"iou": None, "dice": None, "pixels": 0}
    assert report["confusion_matrix"] == [[10, 1], [1, 3]]


def test_segmentation_report_with_nothing_valid_uses_null():
    report = segmentation_report(TRUE, PRED, ["bg", "fg"], np.zeros(TRUE.shape, bool))
    json.dumps(report, allow_nan=False)
    assert report["pixel_accuracy"] is None
    assert len(report["slices"]) == 1


def test_classification_report():
    report = classification_report(
        np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 1]), ["a", "b", "c"]
    )
    json.dumps(report, allow_nan=False)
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["classes"]["b"] == {
        "precision": pytest.approx(2 / 4),
        "recall": 1.0,
        "support": 2,
    }
    assert report["classes"]["c"] == {"precision": None, "recall": 0.0, "support": 1}
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_classes=st.integers(1, 5),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=12),
)
def test_metric_properties(data, n_classes, shape):
    classes = hnp.arrays(np.int64, shape, elements=st.integers(0, n_classes - 1))
    true = data.draw(classes)
    predicted = data.draw(classes)
    valid = data.draw(hnp.arrays(bool, shape))
    cm = confusion_matrix(true, predicted, n_classes, valid)
    assert cm.sum() == valid.sum()
    np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(true[valid], minlength=n_classes))
    for figure in (iou_per_class(cm), dice_per_class(cm)):
        defined = figure[~np.isnan(figure)]
        assert ((defined >= 0) & (defined <= 1)).all()
    iou, dice = iou_per_class(cm), dice_per_class(cm)
    both = ~np.isnan(iou)
    # Dice is never below IoU: D = 2J / (1 + J).
    np.testing.assert_allclose(dice[both], 2 * iou[both] / (1 + iou[both]))
