"""Jobs on an engine: events in order, typed errors, cancelling, several threads, feeds."""

from __future__ import annotations

import threading
from collections.abc import Generator

import numpy as np
import pytest

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import (
    CancelToken,
    Event,
    Finished,
    RunState,
    SlicePredicted,
    TileDone,
    run_to_end,
)
from napari_dlbio.engine.client import FEED_WINDOW
from napari_dlbio.engine.handlers import JobContext
from napari_dlbio.engine.protocol import (
    ArrayFeed,
    EngineDied,
    EngineError,
    LoadModel,
    Ping,
    Pong,
    PredictSlices,
    Result,
)

# Hang guard for waits on other threads (s); never a measurement.
WAIT_S = 30.0


def wait_for(token: CancelToken) -> bool:
    """Whether ``token`` is cancelled within the hang guard."""
    for _ in range(int(WAIT_S / 0.01)):
        if token.cancelled:
            return True
        threading.Event().wait(0.01)
    return False


def per_slice(request: PredictSlices, job: JobContext) -> Generator[Event, None, int]:
    """Yield each slice doubled, as a prediction would; return the number of slices."""
    images = request.images
    for z in range(len(images)):
        yield TileDone(z + 1, len(images))
        yield SlicePredicted(z, len(images), np.asarray(images[z : z + 1])[0] * 2)
    yield Finished(RunState.DONE)
    return len(images)


class ResourceExhaustedError(Exception):
    """Named as TensorFlow's out-of-memory error."""


FAILURES = {
    "input": InputDataError("the image is empty"),
    "memory": MemoryError("no memory"),
    "tf-memory": ResourceExhaustedError("OOM when allocating tensor"),
    "bug": ValueError("an engine bug"),
}


def fail(request: LoadModel, job: JobContext) -> Generator[Event, None, None]:
    yield TileDone(1, 1)
    raise FAILURES[request.source]


def test_events_come_in_order_and_the_result_last(serve) -> None:
    client = serve({PredictSlices: per_slice})
    images = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    events: list[Event] = []
    result = run_to_end(client.run(PredictSlices("m", images)), events.append)
    assert result == 3
    assert [type(e).__name__ for e in events] == ["TileDone", "SlicePredicted"] * 3 + ["Finished"]
    for z, event in enumerate(e for e in events if isinstance(e, SlicePredicted)):
        np.testing.assert_array_equal(event.probabilities, images[z] * 2)


@pytest.mark.parametrize(
    ("source", "kind", "text"),
    [
        ("input", InputDataError, "the image is empty"),
        ("memory", MemoryError, "no memory"),
        ("tf-memory", MemoryError, "OOM when allocating"),
        ("bug", EngineError, "ValueError: an engine bug"),
    ],
)
def test_a_failure_is_raised_in_the_client_with_its_type(serve, source, kind, text) -> None:
    client = serve({LoadModel: fail})
    job = client.run(LoadModel(source))
    assert next(job) == TileDone(1, 1)
    with pytest.raises(kind, match=text):
        next(job)
    # The engine goes on serving.
    with pytest.raises(InputDataError):
        client.call(LoadModel("input"))


def test_a_request_without_handler_fails_clearly(serve) -> None:
    client = serve({})
    with pytest.raises(EngineError, match="no handler for Ping"):
        client.call(Ping())


def waits_for_cancel(seen: threading.Event):
    def handler(request: Ping, job: JobContext) -> Generator[Event, None, str]:
        yield TileDone(1, 2)
        if not wait_for(job.cancel):
            return "never cancelled"
        seen.set()
        yield Finished(RunState.CANCELLED)
        return "cancelled"

    return handler


def test_a_cancel_token_stops_the_job_which_still_ends_normally(serve) -> None:
    seen = threading.Event()
    client = serve({Ping: waits_for_cancel(seen)})
    cancel = CancelToken()
    events: list[Event] = []

    def on_event(event: Event) -> None:
        events.append(event)
        cancel.cancel()

    assert run_to_end(client.run(Ping(), cancel=cancel), on_event) == "cancelled"
    assert events == [TileDone(1, 2), Finished(RunState.CANCELLED)]


