"""The engine over TCP (loopback only): keys, strangers, bounded messages, many clients."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import socket
import threading
from collections.abc import Generator, Iterator

import numpy as np
import pytest

from napari_dlbio.core.events import Event, SlicePredicted, run_to_end
from napari_dlbio.engine.auth import handshake
from napari_dlbio.engine.client import connect
from napari_dlbio.engine.handlers import HANDLERS, JobContext
from napari_dlbio.engine.protocol import (
    EngineDied,
    EngineError,
    Ping,
    Pong,
    PredictSlices,
)
from napari_dlbio.engine.server import EngineServer
from napari_dlbio.engine.transport import Limits

KEY = b"the right key"
# Hang guard for threads to end (s); never a measurement.
WAIT_S = 30.0


def echo(request: PredictSlices, job: JobContext) -> Generator[Event, None, int]:
    for z, plane in enumerate(request.images):
        yield SlicePredicted(z, len(request.images), plane)
    return len(request.images)


@pytest.fixture
def server(caplog) -> Iterator[EngineServer]:
    caplog.set_level(logging.INFO, logger="napari_dlbio.engine")
    engine_server = EngineServer(
        ("127.0.0.1", 0),
        KEY,
        limits=Limits(max_message_bytes=2**20, chunk_bytes=2**16),
        handshake_timeout=1.0,
    )
    engine_server.engine.handlers = {**HANDLERS, PredictSlices: echo}
    thread = threading.Thread(target=engine_server.serve_forever, daemon=True)
    thread.start()
    yield engine_server
    engine_server.stop()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def logged(caplog, text: str) -> bool:
    """Whether the server logs ``text`` within the hang guard (it logs from its threads)."""
    for _ in range(int(WAIT_S / 0.01)):
        if text in caplog.text:
            return True
        threading.Event().wait(0.01)
    return False


def ping(server: EngineServer) -> Pong:
    with connect(*server.address, KEY) as client:
        return client.call(Ping())


def test_arrays_stream_both_ways_in_chunks(server) -> None:
    images = np.random.default_rng(3).random((3, 200, 100), dtype=np.float32)  # 80 kB each
    events: list[Event] = []
    with connect(*server.address, KEY) as client:
        assert run_to_end(client.run(PredictSlices("m", images)), events.append) == 3
    for z, event in enumerate(events):
        np.testing.assert_array_equal(event.probabilities, images[z])


def test_a_wrong_key_is_refused_clearly_and_others_are_still_served(server, caplog) -> None:
    with pytest.raises(EngineError, match=r"refused the key in K; use the key file"):
        connect(*server.address, b"a wrong key", key_name="the key in K")
    assert isinstance(ping(server), Pong)
    assert logged(caplog, "wrong key")
    assert "refused a connection from 127.0.0.1:" in caplog.text


def test_a_stranger_speaking_another_protocol_is_refused(server, caplog) -> None:
    with socket.create_connection(server.address, timeout=WAIT_S) as stranger:
        stranger.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stranger.recv(1024)  # the challenge, then the connection closes
        with contextlib.suppress(ConnectionResetError):
            while stranger.recv(1024):
                pass
    assert isinstance(ping(server), Pong)
    assert logged(caplog, "no valid handshake")


def test_a_silent_peer_does_not_keep_others_waiting(server, caplog) -> None:
    with socket.create_connection(server.address, timeout=WAIT_S) as silent:
        assert isinstance(ping(server), Pong)  # served while the silent one waits
        silent.recv(1024)  # the challenge
        while silent.recv(1024):  # ... until the handshake's deadline closes it
            pass
    assert logged(caplog, "no handshake within 1 s")


def test_an_oversized_message_closes_only_its_connection(server, caplog) -> None:
    from multiprocessing.connection import Connection

    sock = socket.create_connection(server.address, timeout=WAIT_S)
    sock.settimeout(None)
    connection = Connection(sock.detach())
    handshake(connection, KEY, server=False, timeout=WAIT_S)
    connection.send_bytes(json.dumps({"pickle": 10, "buffers": [[2**40, None]]}).encode())
    with pytest.raises(EOFError):
        connection.recv_bytes()
    connection.close()
    assert logged(caplog, "more than the 1,048,576 bytes")
    assert isinstance(ping(server), Pong)


class _RunsACommand:
    def __reduce__(self) -> tuple:
        return os.system, ("echo engine-pwned",)


def test_a_client_with_the_key_still_cannot_run_code(server, caplog, capfd) -> None:
    from multiprocessing.connection import Connection

    sock = socket.create_connection(server.address, timeout=WAIT_S)
    sock.settimeout(None)
    connection = Connection(sock.detach())
    handshake(connection, KEY, server=False, timeout=WAIT_S)
    payload = pickle.dumps(_RunsACommand(), protocol=5)
    connection.send_bytes(json.dumps({"pickle": len(payload), "buffers": []}).encode())
    connection.send_bytes(payload)
    with pytest.raises(EOFError):
        connection.recv_bytes()
    connection.close()
    assert logged(caplog, ".system was refused")  # posix.system, or nt.system
    assert "engine-pwned" not in capfd.readouterr().out
    assert isinstance(ping(server), Pong)


def test_nothing_listening_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(EngineError, match=r"nothing is listening at 127\.0\.0\.1:"):
        connect("127.0.0.1", port, KEY)


def test_stopping_the_server_ends_the_jobs_of_its_clients(server) -> None:
    client = connect(*server.address, KEY)
    server.stop()
    with pytest.raises(EngineDied, match=r"connection to the engine at 127\.0\.0\.1:\d+ was lost"):
        client.call(Ping())
