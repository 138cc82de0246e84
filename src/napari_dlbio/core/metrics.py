"""Confusion matrices and the figures users read from them: IoU, Dice, accuracy, precision.

Every function works on class indices (0..K-1, 0 = background for segmentation).  Figures
that are undefined (a class absent from both truth and prediction) are NaN in the arrays and
``None`` in the JSON reports, never NaN, so the reports always serialise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_dlbio.core.errors import InputDataError

# Pixels counted per bincount call: bounds the int64 temporaries on huge volumes.
_CHUNK = 1 << 22


def confusion_matrix(
    true: np.ndarray,
    predicted: np.ndarray,
    n_classes: int,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Count pixels (or samples) by true and predicted class.

    Parameters
    ----------
    true, predicted : np.ndarray
        Integer class indices in ``0..n_classes-1``, same shape.
    n_classes : int
        Number of classes K.
    valid : np.ndarray, optional
        Boolean mask of the same shape; only pixels where it is True are counted
        (unannotated pixels are left out this way).

    Returns
    -------
    np.ndarray
        int64 array (K, K); rows are true classes, columns predicted classes.

    Raises
    ------
    InputDataError
        When shapes differ or a class index is outside ``0..n_classes-1``.
    """
    if n_classes < 1:
        raise InputDataError(f"The number of classes must be at least 1, got {n_classes}.")
    true = np.asarray(true)
    predicted = np.asarray(predicted)
    if true.shape != predicted.shape:
        raise InputDataError(
            f"Truth and prediction have different shapes {true.shape} and {predicted.shape}; "
            "compare a prediction with the labels of the same image."
        )
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != true.shape:
            raise InputDataError(
                f"The mask of valid pixels has shape {valid.shape}, "
                f"the labels have shape {true.shape}."
            )
    flat_true = true.reshape(-1)
    flat_predicted = predicted.reshape(-1)
    flat_valid = None if valid is None else valid.reshape(-1)
    counts = np.zeros(n_classes * n_classes, dtype=np.int64)
    for start in range(0, flat_true.size, _CHUNK):
        block = slice(start, start + _CHUNK)
        t = flat_true[block]
        p = flat_predicted[block]
        if flat_valid is not None:
            keep = flat_valid[block]
            t = t[keep]
            p = p[keep]
        if t.size == 0:
            continue
        _check_range(t, n_classes, "true")
        _check_range(p, n_classes, "predicted")
        counts += np.bincount(
            t.astype(np.int64) * n_classes + p.astype(np.int64),
            minlength=n_classes * n_classes,
        )
    return counts.reshape(n_classes, n_classes)


def check_same_shape(truth: np.ndarray, prediction: np.ndarray) -> None:
    """Refuse a prediction and ground truth of different shapes, saying what to do."""
    if truth.shape != prediction.shape:
        raise InputDataError(
            f"Truth and prediction have different shapes {truth.shape} and {prediction.shape}; "
            "compare a prediction with the labels of the same image."
        )


def _check_range(values: np.ndarray, n_classes: int, what: str) -> None:
    if not np.issubdtype(values.dtype, np.integer) and values.dtype != bool:
        raise InputDataError(
            f"The {what} classes must be whole numbers (integer array), got {values.dtype}."
        )
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= n_classes:
        raise InputDataError(
            f"The {what} classes range from {low} to {high}, but only classes "
            f"0..{n_classes - 1} exist; check the class names or the number of classes."
        )


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """Intersection over union of each class, TP / (TP + FP + FN).

    Returns
    -------
    np.ndarray
        float64 (K,), NaN where the class is absent from both truth and prediction.
    """
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    return _ratio(tp, cm.sum(axis=0) + cm.sum(axis=1) - tp)


