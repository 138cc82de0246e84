"""Masked losses and metrics: unannotated pixels (annotation 0) count for nothing.

``y_true`` is the annotation itself, shape ``(B, H, W)`` or ``(B, H, W, 1)``: 0 = not
annotated, 1 = background, ``k >= 2`` = class ``k - 1``.  ``y_pred`` is the U-Net output: one
sigmoid channel (probability of the single foreground class) or a softmax over all classes.
These objects are only needed for training; saved models load without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from napari_dlbio.core.segmentation_config import LossKind
from napari_dlbio.models._tf import load_keras, load_tensorflow

tf = load_tensorflow()
keras = load_keras()

_EPSILON = 1e-7


def class_probabilities(y_pred: Any) -> Any:
    """Turn a one-channel sigmoid output into two-class probabilities; pass softmax through."""
    y_pred = tf.cast(y_pred, tf.float32)
    if y_pred.shape[-1] == 1:
        return tf.concat([1.0 - y_pred, y_pred], axis=-1)
    return y_pred


def _split_annotation(y_true: Any) -> tuple[Any, Any]:
    """Network class index (0 where unannotated) and the annotated mask, both (B, H, W)."""
    annotation = tf.cast(y_true, tf.int32)
    if annotation.shape.rank == 4:
        annotation = tf.squeeze(annotation, axis=-1)
    annotated = tf.cast(annotation > 0, tf.float32)
    return tf.maximum(annotation - 1, 0), annotated


@keras.saving.register_keras_serializable(package="napari_dlbio")
class MaskedSegmentationLoss(keras.losses.Loss):
    """Cross-entropy, Dice or both, over annotated pixels only.

    Parameters
    ----------
    n_classes
        Network classes including the background.
    kind
        Which loss (a :class:`LossKind` or its value).
    class_weights
        Optional weight per class for the cross-entropy (weighted cross-entropy).
    """

    def __init__(
        self,
        n_classes: int,
        kind: LossKind | str = LossKind.CROSS_ENTROPY,
        class_weights: Sequence[float] | None = None,
        name: str = "masked_segmentation_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.n_classes = int(n_classes)
        self.kind = LossKind(kind)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def call(self, y_true: Any, y_pred: Any) -> Any:
        classes, annotated = _split_annotation(y_true)
        probabilities = class_probabilities(y_pred)
        loss = tf.zeros((), tf.float32)
        if self.kind in (LossKind.CROSS_ENTROPY, LossKind.CROSS_ENTROPY_DICE):
            loss += masked_cross_entropy(classes, annotated, probabilities, self.class_weights)
        if self.kind in (LossKind.DICE, LossKind.CROSS_ENTROPY_DICE):
            loss += masked_dice_loss(classes, annotated, probabilities, self.n_classes)
        return loss

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_classes": self.n_classes,
            "kind": self.kind.value,
            "class_weights": self.class_weights,
        }


def masked_cross_entropy(
    classes: Any, annotated: Any, probabilities: Any, class_weights: Sequence[float] | None
) -> Any:
    """Mean (optionally class-weighted) cross-entropy over annotated pixels of the batch."""
    picked = tf.gather(probabilities, classes, axis=-1, batch_dims=3)
    entropy = -tf.math.log(tf.clip_by_value(picked, _EPSILON, 1.0))
    weights = annotated
    if class_weights is not None:
        weights = weights * tf.gather(tf.constant(class_weights, tf.float32), classes)
    # Dividing by the annotated pixel count (not the weight sum) keeps weighted and
    # unweighted losses on one scale when the weights average to one over the pixels.
    return tf.reduce_sum(weights * entropy) / tf.maximum(tf.reduce_sum(annotated), 1.0)


def masked_dice_loss(classes: Any, annotated: Any, probabilities: Any, n_classes: int) -> Any:
    """One minus the soft Dice coefficient averaged over classes, on annotated pixels."""
    target = tf.one_hot(classes, n_classes, dtype=tf.float32) * annotated[..., None]
    predicted = probabilities * annotated[..., None]
    intersection = tf.reduce_sum(target * predicted, axis=(0, 1, 2))
    total = tf.reduce_sum(target + predicted, axis=(0, 1, 2))
    dice = (2.0 * intersection + 1.0) / (total + 1.0)
    return 1.0 - tf.reduce_mean(dice)


@keras.saving.register_keras_serializable(package="napari_dlbio")
class MaskedIoU(keras.metrics.Metric):
    """Mean intersection over union of the foreground classes, over annotated pixels.

    Intersections and unions accumulate over all batches of an epoch (or a validation
    pass), so the figure is the IoU of the whole set, not a mean of per-batch values.
    Classes that never occur in either the annotation or the prediction are left out;
    with none left the figure is undefined (NaN).
    """

    def __init__(self, n_classes: int, name: str = "iou", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.n_classes = int(n_classes)
        self.intersection = self.add_weight(
            name="intersection", shape=(self.n_classes,), initializer="zeros"
        )
        self.union = self.add_weight(name="union", shape=(self.n_classes,), initializer="zeros")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        classes, annotated = _split_annotation(y_true)
        predicted = tf.argmax(class_probabilities(y_pred), axis=-1, output_type=tf.int32)
        truth = tf.one_hot(classes, self.n_classes) * annotated[..., None]
        guess = tf.one_hot(predicted, self.n_classes) * annotated[..., None]
        self.intersection.assign_add(tf.reduce_sum(truth * guess, axis=(0, 1, 2)))
        self.union.assign_add(tf.reduce_sum(tf.maximum(truth, guess), axis=(0, 1, 2)))

    def result(self) -> Any:
        intersection = self.intersection[1:]
        union = self.union[1:]
        present = union > 0
        iou = tf.boolean_mask(intersection / tf.maximum(union, 1.0), present)
        return tf.cond(
            tf.reduce_any(present), lambda: tf.reduce_mean(iou), lambda: tf.constant(float("nan"))
        )

    def reset_state(self) -> None:
        self.intersection.assign(tf.zeros_like(self.intersection))
        self.union.assign(tf.zeros_like(self.union))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_classes": self.n_classes}
