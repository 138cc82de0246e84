"""The widgets' requests in the engine: training, fine-tuning bursts, saving and exporting.

The handlers run in this process (TensorFlow is loaded here, no viewer), except where the
crossing itself is tested (a Train through a child engine).
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

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
from napari_dlbio.engine import handlers
from napari_dlbio.engine.handlers import JobContext, new_registry
from napari_dlbio.engine.local import LocalEngine
from napari_dlbio.engine.protocol import (
    Burst,
    ExportPackage,
    ModelHandle,
    PredictSegmentation,
    SaveModel,
    Train,
)
from napari_dlbio.engine.registry import ModelRegistry

TINY = SegmentationConfig(
    network=UNetConfig(depth=1, base_filters=4),
    patch_size=32,
    batch_size=2,
    epochs=2,
    steps_per_epoch=2,
)


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.random((2, 64, 64), dtype=np.float32)
    return images, np.where(images > 0.5, 2, 1).astype(np.uint8)


def _run(request, context: JobContext, events: list | None = None):
    handler = handlers.HANDLERS[type(request)]
    return run_to_end(handler(request, context), None if events is None else events.append)


def _context(cancel: CancelToken | None = None) -> JobContext:
    return JobContext(cancel or CancelToken(), new_registry())


def test_a_child_engine_trains_saves_and_predicts_with_the_model(tmp_path) -> None:
    images, annotation = _data()
    engine = LocalEngine()
    try:
        events = []
        request = Train(Task.SEGMENTATION, images, annotation, TINY, str(tmp_path / "model"))
        trained = run_to_end(engine.run(request), events.append)
        assert {TrainingStarted, BatchEnded, EpochEnded} <= {type(event) for event in events}
        assert trained.state is RunState.DONE
        assert (tmp_path / "model" / "model.keras").is_file()
        handle = ModelHandle.of(trained.model)
        assert handle.path == tmp_path / "model"
        assert handle.config == TINY
        segmented = engine.call(PredictSegmentation(handle.id, images))
        assert segmented.mask.shape == images.shape
        assert segmented.probabilities.shape == (*images.shape, 2)
    finally:
        engine.close()


def test_fine_tuning_keeps_the_architecture_and_changes_the_training(tmp_path) -> None:
    images, annotation = _data()
    context = _context()
    first = _run(Train(Task.SEGMENTATION, images, annotation, TINY, str(tmp_path / "a")), context)
    request = Train(
        Task.SEGMENTATION,
        images,
        annotation,
        TINY.replace(network=UNetConfig(depth=2)),
        str(tmp_path / "b"),
        training={"epochs": 1},
        start=first.model.source,
    )
    again = _run(request, context)
    handle = ModelHandle.of(again.model)
    assert handle.config.epochs == 1
    assert handle.config.network == TINY.network
    assert len(context.models.get(handle.id).folder.history["loss"]) == 1


def test_stop_keeps_the_best_weights(tmp_path) -> None:
    cancel = CancelToken()

    def stop_after_an_epoch(event) -> None:
        if isinstance(event, EpochEnded):
            cancel.cancel()

    images, annotation = _data()
    request = Train(
        Task.SEGMENTATION, images, annotation, TINY.replace(epochs=1000), str(tmp_path / "m")
    )
    trained = run_to_end(handlers.train(request, _context(cancel)), stop_after_an_epoch)
    assert trained.state is RunState.CANCELLED
    assert trained.best_epoch is not None


def test_training_from_a_missing_model_says_which(tmp_path) -> None:
    images, annotation = _data()
    missing = tmp_path / "no such model"
    request = Train(
        Task.SEGMENTATION, images, annotation, TINY, str(tmp_path / "m"), start=str(missing)
    )
    with pytest.raises(ModelFolderError, match="no such model"):
        _run(request, _context())


def test_bursts_go_on_with_one_tuner_and_saving_writes_a_new_folder(tmp_path) -> None:
    images, annotation = _data()
    context = _context()
    config = SegmentationConfig.interactive().replace(network=UNetConfig(depth=1, base_filters=4))
    burst = Burst(None, None, config, images, annotation, None, 1.0, 0)
    first = _run(burst, context)
    assert first.mask.shape == (1, 64, 64)
    again = _run(Burst(first.tuner, None, None, images, annotation, None, 1.0, 1), context)
    assert again.tuner == first.tuner
    assert context.models.tuner(first.tuner) is context.models.tuner(again.tuner)
    saved = _run(SaveModel(again.model.source, str(tmp_path / "tuned")), context)
    assert (tmp_path / "tuned" / "model.keras").is_file()
    assert saved == str(tmp_path / "tuned")
    with pytest.raises(DlbioError, match=r"exists|occupied|already"):
        _run(SaveModel(again.model.source, str(tmp_path / "tuned")), context)


def test_a_package_export_without_bioimageio_says_what_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bioimageio.spec.model", None)  # import fails
    # Any model will do: the export stops before it reads one.
    model = SimpleNamespace(model=None, task=Task.SEGMENTATION, config=TINY, path=None)
    registry = ModelRegistry(lambda source: model, lambda source: None)
    context = JobContext(CancelToken(), registry)
    request = ExportPackage(str(tmp_path / "model"), str(tmp_path / "model.zip"))
    with pytest.raises(DlbioError, match=r'pip install "napari-dlbio\[bioimageio\]"'):
        _run(request, context)
    assert not (tmp_path / "model.zip").exists()


def test_the_widgets_burst_length_is_the_engines_default() -> None:
    from napari_dlbio._widgets._burst_settings import BURST_SECONDS
    from napari_dlbio.models.interactive import DEFAULT_BURST_SECONDS

    assert BURST_SECONDS == DEFAULT_BURST_SECONDS


def test_a_full_disk_while_saving_a_model_keeps_the_previous_folder(tmp_path) -> None:
    class DiskFullModel:
        def save(self, path):
            Path(path).write_bytes(b"PK half a model")
            raise OSError(errno.ENOSPC, "No space left on device")

    previous = tmp_path / "membrane model"
    previous.mkdir()
    (previous / "model.keras").write_bytes(b"precious weights")
    model = SimpleNamespace(
        model=DiskFullModel(), task=Task.SEGMENTATION, config=TINY, history={}, metrics={}
    )
    context = JobContext(CancelToken(), ModelRegistry(lambda source: model, lambda s: None))
    with pytest.raises(ModelFolderError, match="No space left on device"):
        _run(SaveModel("a model", str(tmp_path / "new model")), context)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["membrane model"]
    assert (previous / "model.keras").read_bytes() == b"precious weights"
