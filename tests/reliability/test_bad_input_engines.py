"""Bad arrays through the training, prediction and evaluation functions of both engines.

Each case must raise a :class:`~napari_dlbio.core.errors.DlbioError` whose message says what
is wrong, before any training starts, and must leave the caller's arrays untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError, InputDataError, ModelFolderError
from napari_dlbio.core.events import Notice, TrainingStarted

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 255, (2, 64, 64), dtype=np.uint8)
ANNOTATION = np.where(IMAGES > 128, 2, 1).astype(np.uint8)
PHOTOS = RNG.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
CLASSES = np.array([0, 1, 0, 1, 0, 1])
# A 1 TB slice that takes no memory: every pixel is the same byte.
HUGE_SLICE = np.broadcast_to(np.uint8(7), (1, 1_000_000, 1_000_000))


def _with(array: np.ndarray, value: Any, dtype: Any = None) -> np.ndarray:
    out = array.astype(dtype or array.dtype)
    out.flat[5] = value
    return out


# name -> (images, annotation, regular expression of the message)
SEGMENTATION_TRAINING = {
    "1D images": (IMAGES.ravel(), ANNOTATION, "shape"),
    "5D images": (IMAGES[None, :, :, :, None], ANNOTATION, "shape"),
    "complex images": (IMAGES.astype(np.complex64), ANNOTATION, "complex64 cannot be segmented"),
    "object images": (IMAGES.astype(object), ANNOTATION, "object cannot be segmented"),
    "text images": (IMAGES.astype(str), ANNOTATION, "cannot be segmented"),
    "NaN pixel": (_with(IMAGES, np.nan, np.float32), ANNOTATION, "NaN or infinite"),
    "infinite pixel": (_with(IMAGES, np.inf, np.float64), ANNOTATION, "NaN or infinite"),
    "-infinite pixel": (_with(IMAGES, -np.inf, np.float16), ANNOTATION, "NaN or infinite"),
    "narrower annotation": (IMAGES, ANNOTATION[:, :, :32], "shape"),
    "more annotated slices": (IMAGES, np.concatenate([ANNOTATION] * 2), "shape"),
    "5 channels": (
        np.stack([IMAGES] * 5, axis=-1),
        ANNOTATION,
        r"grey images \(1 channel\) but the image has 5 channels",
    ),
    "nothing annotated": (IMAGES, np.zeros_like(ANNOTATION), "Nothing is annotated"),
    "no slices": (IMAGES[:0], ANNOTATION[:0], "Nothing is annotated|empty"),
    "float annotation": (IMAGES, ANNOTATION.astype(np.float32), "whole numbers"),
    "complex annotation": (IMAGES, ANNOTATION.astype(complex), "whole numbers"),
    "object annotation": (IMAGES, ANNOTATION.astype(object), "whole numbers"),
    "text annotation": (IMAGES, ANNOTATION.astype(str), "whole numbers"),
    "negative annotation": (IMAGES, _with(ANNOTATION, -1, np.int16), "negative"),
    "class beyond the names": (IMAGES, _with(ANNOTATION, 9), "only 2 classes"),
    "images smaller than a patch": (IMAGES[:, :16, :16], ANNOTATION[:, :16, :16], "patch size"),
}


def _unchanged(arrays: tuple[Any, ...], call: Callable[[], Any]) -> BaseException:
    # Read-only views (the 1 TB broadcast slice) cannot change and cannot be copied.
    copies = [np.array(array, copy=True) if array.flags.writeable else None for array in arrays]
    with pytest.raises(DlbioError) as caught:
        call()
    for array, copy in zip(arrays, copies, strict=True):
        if copy is None:
            assert not array.flags.writeable
            continue
        assert array.dtype == copy.dtype
        assert array.shape == copy.shape
        if array.dtype.kind in "fc":
            np.testing.assert_array_equal(array, copy)
        else:
            assert (array == copy).all()
    return caught.value


@pytest.mark.parametrize("case", list(SEGMENTATION_TRAINING))
def test_segmentation_training_refuses_bad_arrays(case, tiny_segmentation_config):
    from napari_dlbio.models.segmentation import iter_train_segmentation, train_segmentation

    images, annotation, words = SEGMENTATION_TRAINING[case]
    error = _unchanged(
        (images, annotation),
        lambda: train_segmentation(images, annotation, tiny_segmentation_config),
    )
    assert isinstance(error, InputDataError)
    assert re.search(words, str(error)), str(error)
    # The generator refuses before its first event: no thread, no network.
    with pytest.raises(InputDataError):
        next(iter_train_segmentation(images, annotation, tiny_segmentation_config))


def test_one_class_annotation_is_pointed_out_before_training(tiny_segmentation_config):
    from napari_dlbio.models.segmentation import iter_train_segmentation

    job = iter_train_segmentation(IMAGES, np.ones_like(ANNOTATION), tiny_segmentation_config)
    events = []
    for event in job:
        events.append(event)
        if isinstance(event, TrainingStarted):
            break
    job.close()
    notices = [event.text for event in events if isinstance(event, Notice)]
    assert any("No training pixel is annotated as membrane" in text for text in notices)


@pytest.fixture(scope="module")
def models(model_folders):
    from napari_dlbio.models.store import load_model_folder

    return {
        "segmentation": load_model_folder(model_folders["segmentation"], Task.SEGMENTATION),
        "classification": load_model_folder(model_folders["classification"], Task.CLASSIFICATION),
    }


SEGMENTATION_PREDICTION = {
    "1D images": (IMAGES.ravel(), "shape"),
    "5D images": (IMAGES[None, :, :, :, None], "shape"),
    "complex images": (IMAGES.astype(np.complex128), "cannot be segmented"),
    "object images": (IMAGES.astype(object), "cannot be segmented"),
    "text images": (IMAGES.astype(str), "cannot be segmented"),
    "bool images": (IMAGES > 100, None),
    "NaN pixel": (_with(IMAGES, np.nan, np.float32), "NaN or infinite"),
    "infinite pixel": (_with(IMAGES, np.inf, np.float32), "NaN or infinite"),
    "no slices": (IMAGES[:0], "empty"),
    "no rows": (IMAGES[:, :0], "empty"),
    "5 channels": (
        np.stack([IMAGES] * 5, axis=-1),
        r"grey images \(1 channel\) but the image has 5 channels",
    ),
}


@pytest.mark.parametrize("case", list(SEGMENTATION_PREDICTION))
def test_segmentation_prediction_refuses_bad_arrays(case, models):
    from napari_dlbio.models.segmentation import predict_segmentation

    images, words = SEGMENTATION_PREDICTION[case]
    model = models["segmentation"]
    if words is None:
        # Documented as accepted: a boolean image is read as 0 / 1.
        assert predict_segmentation(model, images).mask.shape == images.shape
        return
    error = _unchanged((images,), lambda: predict_segmentation(model, images))
    assert isinstance(error, InputDataError)
    assert re.search(words, str(error)), str(error)


def _overcommit_mode() -> int | None:
    try:
        return int(Path("/proc/sys/vm/overcommit_memory").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.skipif(
    _overcommit_mode() not in (0, 2),
    reason="needs Linux with heuristic or strict overcommit, where a 1 TB allocation fails at "
    "once; elsewhere it could succeed and fill the memory",
)
def test_segmentation_prediction_of_a_slice_larger_than_memory_is_refused(models):
    from napari_dlbio.models.segmentation import predict_segmentation

    with pytest.raises(InputDataError, match="memory"):
        predict_segmentation(models["segmentation"], HUGE_SLICE)


def test_models_of_the_other_task_are_refused(models):
    from napari_dlbio.models.classification import evaluate_classifier, predict_classifier
    from napari_dlbio.models.segmentation import predict_segmentation

    with pytest.raises(ModelFolderError, match="classification model"):
        predict_segmentation(models["classification"], IMAGES)
    with pytest.raises(ModelFolderError, match="segmentation model"):
        predict_classifier(models["segmentation"], PHOTOS)
    with pytest.raises(ModelFolderError, match="segmentation model"):
        evaluate_classifier(models["segmentation"], PHOTOS, CLASSES)


MASK = (ANNOTATION - 1).astype(np.uint8)
SEGMENTATION_EVALUATION = {
    "shapes differ": (MASK, ANNOTATION[:1], "shape"),
    "annotation beyond the classes": (MASK, _with(ANNOTATION, 7), "knows only 2 classes"),
    "mask beyond the classes": (_with(MASK, 5), ANNOTATION, r"0\.\.1"),
    "float mask": (MASK.astype(np.float32) + 0.5, ANNOTATION, "whole numbers"),
}


@pytest.mark.parametrize("case", list(SEGMENTATION_EVALUATION))
def test_segmentation_evaluation_refuses_bad_arrays(case):
    from napari_dlbio.models.segmentation import evaluate_segmentation

    mask, annotation, words = SEGMENTATION_EVALUATION[case]
    error = _unchanged(
        (mask, annotation),
        lambda: evaluate_segmentation(mask, annotation, ("background", "membrane")),
    )
    assert re.search(words, str(error)), str(error)


SEGMENTATION_EVALUATION_LABELS = {
    "float annotation": ((MASK, ANNOTATION.astype(np.float32) + 0.5), "whole numbers"),
    "negative annotation": ((MASK, _with(ANNOTATION, -1, np.int16)), "negative value -1"),
}


@pytest.mark.parametrize("case", list(SEGMENTATION_EVALUATION_LABELS))
def test_segmentation_evaluation_refuses_non_integer_or_negative_labels(case):
    from napari_dlbio.models.segmentation import evaluate_segmentation

    (mask, annotation), words = SEGMENTATION_EVALUATION_LABELS[case]
    error = _unchanged(
        (mask, annotation),
        lambda: evaluate_segmentation(mask, annotation, ("background", "membrane")),
    )
    assert words in str(error), str(error)


def _photos_with(value: Any, dtype: Any) -> np.ndarray:
    photos = PHOTOS.astype(dtype) / (255 if np.dtype(dtype).kind == "f" else 1)
    photos.flat[3] = value
    return photos


# name -> (images, class indices, regular expression of the message)
CLASSIFIER_TRAINING = {
    "images without pixels axes": (PHOTOS.reshape(6, -1)[:, 0], CLASSES, "neither grey"),
    "5D images": (PHOTOS[:, None, None], CLASSES, "neither grey"),
    "complex images": (PHOTOS.astype(np.complex64), CLASSES, "complex64 cannot be used"),
    "object images": (PHOTOS.astype(object), CLASSES, "object cannot be used"),
    "text images": (PHOTOS.astype(str), CLASSES, "cannot be used"),
    "NaN pixel": (_photos_with(np.nan, np.float32), CLASSES, "NaN or infinite"),
    "infinite pixel": (_photos_with(np.inf, np.float64), CLASSES, "NaN or infinite"),
    "fewer labels than images": (PHOTOS, CLASSES[:4], "6 images but 4 class indices"),
    "more labels than images": (PHOTOS[:3], CLASSES, "3 images but 6 class indices"),
    "one class": (PHOTOS, np.zeros(6, int), "at least two classes"),
    "no images": (PHOTOS[:0], CLASSES[:0], "at least two classes"),
    "negative label": (PHOTOS, np.array([0, 1, -1, 1, 0, 1]), "whole numbers from 0"),
    "label beyond the names": (PHOTOS, np.array([0, 1, 2, 1, 0, 1]), "whole numbers from 0"),
    "float labels": (PHOTOS, CLASSES + 0.5, "whole numbers"),
    "text labels": (PHOTOS, CLASSES.astype(str), "whole numbers"),
    "2D labels": (PHOTOS, CLASSES[:, None], r"flat list.*\(6, 1\)"),
}


@pytest.mark.parametrize("case", list(CLASSIFIER_TRAINING))
def test_classifier_training_refuses_bad_arrays(case, tiny_classifier_config):
    from napari_dlbio.models.classification import iter_train_classifier, train_classifier

    images, labels, words = CLASSIFIER_TRAINING[case]
    error = _unchanged(
        (images, labels), lambda: train_classifier(images, labels, tiny_classifier_config)
    )
    assert isinstance(error, InputDataError)
    assert re.search(words, str(error)), str(error)
    with pytest.raises(InputDataError):
        next(iter_train_classifier(images, labels, tiny_classifier_config))


CLASSIFIER_PREDICTION = {
    "images without pixel axes": (PHOTOS.reshape(6, -1)[:, 0], "neither grey"),
    "5D images": (PHOTOS[:, None, None], "neither grey"),
    "complex images": (PHOTOS.astype(np.complex64), "cannot be used"),
    "object images": (PHOTOS.astype(object), "cannot be used"),
    "text images": (PHOTOS.astype(str), "cannot be used"),
    "NaN pixel": (_photos_with(np.nan, np.float32), "NaN or infinite"),
    "image larger than memory": (HUGE_SLICE, "too large"),
}


@pytest.mark.parametrize("case", list(CLASSIFIER_PREDICTION))
def test_classifier_prediction_refuses_bad_arrays(case, models):
    from napari_dlbio.models.classification import predict_classifier

    images, words = CLASSIFIER_PREDICTION[case]
    error = _unchanged((images,), lambda: predict_classifier(models["classification"], images))
    assert isinstance(error, InputDataError)
    assert re.search(words, str(error)), str(error)


CLASSIFIER_EVALUATION = {
    "fewer labels than images": (PHOTOS, CLASSES[:5], "6 images but 5"),
    "label beyond the classes": (PHOTOS, np.array([0, 1, 5, 1, 0, 1]), "0 to 1"),
    "float labels": (PHOTOS, CLASSES.astype(float), "whole numbers"),
    "NaN pixel": (_photos_with(np.nan, np.float32), CLASSES, "NaN or infinite"),
}


@pytest.mark.parametrize("case", list(CLASSIFIER_EVALUATION))
def test_classifier_evaluation_refuses_bad_arrays(case, models):
    from napari_dlbio.models.classification import evaluate_classifier

    images, labels, words = CLASSIFIER_EVALUATION[case]
    error = _unchanged(
        (images, labels), lambda: evaluate_classifier(models["classification"], images, labels)
    )
    assert re.search(words, str(error)), str(error)
