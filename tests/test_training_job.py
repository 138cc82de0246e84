"""Training in a child process: events, the model, Stop and failures reach the parent.

No viewer here: the parent loads TensorFlow, which must not precede a viewer in a process
(see tests/conftest.py), so these tests live outside tests/widgets.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio._widgets._training_job import (
    ModelSource,
    TrainRequest,
    _sendable,
    train_in_child_process,
)
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError, ModelFolderError
from napari_dlbio.core.events import (
    BatchEnded,
    CancelToken,
    EpochEnded,
    RunState,
    TrainingStarted,
    run_to_end,
)
from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig

TINY = SegmentationConfig(
    network=UNetConfig(depth=1, base_filters=4),
    patch_size=32,
    batch_size=2,
    epochs=2,
    steps_per_epoch=2,
)


def _request(config: SegmentationConfig = TINY, **changes) -> TrainRequest:
    rng = np.random.default_rng(0)
    images = rng.random((2, 64, 64), dtype=np.float32)
    annotation = np.where(images > 0.5, 2, 1).astype(np.uint8)
    return TrainRequest(Task.SEGMENTATION, images, annotation, config, **changes)


def test_the_child_trains_and_the_model_comes_back_usable(tmp_path) -> None:
    events = []
    job = train_in_child_process(_request(save_to=tmp_path / "model"), cancel=CancelToken())
    outcome = run_to_end(job, events.append)

    kinds = {type(event) for event in events}
    assert {TrainingStarted, BatchEnded, EpochEnded} <= kinds
    assert outcome.fit.state is RunState.DONE
    assert outcome.saved == tmp_path / "model" == outcome.model.path
    assert (tmp_path / "model" / "model.keras").is_file()
    assert len(outcome.model.history["loss"]) == 2
    probabilities = outcome.model.model.predict(np.zeros((1, 32, 32, 1), np.float32), verbose=0)
    assert probabilities.shape[:3] == (1, 32, 32)


def test_fine_tuning_a_model_in_memory_keeps_it_in_memory() -> None:
    first = run_to_end(train_in_child_process(_request(), cancel=CancelToken()))
    assert first.saved is None
    assert first.model.path is None

    again = run_to_end(
        train_in_child_process(
            _request(start=ModelSource(model=first.model), training={"epochs": 1}),
            cancel=CancelToken(),
        )
    )
    assert again.model.config.epochs == 1
    assert again.model.path is None
    assert len(again.model.history["loss"]) == 1


def test_stop_reaches_the_child_and_keeps_the_best_weights() -> None:
    cancel = CancelToken()
    epochs = []

    def stop_after_an_epoch(event) -> None:
        if isinstance(event, EpochEnded):
            epochs.append(event.epoch)
            cancel.cancel()

    job = train_in_child_process(_request(TINY.replace(epochs=1000)), cancel=cancel)
    outcome = run_to_end(job, stop_after_an_epoch)

    assert outcome.fit.state is RunState.CANCELLED
    assert outcome.fit.best_epoch is not None
    assert len(epochs) < 10


def test_an_error_in_the_child_is_raised_here_with_its_message(tmp_path) -> None:
    missing = tmp_path / "no such model"
    request = _request(start=ModelSource(folder=missing))
    with pytest.raises(ModelFolderError, match="no such model"):
        run_to_end(train_in_child_process(request, cancel=CancelToken()))


class _TwoPartError(Exception):
    def __init__(self, part: str, other: str) -> None:
        super().__init__(f"{part} and {other}")


class ResourceExhaustedError(Exception):
    """Named like TensorFlow's out-of-memory error."""


def test_errors_that_cannot_cross_processes_keep_their_meaning() -> None:
    converted = _sendable(_TwoPartError("this", "that"))
    assert isinstance(converted, DlbioError)
    assert "_TwoPartError: this and that" in str(converted)
    assert isinstance(_sendable(ResourceExhaustedError("OOM when allocating")), MemoryError)
    assert isinstance(_sendable(ValueError("plain")), ValueError)
