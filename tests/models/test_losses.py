"""Masked losses and the IoU metric: unannotated pixels must never count."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio.core.labels import classes_from_annotation
from napari_dlbio.core.metrics import confusion_matrix, iou_per_class
from napari_dlbio.core.segmentation_config import LossKind
from napari_dlbio.models.losses import MaskedIoU, MaskedSegmentationLoss


def _random_case(rng, n_classes, shape=(2, 8, 8)):
    annotation = rng.integers(0, n_classes + 1, shape).astype(np.uint8)
    channels = 1 if n_classes == 2 else n_classes
    logits = rng.normal(size=(*shape, channels)).astype(np.float32)
    if channels == 1:
        prediction = 1 / (1 + np.exp(-logits))
    else:
        prediction = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return annotation, prediction.astype(np.float32)


def _as_probabilities(prediction):
    if prediction.shape[-1] == 1:
        return np.concatenate([1 - prediction, prediction], axis=-1)
    return prediction


@pytest.mark.parametrize("n_classes", [2, 4])
def test_cross_entropy_matches_the_textbook_formula_on_annotated_pixels(n_classes):
    annotation, prediction = _random_case(np.random.default_rng(0), n_classes)
    loss = float(MaskedSegmentationLoss(n_classes)(annotation, prediction))
    classes, annotated = classes_from_annotation(annotation)
    probabilities = _as_probabilities(prediction)
    picked = np.take_along_axis(probabilities, classes[..., None].astype(int), -1)[..., 0]
    expected = -np.log(picked[annotated]).mean()
    assert loss == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("kind", list(LossKind))
def test_predictions_on_unannotated_pixels_do_not_change_the_loss(kind):
    rng = np.random.default_rng(1)
    annotation, prediction = _random_case(rng, 3)
    changed = prediction.copy()
    unannotated = annotation == 0
    changed[unannotated] = rng.permutation(changed[unannotated])
    changed[unannotated] = changed[unannotated][:, ::-1]
    assert not np.allclose(changed, prediction)
    loss = MaskedSegmentationLoss(3, kind)
    assert float(loss(annotation, changed)) == pytest.approx(float(loss(annotation, prediction)))


def test_a_batch_without_annotation_gives_zero_loss_not_nan():
    annotation = np.zeros((1, 4, 4), np.uint8)
    prediction = np.full((1, 4, 4, 1), 0.3, np.float32)
    assert float(MaskedSegmentationLoss(2)(annotation, prediction)) == 0.0


def test_class_weights_scale_each_class_like_weighted_cross_entropy():
    annotation = np.array([[[1, 2, 2, 0]]], np.uint8)
    prediction = np.array([[[[0.2], [0.6], [0.9], [0.5]]]], np.float32)
    weighted = float(MaskedSegmentationLoss(2, class_weights=[1.0, 3.0])(annotation, prediction))
    expected = -(np.log(0.8) + 3 * np.log(0.6) + 3 * np.log(0.9)) / 3
    assert weighted == pytest.approx(expected, rel=1e-5)


def test_dice_loss_is_near_zero_when_right_and_near_one_when_wrong():
    annotation = np.zeros((1, 16, 16), np.uint8)
    annotation[:, :8] = 1
    annotation[:, 8:] = 2
    right = (annotation == 2).astype(np.float32)[..., None]
    dice = MaskedSegmentationLoss(2, LossKind.DICE)
    assert float(dice(annotation, right)) < 0.01
    assert float(dice(annotation, 1 - right)) > 0.95
    both = float(MaskedSegmentationLoss(2, LossKind.CROSS_ENTROPY_DICE)(annotation, 1 - right))
    single = float(MaskedSegmentationLoss(2)(annotation, 1 - right))
    assert both == pytest.approx(single + float(dice(annotation, 1 - right)), rel=1e-5)


def test_iou_metric_agrees_with_the_numpy_metrics_over_several_batches():
    rng = np.random.default_rng(2)
    metric = MaskedIoU(3)
    matrix = np.zeros((3, 3), np.int64)
    for _ in range(3):
        annotation, prediction = _random_case(rng, 3)
        metric.update_state(annotation, prediction)
        classes, annotated = classes_from_annotation(annotation)
        matrix += confusion_matrix(classes, prediction.argmax(-1), 3, valid=annotated)
    expected = np.nanmean(iou_per_class(matrix)[1:])
    assert float(metric.result()) == pytest.approx(expected, rel=1e-5)
    metric.reset_state()
    annotation = np.array([[[0, 2], [0, 2]]], np.uint8)
    prediction = np.array([[[[0.1], [0.9]], [[0.1], [0.9]]]], np.float32)
    metric = MaskedIoU(2)
    metric.update_state(annotation, prediction)
    assert float(metric.result()) == pytest.approx(1.0)


def test_loss_survives_keras_serialisation():
    loss = MaskedSegmentationLoss(3, LossKind.DICE, [1.0, 2.0, 3.0])
    again = MaskedSegmentationLoss.from_config(loss.get_config())
    assert again.kind is LossKind.DICE
    assert again.class_weights == [1.0, 2.0, 3.0]