def dice_per_class(cm: np.ndarray) -> np.ndarray:
    """Dice coefficient (F1) of each class, 2 TP / (2 TP + FP + FN).

    Returns
    -------
    np.ndarray
        float64 (K,), NaN where the class is absent from both truth and prediction.
    """
    cm = np.asarray(cm, dtype=np.int64)
    return _ratio(2 * np.diag(cm), cm.sum(axis=0) + cm.sum(axis=1))


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of counted pixels whose predicted class is right (NaN when none counted)."""
    cm = np.asarray(cm, dtype=np.int64)
    total = int(cm.sum())
    return float(np.trace(cm) / total) if total else float("nan")


def precision_recall(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision TP / (TP + FP) and recall TP / (TP + FN) of each class.

    Returns
    -------
    tuple of np.ndarray
        (precision, recall), float64 (K,) each; NaN where the class was never predicted
        (precision) or never present (recall).
    """
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm)
    return _ratio(tp, cm.sum(axis=0)), _ratio(tp, cm.sum(axis=1))


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _class_figures(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    iou = iou_per_class(cm)
    dice = dice_per_class(cm)
    pixels = cm.sum(axis=1)
    return {
        name: {
            "iou": _json_float(iou[k]),
            "dice": _json_float(dice[k]),
            "pixels": int(pixels[k]),
        }
        for k, name in enumerate(class_names)
    }


def segmentation_report(
    true_classes: np.ndarray,
    predicted_classes: np.ndarray,
    class_names: Sequence[str],
    valid: np.ndarray | None = None,
) -> dict[str, Any]:
    """Overall and per-slice IoU / Dice of a predicted stack, as JSON-ready data.

    Parameters
    ----------
    true_classes, predicted_classes : np.ndarray
        Class indices (Z, Y, X) (a single YX slice is accepted as one slice).
    class_names : sequence of str
        Name of each class index, background first.
    valid : np.ndarray, optional
        Boolean (Z, Y, X); only these pixels count (e.g. the annotated ones).

    Returns
    -------
    dict
        ``{"pixel_accuracy", "classes": {name: {"iou", "dice", "pixels"}},
        "slices": [{"slice", "pixel_accuracy", "classes"}], "confusion_matrix"}``;
        "pixels" counts the true pixels of the class among valid pixels and undefined
        figures are ``None``.
    """
    names = list(class_names)
    if len(set(names)) != len(names):
        raise InputDataError(f"Class names must be distinct, got {names}.")
    true_classes = np.asarray(true_classes)
    predicted_classes = np.asarray(predicted_classes)
    check_same_shape(true_classes, predicted_classes)
    if valid is not None and np.shape(valid) != true_classes.shape:
        raise InputDataError(
            f"The mask of valid pixels has shape {np.shape(valid)}, "
            f"the labels have shape {true_classes.shape}."
        )
    if true_classes.ndim == 2:
        true_classes = true_classes[np.newaxis]
        predicted_classes = predicted_classes[np.newaxis]
        valid = None if valid is None else np.asarray(valid)[np.newaxis]
    if true_classes.ndim != 3:
        raise InputDataError(
            f"Expected class maps of shape (Z, Y, X), got shape {true_classes.shape}."
        )
    n_classes = len(names)
    total = np.zeros((n_classes, n_classes), dtype=np.int64)
    slices = []
    for z in range(true_classes.shape[0]):
        cm = confusion_matrix(
            true_classes[z],
            predicted_classes[z],
            n_classes,
            None if valid is None else valid[z],
        )
        total += cm
        slices.append(
            {
                "slice": z,
                "pixel_accuracy": _json_float(pixel_accuracy(cm)),
                "classes": _class_figures(cm, names),
            }
        )
    return {
        "pixel_accuracy": _json_float(pixel_accuracy(total)),
        "classes": _class_figures(total, names),
        "slices": slices,
        "confusion_matrix": total.tolist(),
    }


def classification_report(
    true: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / support and the confusion matrix.

    Parameters
    ----------
    true, predicted : np.ndarray
        Class indices (N,) of N images.
    class_names : sequence of str
        Name of each class index.

    Returns
    -------
    dict
        ``{"accuracy", "classes": {name: {"precision", "recall", "support"}},
        "confusion_matrix"}``; undefined figures are ``None``.
    """
    names = list(class_names)
    cm = confusion_matrix(np.ravel(true), np.ravel(predicted), len(names))
    precision, recall = precision_recall(cm)
    support = cm.sum(axis=1)
    return {
        "accuracy": _json_float(pixel_accuracy(cm)),
        "classes": {
            name: {
                "precision": _json_float(precision[k]),
                "recall": _json_float(recall[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(names)
        },
        "confusion_matrix": cm.tolist(),
    }
