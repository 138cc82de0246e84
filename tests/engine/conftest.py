"""An engine served in this process over a socket pair, with handlers made for a test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from multiprocessing import Pipe

import pytest

from napari_dlbio.engine.client import EngineClient
from napari_dlbio.engine.protocol import EngineDied, Request
from napari_dlbio.engine.server import Engine
from napari_dlbio.engine.transport import Channel

# Hang guard for the engine's thread to end (s); never a measurement.
WAIT_S = 30.0


@pytest.fixture
def serve() -> Iterator[Callable[[Mapping[type[Request], object]], EngineClient]]:
    """``serve(handlers)``: a client of an engine with those handlers, in a thread."""
    clients: list[EngineClient] = []
    threads: list[threading.Thread] = []

    def start(handlers: Mapping[type[Request], object]) -> EngineClient:
        near, far = Pipe()
        engine = Engine(handlers=handlers)  # type: ignore[arg-type]
        thread = threading.Thread(target=engine.serve, args=(Channel(far),), daemon=True)
        thread.start()
        threads.append(thread)
        client = EngineClient(Channel(near), lost=lambda: EngineDied("the test engine is gone"))
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
