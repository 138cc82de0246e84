"""Jobs that fail part-way: the user's layers stay as they were and the widget recovers.

Training runs in the engine process, which is killed as the system would kill it for lack
of memory; elsewhere the session's engine is replaced by one whose job fails part-way.
Each test waits on the real worker thread, then checks what a user sees: an error
notification, buttons enabled again, the same layers with the same data, and no file or
partial file on disk.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_dlbio._widgets._session import session_for
from napari_dlbio._widgets.export_widget import PNGS, ExportWidget
from napari_dlbio._widgets.predict_widget import WHOLE_STACK, PredictWidget
from napari_dlbio._widgets.train_widget import TrainWidget
from napari_dlbio.core.config import Task
from napari_dlbio.core.events import RunState, TileDone
from napari_dlbio.core.segmentation_config import SegmentationConfig
from napari_dlbio.engine.protocol import ModelHandle, Ping

pytestmark = pytest.mark.gui

TINY = {
    "network.depth": 2,
    "network.base_filters": 4,
    "patch_size": 32,
    "batch_size": 2,
    "steps_per_epoch": 2,
    "epochs": 1,
}


def _state(viewer) -> list[tuple[str, bytes]]:
    """Every layer's name and data, to compare before and after."""
    return [(layer.name, np.asarray(layer.data).tobytes()) for layer in viewer.layers]


def _handle() -> ModelHandle:
    """A segmentation model's handle (the engines below never load it)."""
    return ModelHandle("model-1", "/models/em", Task.SEGMENTATION, SegmentationConfig(), None)


def _failing_engine(monkeypatch, viewer, error: BaseException) -> None:
    """Make the session's engine run every job one step, then fail with ``error``."""

    def run(request, *, feed=None, cancel=None):
        yield TileDone(1, 10)
        raise error

    monkeypatch.setattr(session_for(viewer).engine, "run", run)


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_an_engine_killed_midway_through_training_changes_nothing(
    viewer, isbi, tiny_unet, wait_until, finish, shown_errors
) -> None:
    """What the system's out-of-memory killer does to a training that grows too large:
    the layers and a saved model stay as they were, and the next request starts a new
    engine."""
    image, annotation = isbi
    before = _state(viewer)
    saved_before = _files(tiny_unet.path)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.select(image)
    widget.annotation_combo.select(annotation)
    for key, value in {**TINY, "epochs": 1000}.items():
        widget.segmentation_form.set_value(key, value)

    widget.train_button.click()
    wait_until(lambda: len(widget.plot.series["loss"]) >= 1)  # training for real
    engine = widget.session.engine
    killed = engine.call(Ping()).pid
    os.kill(killed, signal.SIGKILL)
    finish(widget)

    assert widget.job.state is RunState.FAILED
    assert any("ran out of memory" in text and "untouched" in text for text in shown_errors())
    assert widget.train_button.isEnabled()
    assert not widget.stop_button.isEnabled()
    assert widget.segmentation_form.isEnabled()
    assert "failed" in widget.status_label.text()
    assert widget.session.current(Task.SEGMENTATION) is None
    assert _state(viewer) == before
    assert _files(tiny_unet.path) == saved_before

    widget.session.add(tiny_unet, "saved before")
    predict = PredictWidget(viewer)
    predict.image_combo.select(image)
    predict.predict_button.click()
    finish(predict)
    assert predict.job.state is RunState.DONE
    assert f"{image.name} mask" in viewer.layers
    assert engine.call(Ping()).pid != killed  # a new engine


def test_a_prediction_job_that_fails_midway_adds_no_layer(
    viewer, isbi, finish, shown_errors, monkeypatch
) -> None:
    image, _ = isbi
    before = _state(viewer)

    _failing_engine(monkeypatch, viewer, MemoryError())
    session_for(viewer).add(_handle(), "test model")
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_combo.select(image)
    widget.scope_combo.setCurrentText(WHOLE_STACK)

    widget.predict_button.click()
    finish(widget)

    assert widget.job.state is RunState.FAILED
    assert any("ran out of memory" in text for text in shown_errors())
    assert widget.predict_button.isEnabled()
    assert not widget.cancel_button.isEnabled()
    assert _state(viewer) == before


def _export(viewer, tmp_path):
    widget = ExportWidget(viewer)
    viewer.window.add_dock_widget(widget)
    folder = tmp_path / "my exports"
    folder.mkdir()
    (folder / "earlier.tif").write_bytes(b"precious")
    return widget, folder


def test_a_full_disk_while_exporting_an_image_leaves_no_file(
    viewer, tmp_path, finish, shown_errors, monkeypatch
) -> None:
    probabilities = viewer.add_image(np.random.default_rng(0).random((2, 8, 8), np.float32))
    before = _state(viewer)
    widget, folder = _export(viewer, tmp_path)

    def half_then_full(path, *args, **kwargs):
        Path(path).write_bytes(b"II*\x00 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", half_then_full)
    widget.image_combo.select(probabilities)
    widget.image_path.setText(str(folder / "probabilities.tif"))
    widget.image_button.click()
    finish(widget)

    assert widget.job.state is RunState.FAILED
    assert any("No space left on device" in text for text in shown_errors())
    assert sorted(path.name for path in folder.iterdir()) == ["earlier.tif"]
    assert (folder / "earlier.tif").read_bytes() == b"precious"
    assert all(button.isEnabled() for button in widget.buttons)
    assert _state(viewer) == before


@pytest.mark.parametrize("as_pngs", [False, True])
def test_a_refused_rename_while_exporting_a_mask_leaves_no_file(
    as_pngs, viewer, tmp_path, finish, shown_errors, monkeypatch
) -> None:
    import os

    mask = viewer.add_labels(np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4) % 3)
    before = _state(viewer)
    widget, folder = _export(viewer, tmp_path)

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refused)
    monkeypatch.setattr(os, "rename", refused)
    widget.mask_combo.select(mask)
    if as_pngs:
        widget.format_combo.setCurrentText(PNGS)
    widget.mask_path.setText(str(folder / ("slices" if as_pngs else "mask.tif")))
    widget.mask_button.click()
    finish(widget)

    assert widget.job.state is RunState.FAILED
    assert any("Permission denied" in text for text in shown_errors())
    assert sorted(path.name for path in folder.iterdir()) == ["earlier.tif"]
    assert all(button.isEnabled() for button in widget.buttons)
    assert _state(viewer) == before


def test_a_failed_model_export_keeps_the_previous_model_folder(
    viewer, tmp_path, finish, shown_errors, monkeypatch
) -> None:
    # What the engine does with the disk is tested in tests/engine/test_handlers.py.
    widget, folder = _export(viewer, tmp_path)
    previous = folder / "membrane model"
    previous.mkdir()
    (previous / "config.json").write_text('{"task": "segmentation"}')
    (previous / "model.keras").write_bytes(b"precious weights")
    session_for(viewer).add(_handle(), "test model")
    _failing_engine(monkeypatch, viewer, OSError(errno.ENOSPC, "No space left on device"))

    widget.model_path.setText(str(folder / "new model"))
    widget.model_button.click()
    finish(widget)

    assert widget.job.state is RunState.FAILED
    assert any("No space left on device" in text for text in shown_errors())
    assert sorted(path.name for path in folder.iterdir()) == ["earlier.tif", "membrane model"]
    assert sorted(path.name for path in previous.iterdir()) == ["config.json", "model.keras"]
    assert (previous / "model.keras").read_bytes() == b"precious weights"
    assert all(button.isEnabled() for button in widget.buttons)
