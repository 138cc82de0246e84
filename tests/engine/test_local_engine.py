"""The engine as a child process: the same predictions as in-process, and surviving its death."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest
import tifffile

from napari_dlbio.core.events import Event, Finished, RunState, SlicePredicted, run_to_end
from napari_dlbio.engine.local import BACKGROUND_NICENESS, LocalEngine
from napari_dlbio.engine.protocol import ArrayFeed, EngineDied, LoadModel, Ping, PredictSlices
from napari_dlbio.engine.transport import SharedFiles

MODEL = "builtin:em-membranes"


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    local = LocalEngine()
    yield local
    local.close()
    assert _shared_files_left() == []


@pytest.fixture(scope="module")
def isbi_volume(isbi_dir) -> np.ndarray:
    return tifffile.imread(isbi_dir / "train-volume.tif")


def _shared_files_left() -> list[str]:
    prefix = f"dlbio-engine-{os.getpid():x}"
    return sorted(p.name for p in SharedFiles.default_folder().glob(prefix + "*"))


def _events(job) -> tuple[list[Event], object]:
    events: list[Event] = []
    result = run_to_end(job, events.append)
    return events, result


def test_the_engine_predicts_what_this_process_predicts(engine, isbi_volume) -> None:
    from napari_dlbio.models.segmentation import iter_predict_slices
    from napari_dlbio.models.store import load_model_folder

    images = isbi_volume[:2, :256, :256]
    info = engine.call(LoadModel(MODEL))
    assert (info.task, info.source) == ("segmentation", MODEL)
    assert info.config["class_names"] == ["background", "membrane"]
    assert engine.call(LoadModel(MODEL)).id == info.id  # loaded once

    here, _ = _events(iter_predict_slices(load_model_folder(MODEL), images))
    there, result = _events(engine.run(PredictSlices(info.id, images)))
    stack = images[..., np.newaxis]
    fed, _ = _events(
        engine.run(
            PredictSlices(info.id, ArrayFeed(stack.shape, stack.dtype.str)), feed=iter(stack)
        )
    )
    assert result is None
    for events in (there, fed):
        assert [type(e) for e in events] == [type(e) for e in here]
        assert events[-1] == Finished(RunState.DONE)
        for mine, theirs in zip(here, events, strict=True):
            if isinstance(mine, SlicePredicted):
                assert theirs.index == mine.index
                assert np.array_equal(theirs.probabilities, mine.probabilities)
            else:
                assert theirs == mine


def test_a_killed_engine_fails_its_job_clearly_and_the_next_request_starts_one(
    engine, isbi_volume
) -> None:
    info = engine.call(LoadModel(MODEL))
    first = engine.pid
    job = engine.run(PredictSlices(info.id, isbi_volume))  # 30 slices of 512 x 512
    next(job)
    os.kill(first, signal.SIGKILL)
    with pytest.raises(EngineDied, match=r"killed \(signal 9\).*memory.*untouched"):
        run_to_end(job)
    assert _shared_files_left() == []

    assert engine.call(Ping()).pid != first
    events, _ = _events(engine.run(PredictSlices(MODEL, isbi_volume[:1, :128, :128])))
    assert isinstance(events[-1], Finished)
    assert events[-1].state is RunState.DONE


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="CPU priority is a Unix notion")
def test_the_engine_runs_below_the_window_it_serves(engine) -> None:
    # The window gets a busy machine's cores first: the engine runs at a lower priority.
    engine.call(Ping())
    expected = min(os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICENESS, 19)
    assert os.getpriority(os.PRIO_PROCESS, engine.pid) == expected
