"""Fixtures of the model tests: a clock that advances with training, not with the machine,
and what the bioimage.io tests share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class BatchClock:
    """A clock for time budgets that advances a fixed number of seconds per trained batch.

    Pass the clock as ``clock=`` and :attr:`callback` as an extra Keras callback: a run
    with a budget of B seconds then trains ``B / seconds_per_batch + 1`` batches on any
    machine, however busy (the budget is checked after each batch, before the tick).
    """

    def __init__(self, seconds_per_batch: float) -> None:
        from napari_dlbio.models._tf import load_keras

        keras = load_keras()
        self.now = 0.0
        clock = self

        class Tick(keras.callbacks.Callback):
            def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
                clock.now += seconds_per_batch

        self.callback = Tick()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def batch_clock() -> Callable[[float], Any]:
    """Make a :class:`BatchClock` advancing the given seconds per batch."""
    return BatchClock


@pytest.fixture
def work_elsewhere(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Run in a fresh folder: bioimageio.core unzips SavedModel weights into the working
    folder (``bioimageio_unzipped_tf_weights``)."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="module")
def em_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in em-membranes model exported as a bioimage.io package."""
    from napari_dlbio.models.bioimageio_export import export_bioimageio

    return export_bioimageio("builtin:em-membranes", tmp_path_factory.mktemp("em") / "em.zip")
