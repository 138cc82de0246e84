"""Whole messages over a connection: shared memory or chunks, bounded frames, no leaks."""

from __future__ import annotations

import json
import threading
from multiprocessing import Pipe
from pathlib import Path

import numpy as np
import pytest

from napari_dlbio.engine.protocol import Feed, ProtocolError
from napari_dlbio.engine.transport import (
    SHARED_MIN_BYTES,
    Channel,
    Limits,
    SharedFiles,
)


@pytest.fixture
def shared_pair(tmp_path: Path) -> tuple[SharedFiles, SharedFiles]:
    prefix = SharedFiles.new_prefix()
    return SharedFiles(tmp_path, prefix, "client"), SharedFiles(tmp_path, prefix, "engine")


def channels(
    shared: tuple[SharedFiles, SharedFiles] | None = None, limits: Limits | None = None
) -> tuple[Channel, Channel]:
    one, two = Pipe()
    first, second = shared or (None, None)
    return Channel(one, first, limits), Channel(two, second, limits)


def big_array() -> np.ndarray:
    return np.arange(SHARED_MIN_BYTES // 2 + 3, dtype=np.uint16).reshape(-1, 1)


def test_big_arrays_go_through_shared_memory_and_leave_no_file(shared_pair) -> None:
    sender, receiver = channels(shared_pair)
    array, small = big_array(), np.arange(10, dtype=np.float32)
    sent = []
    sender.connection.send_bytes = _recording(sender.connection.send_bytes, sent)
    sender.send(Feed(1, 2, array))
    sender.send(Feed(1, 3, small))
    big, little = receiver.recv(), receiver.recv()
    np.testing.assert_array_equal(big.array, array)
    np.testing.assert_array_equal(little.array, small)
    assert max(sent) < 1000  # no frame carried the big array's bytes
    assert leftovers(shared_pair[0]) == []


def test_without_shared_memory_arrays_stream_in_bounded_chunks() -> None:
    sender, receiver = channels(limits=Limits(chunk_bytes=4096))  # the sender's frames
    array = np.random.default_rng(1).random((100, 70))
    sent: list[int] = []
    sender.connection.send_bytes = _recording(sender.connection.send_bytes, sent)
    thread = threading.Thread(target=sender.send, args=(Feed(1, 0, array),))
    thread.start()
    message = receiver.recv()
    thread.join(30)
    np.testing.assert_array_equal(message.array, array)
    assert max(sent) <= 4096
    assert sum(1 for size in sent if size == 4096) >= array.nbytes // 4096


def test_a_full_shared_memory_falls_back_to_the_connection(tmp_path: Path) -> None:
    prefix = SharedFiles.new_prefix()
    missing = tmp_path / "gone"  # files cannot be written there
    sender, receiver = channels(
        (SharedFiles(missing, prefix, "a"), SharedFiles(missing, prefix, "b"))
    )
    array = big_array()
    thread = threading.Thread(target=sender.send, args=(Feed(1, 0, array),))
    thread.start()
    np.testing.assert_array_equal(receiver.recv().array, array)
    thread.join(30)


def test_a_declared_size_over_the_limit_is_refused() -> None:
    sender, receiver = channels(limits=Limits(max_message_bytes=10_000))
    sender.connection.send_bytes(json.dumps({"pickle": 10, "buffers": [[2**60, None]]}).encode())
    with pytest.raises(ProtocolError, match="more than"):
        receiver.recv()


def test_a_sender_refuses_a_message_over_the_limit() -> None:
    sender, _ = channels(limits=Limits(max_message_bytes=1000))
    with pytest.raises(ProtocolError, match="larger than"):
        sender.send(Feed(1, 0, np.zeros(1000)))


def test_an_oversized_frame_is_refused_unread() -> None:
    sender, receiver = channels()
    sender.connection.send_bytes(b"x" * 100_000)  # a "header" larger than any header
    with pytest.raises(OSError, match="bad message length"):
        receiver.recv()


@pytest.mark.parametrize(
    "header",
    [
        b"not json",
        json.dumps({"pickle": -1, "buffers": []}).encode(),
        json.dumps({"pickle": 5, "buffers": [[True, None]]}).encode(),
        json.dumps({"pickle": 5}).encode(),
        json.dumps({"pickle": 5, "buffers": [[1, 2]]}).encode(),
    ],
)
def test_a_malformed_header_is_refused(header: bytes) -> None:
    sender, receiver = channels()
    sender.connection.send_bytes(header)
    with pytest.raises(ProtocolError):
        receiver.recv()


def test_a_peer_without_shared_memory_may_not_name_files(shared_pair) -> None:
    sender, receiver = channels()
    name = shared_pair[0].write(memoryview(b"x" * 16))
    sender.connection.send_bytes(json.dumps({"pickle": 4, "buffers": [[16, name]]}).encode())
    sender.connection.send_bytes(b"1234")
    with pytest.raises(ProtocolError, match="network"):
        receiver.recv()


def test_only_the_channels_own_files_may_be_named(shared_pair) -> None:
    sender, receiver = channels(shared_pair)
    sender.connection.send_bytes(
        json.dumps({"pickle": 4, "buffers": [[4, "../etc/passwd"]]}).encode()
    )
    sender.connection.send_bytes(b"1234")
    with pytest.raises(ProtocolError, match="not its to name"):
        receiver.recv()


def test_a_message_cut_short_leaves_no_file(shared_pair) -> None:
    sender, receiver = channels(shared_pair)
    names = [shared_pair[0].write(memoryview(b"x" * 64)) for _ in range(2)]
    header = {"pickle": 8, "buffers": [[64, names[0]], [64, None], [64, names[1]]]}
    sender.connection.send_bytes(json.dumps(header).encode())
    sender.connection.send_bytes(b"12345678")
    sender.connection.close()  # gone before the streamed buffer
    with pytest.raises(EOFError):
        receiver.recv()
    assert leftovers(shared_pair[0]) == []


def test_a_send_that_fails_leaves_no_file(shared_pair) -> None:
    sender, _ = channels(shared_pair)

    def broken(*args: object) -> None:
        raise BrokenPipeError("the engine went away")

    sender.connection.send_bytes = broken
    with pytest.raises(OSError, match="went away"):
        sender.send(Feed(1, 0, big_array()))
    assert leftovers(shared_pair[0]) == []


def test_remove_all_deletes_what_a_dead_peer_left(shared_pair) -> None:
    for _ in range(3):
        shared_pair[1].write(memoryview(b"y" * 10))
    assert len(leftovers(shared_pair[0])) == 3
    shared_pair[0].remove_all()
    assert leftovers(shared_pair[0]) == []


def test_shutdown_wakes_a_blocked_reader() -> None:
    _sender, receiver = channels()
    failed = threading.Event()

    def read() -> None:
        try:
            receiver.recv()
        except (EOFError, OSError):
            failed.set()

    thread = threading.Thread(target=read)
    thread.start()
    receiver.shutdown()
    thread.join(30)
    assert failed.is_set()


def leftovers(shared: SharedFiles) -> list[str]:
    return sorted(p.name for p in shared.folder.glob(shared.prefix + "*"))


def _recording(send, sizes: list[int]):
    def record(buffer, *args):
        sizes.append(len(memoryview(buffer).cast("B")) if not args else args[-1])
        return send(buffer, *args)

    return record
