"""napari's training and prediction jobs give a classifier each leaf photo as ``dlbio`` does.

The reader resizes odd-sized photos to fit one layer; the jobs must hand the engine those
photos from their files, so that each is resized once.  The engine is replaced by a
stand-in that keeps the requests it was given (no engine process, no TensorFlow).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
from napari.layers import Image

from napari_dlbio._reader import read_class_folder
from napari_dlbio._widgets._common import training_images
from napari_dlbio._widgets._jobs import predict_classes
from napari_dlbio.core.class_dataset import load_class_folder, to_input_images
from napari_dlbio.core.events import CancelToken, run_to_end


class StandInEngine:
    """Records the requests it runs; their results are None (a cancelled job's)."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def run(self, request: Any, **_: Any) -> Generator[Any, None, None]:
        self.requests.append(request)
        yield from ()


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    for name, shapes in {"a": [(24, 32)] * 3, "b": [(24, 32), (40, 50), (15, 19)]}.items():
        (tmp_path / name).mkdir()
        for i, shape in enumerate(shapes):
            photo = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
            iio.imwrite(tmp_path / name / f"{i}.png", photo)
    return tmp_path


def test_training_from_a_leaf_stack_sees_each_photo_resized_once(mixed_folder: Path) -> None:
    ((data, kwargs, _),) = read_class_folder(str(mixed_folder))
    images = training_images(Image(data, **kwargs))

    expected = load_class_folder(mixed_folder, 16).images
    np.testing.assert_array_equal(to_input_images(images, 16, 3), expected)


def test_predicting_part_of_a_leaf_stack_sees_each_photo_resized_once(
    mixed_folder: Path,
) -> None:
    ((data, kwargs, _),) = read_class_folder(str(mixed_folder))
    engine = StandInEngine()

    job = predict_classes(
        engine, "a classifier", data[4:], 4, None, kwargs["metadata"], cancel=CancelToken()
    )
    run_to_end(job)

    (request,) = engine.requests
    expected = load_class_folder(mixed_folder, 16).images[4:]
    np.testing.assert_array_equal(to_input_images(request.images, 16, 3), expected)
