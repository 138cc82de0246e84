"""Fixtures of the widget tests: a viewer with the sample data, notifications recorded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from napari.layers import Layer
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_dlbio._sample_data import make_isbi_sample, make_leaf_sample


@pytest.fixture
def viewer(make_napari_viewer: Callable[..., Any]) -> Any:
    """A napari viewer (closed by napari's fixture at the end)."""
    return make_napari_viewer()


@pytest.fixture
def isbi(viewer: Any) -> tuple[Layer, Layer]:
    """The ISBI sample in the viewer: (image, membrane ground truth)."""
    image, labels = (viewer.add_layer(Layer.create(*data)) for data in make_isbi_sample())
    return image, labels


@pytest.fixture
def leaves(viewer: Any) -> Layer:
    """The PlantVillage sample stack in the viewer."""
    (data,) = make_leaf_sample()
    return viewer.add_layer(Layer.create(*data))


@pytest.fixture
def shown_notifications() -> Callable[..., list[str]]:
    """A function giving the texts of the notifications shown since the test began, of
    one ``severity`` if given."""
    start = len(notification_manager.records)

    def texts(severity: NotificationSeverity | None = None) -> list[str]:
        return [
            str(record.message)
            for record in notification_manager.records[start:]
            if severity is None or record.severity == severity
        ]

    return texts


@pytest.fixture
def shown_errors(shown_notifications: Callable[..., list[str]]) -> Callable[[], list[str]]:
    """A function giving the texts of the error notifications shown since the test began."""
    return lambda: shown_notifications(NotificationSeverity.ERROR)


#: Every wait below ends as soon as what it waits for happens; this guard only ends a test
#: that hangs, and is far above what any step takes on a busy machine, so no test depends
#: on the machine's speed.
HANG_GUARD_MS = 300_000


@pytest.fixture
def wait_until(qtbot: Any) -> Callable[[Callable[[], Any]], None]:
    """Run the event loop until ``condition()`` is true (a hang guard, not a deadline)."""

    def wait(condition: Callable[[], Any]) -> None:
        qtbot.waitUntil(lambda: bool(condition()), timeout=HANG_GUARD_MS)

    return wait


@pytest.fixture
def finish(wait_until: Callable[[Callable[[], Any]], None]) -> Callable[[Any], None]:
    """Wait until a widget's job has finished (its worker's ``finished`` was handled)."""

    def wait(widget: Any) -> None:
        wait_until(lambda: widget.job is not None and not widget.job.running)

    return wait


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The handle of a tiny U-Net trained for a few steps on the ISBI sample by an engine
    of its own and saved to a folder, so this process never loads TensorFlow."""
    from napari_dlbio.core.config import Task
    from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig
    from napari_dlbio.engine.protocol import Train

    (image, _, _), (annotation, _, _) = make_isbi_sample()
    config = SegmentationConfig(
        network=UNetConfig(depth=2, base_filters=4),
        patch_size=32,
        batch_size=2,
        epochs=1,
        steps_per_epoch=2,
        tile_size=128,
        tile_overlap=16,
    )
    folder = tmp_path_factory.mktemp("tiny-unet") / "model"
    return trained_in_engine(Train(Task.SEGMENTATION, image, annotation, config, str(folder)))


@pytest.fixture(name="trained_in_engine")
def trained_in_engine_fixture() -> Callable[[Any], Any]:
    """:func:`trained_in_engine`, for a test."""
    return trained_in_engine


def trained_in_engine(request: Any) -> Any:
    """The handle of the model a Train request gives in an engine of its own (closed
    afterwards; the model is in the request's folder)."""
    from napari_dlbio.engine.local import LocalEngine
    from napari_dlbio.engine.protocol import ModelHandle

    engine = LocalEngine()
    try:
        return ModelHandle.of(engine.call(request).model)
    finally:
        engine.close()
