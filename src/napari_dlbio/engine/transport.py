"""Messages over a ``multiprocessing`` connection, big arrays through shared memory or
streamed in chunks, every frame bounded.

A message is a header frame (JSON: the pickle's size and each out-of-band buffer's size,
and the shared-memory file it travels in, if any), the pickle (:mod:`.codec`), then the
buffers that travel in the connection, each as frames of at most :data:`CHUNK_BYTES`.  The
receiver reads every frame with a size limit and refuses a header that declares more than
its limits, so a broken or hostile peer cannot make it allocate what it likes.

Between napari and its engine child (:class:`SharedFiles` given), buffers of
:data:`SHARED_MIN_BYTES` and more go through files in shared memory (``/dev/shm`` on
Linux): the sender copies the buffer in and sends the file's name, the receiver copies it
out and deletes the file at once.  A file the sender could not write (shared memory full,
as in a container's 64 MiB ``/dev/shm``) is sent in the connection instead.  Files are
plain files rather than ``multiprocessing.shared_memory`` segments because writing beyond
a full ``/dev/shm`` through a segment's mapping kills the process (SIGBUS), and Python 3.10
to 3.12 would have both processes' resource trackers claim every segment.  A remote peer
(no :class:`SharedFiles`) may not name files at all.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import re
import secrets
import sys
import tempfile
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from napari_dlbio.engine.codec import decode, encode
from napari_dlbio.engine.protocol import ProtocolError

#: Largest frame of a buffer streamed in the connection.
CHUNK_BYTES = 4 * 2**20
#: Buffers from this size travel through shared memory, when the channel has it.
SHARED_MIN_BYTES = 2**20
#: Largest header frame (JSON) and pickle (the message without its arrays).
MAX_HEADER_BYTES = 2**16
MAX_PICKLE_BYTES = 16 * 2**20
MAX_BUFFERS = 4096
#: Default cap on one message, its arrays included.
MAX_MESSAGE_BYTES = 32 * 2**30

_FILE_PREFIX = "dlbio-engine-"


class SharedFiles:
    """Files in shared memory that carry big buffers between two processes of one machine.

    Both sides are made with the same ``folder`` and ``prefix``; each writes files named
    after its ``side`` and reads only files of the channel's prefix.

    Parameters
    ----------
    folder
        A memory-backed folder (``/dev/shm``); the temporary folder elsewhere.
    prefix
        Name prefix of this pair of processes' files (:meth:`new_prefix`).
    side
        Distinguishes the two writers ("client", "engine").
    """

    def __init__(self, folder: str | Path, prefix: str, side: str) -> None:
        if not re.fullmatch(_FILE_PREFIX + r"[0-9a-f]+-", prefix):
            raise ValueError(f"not a shared-file prefix: {prefix!r}")
        self.folder = Path(folder)
        self.prefix = prefix
        self._names = (f"{prefix}{side}-{n}" for n in itertools.count())
        self._lock = threading.Lock()

    @staticmethod
    def default_folder() -> Path:
        """``/dev/shm`` where it exists, else the temporary folder (page cache)."""
        shm = Path("/dev/shm")
        return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())

    @staticmethod
    def new_prefix() -> str:
        """A fresh prefix for one client-engine pair."""
        return f"{_FILE_PREFIX}{os.getpid():x}{secrets.token_hex(6)}-"

    def write(self, data: memoryview) -> str | None:
        """Copy ``data`` into a new file and return its name; None when there is no room."""
        with self._lock:
            name = next(self._names)
        path = self.folder / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return None
        try:
            with open(fd, "wb", buffering=0, closefd=True) as stream:
                view = data.cast("B")
                written = 0
                while written < len(view):
                    written += stream.write(view[written:])
        except OSError as error:
            path.unlink(missing_ok=True)
            if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                return None
            raise
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return name

    def take(self, name: str, size: int) -> bytearray:
        """Copy the file ``name`` out and delete it.

        Raises
        ------
        ProtocolError
            For a name outside this channel's files, or a file of another size.
        """
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as error:
            raise ProtocolError(f"the shared-memory file {name} is gone ({error})") from None
        try:
            data = bytearray(size)
            with open(fd, "rb", buffering=0, closefd=True) as stream:
                filled = stream.readinto(data)
                while filled < size:
                    more = stream.readinto(memoryview(data)[filled:])
                    if not more:
                        break
                    filled += more
                if filled != size or stream.read(1):
                    raise ProtocolError(f"the shared-memory file {name} is not {size} bytes")
        finally:
            path.unlink(missing_ok=True)
        return data

    def discard(self, name: str) -> None:
        """Delete the file ``name`` unread (a message that was cut short)."""
        self._path(name).unlink(missing_ok=True)

    def remove_all(self) -> None:
        """Delete every file of this prefix still there (the peer died holding some)."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.folder):
                if entry.name.startswith(self.prefix):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _path(self, name: str) -> Path:
        if not re.fullmatch(re.escape(self.prefix) + r"[a-z]+-[0-9]+", name):
            raise ProtocolError(f"a message named the file {name!r}, which is not its to name")
        return self.folder / name


@dataclass(frozen=True)
class Limits:
    """How much one message may declare, and the frames arrays are streamed in (bytes).

    Every receiver accepts frames of up to :data:`CHUNK_BYTES`; ``chunk_bytes`` is the
    size this side sends them in.
    """

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_pickle_bytes: int = MAX_PICKLE_BYTES
    chunk_bytes: int = CHUNK_BYTES

    def __post_init__(self) -> None:
        if not 0 < self.chunk_bytes <= CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be 1..{CHUNK_BYTES}, not {self.chunk_bytes}")


