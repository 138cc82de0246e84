"""napari's training and prediction jobs give a classifier each leaf photo as ``dlbio`` does.

The reader resizes odd-sized photos to fit one layer; the jobs must hand the classifier those
photos from their files, so that each is resized once.  The classification engine is replaced
by a stand-in that keeps what it was given (no TensorFlow needed).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Generator
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest

from napari_dlbio._reader import read_class_folder
from napari_dlbio._widgets._jobs import predict_classes
from napari_dlbio._widgets._training_job import ModelSource, TrainRequest, train
from napari_dlbio.core.class_dataset import load_class_folder, to_input_images
from napari_dlbio.core.classifier_config import ClassifierConfig
from napari_dlbio.core.config import Task
from napari_dlbio.core.events import CancelToken, RunState, run_to_end


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A stand-in for models.classification that records the images it receives."""
    received: dict[str, Any] = {}

    def iter_train_classifier(images: Any, *_: Any, **__: Any) -> Generator[Any, None, Any]:
        received["train"] = images
        yield from ()
        fit = types.SimpleNamespace(state=RunState.DONE, best_epoch=1)
        return types.SimpleNamespace(model=None, fit=fit)

    def iter_predict_classifier(_: Any, images: Any, **__: Any) -> Generator[Any, None, None]:
        received["predict"] = images
        yield from ()

    module = types.ModuleType("napari_dlbio.models.classification")
    module.iter_train_classifier = iter_train_classifier
    module.iter_predict_classifier = iter_predict_classifier
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return received


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    for name, shapes in {"a": [(24, 32)] * 3, "b": [(24, 32), (40, 50), (15, 19)]}.items():
        (tmp_path / name).mkdir()
        for i, shape in enumerate(shapes):
            photo = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            iio.imwrite(tmp_path / name / f"{i}.png", photo)
    return tmp_path


def test_training_from_a_leaf_stack_sees_each_photo_resized_once(
    engine: dict[str, Any], mixed_folder: Path
) -> None:
    ((data, kwargs, _),) = read_class_folder(str(mixed_folder))
    metadata = kwargs["metadata"]
    request = TrainRequest(
        Task.CLASSIFICATION,
        data,
        np.asarray(metadata["class_indices"]),
        ClassifierConfig(),
        image_metadata=metadata,
    )

    run_to_end(train(request, cancel=CancelToken()))

    expected = load_class_folder(mixed_folder, 16).images
    np.testing.assert_array_equal(to_input_images(engine["train"], 16, 3), expected)


def test_predicting_part_of_a_leaf_stack_sees_each_photo_resized_once(
    engine: dict[str, Any], mixed_folder: Path
) -> None:
    ((data, kwargs, _),) = read_class_folder(str(mixed_folder))
    model = types.SimpleNamespace(task=Task.CLASSIFICATION)

    job = predict_classes(
        ModelSource(model=model), data[4:], 4, None, kwargs["metadata"], cancel=CancelToken()
    )
    run_to_end(job)

    expected = load_class_folder(mixed_folder, 16).images[4:]
    np.testing.assert_array_equal(to_input_images(engine["predict"], 16, 3), expected)