def test_closing_the_generator_early_cancels_the_job(serve) -> None:
    seen = threading.Event()
    client = serve({Ping: waits_for_cancel(seen)})
    job = client.run(Ping())
    next(job)
    job.close()
    assert seen.wait(WAIT_S)


def test_a_broken_connection_cancels_its_jobs(serve) -> None:
    seen = threading.Event()
    client = serve({Ping: waits_for_cancel(seen)})
    job = client.run(Ping())
    next(job)
    client.close()
    assert seen.wait(WAIT_S)
    with pytest.raises(EngineError, match="closed"):
        next(job)
    with pytest.raises(EngineError):
        client.call(Ping())


def test_several_threads_run_jobs_at_once(serve) -> None:
    client = serve({PredictSlices: per_slice})
    results: dict[int, object] = {}
    release = threading.Barrier(4, timeout=WAIT_S)

    def work(n: int) -> None:
        release.wait()
        images = np.full((n, 2, 2), n, dtype=np.int32)
        events: list[Event] = []
        count = run_to_end(client.run(PredictSlices("m", images)), events.append)
        sums = [int(e.probabilities.sum()) for e in events if isinstance(e, SlicePredicted)]
        results[n] = (count, sums)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert results == {n: (n, [8 * n] * n) for n in range(1, 5)}


def test_a_fed_stack_arrives_slice_by_slice_with_few_slices_ahead(serve) -> None:
    produced: list[int] = []
    ahead: list[int] = []

    def counting(request: PredictSlices, job: JobContext) -> Generator[Event, None, int]:
        images = request.images
        for z in range(len(images)):
            plane = images[z : z + 1]
            ahead.append(len(produced) - z)
            yield SlicePredicted(z, len(images), plane[0].astype(np.float32))
        return len(images)

    client = serve({PredictSlices: counting})
    stack = np.random.default_rng(2).integers(0, 255, (20, 8, 9, 1), dtype=np.uint8)

    def slices() -> Generator[np.ndarray, None, None]:
        for z, plane in enumerate(stack):
            produced.append(z)
            yield plane

    feed = ArrayFeed(stack.shape, stack.dtype.str)
    events: list[Event] = []
    assert run_to_end(client.run(PredictSlices("m", feed), feed=slices()), events.append) == 20
    for z, event in enumerate(events):
        np.testing.assert_array_equal(event.probabilities, stack[z])
    assert max(ahead) <= FEED_WINDOW + 1


def test_a_slice_that_cannot_be_read_ends_the_job_with_its_error(serve) -> None:
    seen = threading.Event()

    def reading(request: PredictSlices, job: JobContext) -> Generator[Event, None, None]:
        try:
            for z in range(len(request.images)):
                request.images[z : z + 1]
                yield TileDone(z + 1, len(request.images))
        finally:
            seen.set()

    client = serve({PredictSlices: reading})

    def slices() -> Generator[np.ndarray, None, None]:
        yield np.zeros((4, 4, 1), np.uint8)
        raise OSError("the disk went away")

    feed = ArrayFeed((3, 4, 4, 1), "|u1")
    with pytest.raises(OSError, match="disk went away"):
        run_to_end(client.run(PredictSlices("m", feed), feed=slices()))
    assert seen.wait(WAIT_S)


def test_a_client_that_sends_no_request_is_disconnected(serve, caplog) -> None:
    client = serve({Ping: lambda request, job: iter(())})
    client._channel.send(Result(1, None))
    client._reader.join(WAIT_S)
    assert client.closed
    assert "not a request" in caplog.text


def test_ping_answers_with_the_engines_process(serve) -> None:
    from napari_dlbio.engine.handlers import HANDLERS

    client = serve(HANDLERS)
    pong = client.call(Ping())
    assert isinstance(pong, Pong)
    assert pong.pid > 0


def test_a_job_of_a_dead_engine_raises_engine_died(serve) -> None:
    seen = threading.Event()
    client = serve({Ping: waits_for_cancel(seen)})
    job = client.run(Ping())
    next(job)
    client._channel.shutdown()  # as when the engine process is killed
    with pytest.raises(EngineDied, match="gone"):
        next(job)