class Channel:
    """Sends and receives whole messages over a connection; ``send`` is thread-safe,
    ``recv`` is for one reader thread.

    Parameters
    ----------
    connection
        A connected, authenticated ``multiprocessing.connection.Connection``.
    shared
        Shared-memory files for big buffers (same machine only); None streams them.
    limits
        What a received message may declare.
    """

    def __init__(
        self,
        connection: Connection,
        shared: SharedFiles | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.connection = connection
        self.shared = shared
        self.limits = limits or Limits()
        self._send_lock = threading.Lock()

    def send(self, message: Any) -> None:
        """Send ``message`` (its arrays out of band).

        Raises
        ------
        ProtocolError
            When the message is larger than this channel's limits.
        OSError
            When the connection is closed or broken.
        """
        payload, buffers = encode(message)
        views = [buffer.raw() for buffer in buffers]
        total = len(payload) + sum(view.nbytes for view in views)
        if len(payload) > self.limits.max_pickle_bytes or total > self.limits.max_message_bytes:
            raise ProtocolError(
                f"a {type(message).__name__} of {total:,} bytes is larger than the "
                f"{self.limits.max_message_bytes:,} bytes a message may have"
            )
        files: list[str | None] = []
        try:
            for view in views:
                big = self.shared is not None and view.nbytes >= SHARED_MIN_BYTES
                files.append(self.shared.write(view) if big else None)
            sizes = [[view.nbytes, name] for view, name in zip(views, files, strict=True)]
            header = {"pickle": len(payload), "buffers": sizes}
            with self._send_lock:
                self.connection.send_bytes(json.dumps(header).encode())
                self.connection.send_bytes(payload)
                for view, name in zip(views, files, strict=True):
                    if name is None:
                        self._stream(view)
        except BaseException:
            for name in files:
                if name is not None and self.shared is not None:
                    self.shared.discard(name)
            raise

    def recv(self) -> Any:
        """The next message (blocks).

        Raises
        ------
        EOFError
            When the peer closed the connection.
        OSError
            For a broken connection, or a frame over its size limit.
        ProtocolError
            For a header or message that breaks the protocol or the limits.
        """
        header = self._header(self.connection.recv_bytes(MAX_HEADER_BYTES))
        payload = self.connection.recv_bytes(max(1, header["pickle"]))
        if len(payload) != header["pickle"]:
            raise ProtocolError("a message's pickle is not the size its header declared")
        buffers = []
        try:
            for size, name in header["buffers"]:
                buffers.append(self._receive(size) if name is None else self._take(name, size))
        finally:
            # A message cut short leaves no file behind.
            for _, name in header["buffers"][len(buffers) :]:
                if name is not None and self.shared is not None:
                    with contextlib.suppress(ProtocolError):
                        self.shared.discard(name)
        return decode(payload, buffers)

    def shutdown(self) -> None:
        """Make the reader blocked in :meth:`recv` (and every later send) fail; the
        reader's thread then calls :meth:`close`."""
        shutdown(self.connection)

    def close(self) -> None:
        """Close the connection; for the reader's thread (see :meth:`shutdown`)."""
        self.connection.close()

    def _stream(self, view: memoryview) -> None:
        data = view.cast("B")
        for start in range(0, len(data), self.limits.chunk_bytes):
            self.connection.send_bytes(data[start : start + self.limits.chunk_bytes])

    def _receive(self, size: int) -> bytearray:
        data = bytearray(size)
        view = memoryview(data)
        filled = 0
        while filled < size:
            chunk = self.connection.recv_bytes(min(CHUNK_BYTES, size - filled))
            if not chunk:
                raise ProtocolError("an empty frame inside an array")
            view[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return data

    def _take(self, name: str, size: int) -> bytearray:
        if self.shared is None:
            raise ProtocolError("a message over the network named a shared-memory file")
        return self.shared.take(name, size)

    def _header(self, frame: bytes) -> dict[str, Any]:
        try:
            header = json.loads(frame)
            pickle_size = header["pickle"]
            buffers = header["buffers"]
            if not (_is_size(pickle_size) and isinstance(buffers, list)):
                raise TypeError
            if len(buffers) > MAX_BUFFERS:
                raise ProtocolError(f"a message declared {len(buffers)} arrays")
            for entry in buffers:
                size, name = entry
                if not _is_size(size) or not (name is None or isinstance(name, str)):
                    raise TypeError
        except (ValueError, TypeError, KeyError) as error:
            raise ProtocolError(f"a message header is malformed ({error!r})") from None
        total = pickle_size + sum(size for size, _ in buffers)
        if pickle_size > self.limits.max_pickle_bytes or total > self.limits.max_message_bytes:
            raise ProtocolError(
                f"a message declared {total:,} bytes, more than the "
                f"{self.limits.max_message_bytes:,} bytes a message may have"
            )
        return header


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def shutdown(connection: Connection) -> None:
    """Wake a thread blocked reading ``connection`` (closing the descriptor alone does not
    on Linux) by shutting its socket down; nothing for pipes or a closed connection."""
    if connection.closed or sys.platform == "win32":
        return
    import socket

    try:
        duplicate = os.dup(connection.fileno())
    except OSError:
        return
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:  # not a socket
        os.close(duplicate)
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
