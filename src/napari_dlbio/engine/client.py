"""The client's side: run requests on an engine as generators of the core's events.

:class:`EngineClient` talks to one engine over one connection; :meth:`EngineClient.run`
is a job generator like the models package's ``iter_*`` functions (it yields the events
and returns the result), so widgets and the CLI drive it as they drive a local job.  Any
number of threads may run jobs at once: one reader thread hands each message to its job.
:func:`connect` opens a client to a remote engine (``dlbio engine --listen``);
:class:`~napari_dlbio.engine.local.LocalEngine` runs the engine as a child process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import queue
import socket
import threading
from collections.abc import Callable, Generator, Iterable
from multiprocessing.connection import AuthenticationError, Connection
from typing import Any

import numpy as np

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken, Event, run_to_end
from napari_dlbio.engine.auth import HANDSHAKE_TIMEOUT_S, HandshakeError, handshake
from napari_dlbio.engine.protocol import (
    ArrayFeed,
    Cancel,
    EngineDied,
    EngineError,
    EventMessage,
    Failure,
    Feed,
    FeedTaken,
    ProtocolError,
    Request,
    Result,
    Submit,
)
from napari_dlbio.engine.transport import Channel

#: Slices of an ArrayFeed sent ahead of the one the engine is reading.
FEED_WINDOW = 4
# How often a job waiting for its engine looks at its cancel token (s).
POLL_S = 0.1


class EngineClient:
    """Runs requests on one engine over one connection.

    Parameters
    ----------
    channel
        The authenticated connection to the engine.
    lost
        Makes the error that jobs in flight raise when the connection breaks (the engine
        died, the network went down); called once, in the reader thread.
    """

    def __init__(self, channel: Channel, lost: Callable[[], EngineError]) -> None:
        self._channel = channel
        self._lost = lost
        self._error: EngineError | None = None
        self._closing = False
        self._jobs: dict[int, _ClientJob] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="dlbio-engine-client", daemon=True)
        self._reader.start()

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (by :meth:`close`, or because it broke)."""
        return self._error is not None or not self._reader.is_alive()

    def run(
        self,
        request: Request,
        *,
        feed: Iterable[np.ndarray] | None = None,
        cancel: CancelToken | None = None,
    ) -> Generator[Event, None, Any]:
        """Run ``request`` on the engine: yield its events, return its result.

        Closing the generator early cancels the job on the engine.

        Parameters
        ----------
        request
            What to do.
        feed
            The slices of the request's :class:`~.protocol.ArrayFeed`, in order; at most
            :data:`FEED_WINDOW` are sent ahead of the one the engine reads.
        cancel
            Setting it asks the engine to stop the job (which then ends as it does when
            stopped locally, e.g. with ``Finished(CANCELLED)``).

        Raises
        ------
        EngineDied
            When the engine stops or the connection breaks before the job ends.
        Exception
            The job's own error: a DlbioError, InputDataError, ConfigError,
            ModelFolderError or MemoryError keeps its type; others become EngineError.
        """
        job = self._open_job()
        finished = False
        try:
            self._send(Submit(job.id, request))
            if feed is not None:
                job.start_feeding(_fed_feed(request), feed, self._send)
            stop_sent = False
            while True:
                if cancel is not None and cancel.cancelled and not stop_sent:
                    self._send(Cancel(job.id))
                    stop_sent = True
                try:
                    message = job.inbox.get(timeout=None if cancel is None else POLL_S)
                except queue.Empty:
                    continue
                if isinstance(message, EventMessage):
                    yield message.event
                    continue
                # A Result or Failure ends the job on the engine; so does a lost connection.
                # A slice that could not be read ends it here only: the engine is told.
                finished = isinstance(message, (Result, Failure, EngineError))
                if isinstance(message, Result):
                    return message.value
                if isinstance(message, Failure):
                    raise message.error()
                raise message
        finally:
            job.stop_feeding()
            with self._lock:
                self._jobs.pop(job.id, None)
            if not finished and not self.closed:
                with contextlib.suppress(OSError, EOFError):
                    self._channel.send(Cancel(job.id))

    def call(self, request: Request) -> Any:
        """Run ``request`` to its end (its events are dropped) and return its result."""
        return run_to_end(self.run(request))

    def close(self) -> None:
        """Close the connection; jobs still running raise :class:`EngineError`."""
        self._closing = True
        self._channel.shutdown()
        self._reader.join()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_job(self) -> _ClientJob:
        with self._lock:
            if self._error is not None:
                raise self._error
            job = _ClientJob(next(self._ids))
            self._jobs[job.id] = job
            return job

    def _send(self, message: Any) -> None:
        try:
            self._channel.send(message)
        except (OSError, EOFError):
            self._channel.shutdown()
            self._reader.join()
            raise self._error or EngineDied("the connection to the engine broke") from None

    def _read(self) -> None:
        try:
            while True:
                message = self._channel.recv()
                if isinstance(message, FeedTaken):
                    with self._lock:
                        job = self._jobs.get(message.job_id)
                    if job is not None:
                        job.taken(message.index)
                elif isinstance(message, (EventMessage, Result, Failure)):
                    with self._lock:
                        job = self._jobs.get(message.job_id)
                    if job is not None:
                        job.inbox.put(message)
                else:
                    raise ProtocolError(f"the engine sent a {type(message).__name__}")
        except (OSError, EOFError, ProtocolError):
            pass
        finally:
            self._channel.shutdown()
            error = EngineError("this engine client was closed") if self._closing else self._lost()
            with self._lock:
                self._error = error
                jobs = list(self._jobs.values())
            for job in jobs:
                job.inbox.put(error)
            self._channel.close()


class _ClientJob:
    """One job's inbox, and the thread that feeds its slices."""

    def __init__(self, job_id: int) -> None:
        self.id = job_id
        self.inbox: queue.Queue[Any] = queue.Queue()
        self._taken = 0
        self._stopped = False
        self._window = threading.Condition()

    def start_feeding(
        self, declared: ArrayFeed, slices: Iterable[np.ndarray], send: Callable[[Any], None]
    ) -> None:
        """Send ``slices`` from a thread of their own, a few ahead of the engine."""
        threading.Thread(
            target=self._feed,
            args=(declared, slices, send),
            name=f"dlbio-feed-{self.id}",
            daemon=True,
        ).start()

    def taken(self, index: int) -> None:
        with self._window:
            self._taken = max(self._taken, index)
            self._window.notify_all()

    def stop_feeding(self) -> None:
        """Stop sending slices; a slice being read or sent is the last (the engine drops
        slices of ended jobs), and a read that hangs keeps only its daemon thread."""
        with self._window:
            self._stopped = True
            self._window.notify_all()

    def _feed(
        self, declared: ArrayFeed, slices: Iterable[np.ndarray], send: Callable[[Any], None]
    ) -> None:
        planes = iter(slices)
        try:
            for index in itertools.count():
                with self._window:
                    while not self._stopped and index >= self._taken + FEED_WINDOW:
                        self._window.wait()
                    if self._stopped:
                        return
                plane = next(planes, None)  # read only once the engine has room for it
                if plane is None:
                    return
                array = np.ascontiguousarray(plane)
                if (
                    index >= declared.shape[0]
                    or array.shape != tuple(declared.shape[1:])
                    or array.dtype != np.dtype(declared.dtype)
                ):
                    raise InputDataError(
                        f"slice {index} ({array.shape}, {array.dtype}) does not fit the stack "
                        f"of {declared.shape} {declared.dtype} the request announced"
                    )
                send(Feed(self.id, index, array))
        except EngineError:
            return  # the job itself reports the broken connection
        # A slice that cannot be read ends the job with that error.
        except Exception as error:  # noqa: BLE001
            self.inbox.put(error)


def _fed_feed(request: Request) -> ArrayFeed:
    """The request's ArrayFeed, which the slices given to ``run`` fill."""
    for field in dataclasses.fields(request):
        value = getattr(request, field.name)
        if isinstance(value, ArrayFeed):
            return value
    raise ValueError(f"{type(request).__name__} has no ArrayFeed for the slices to fill")


def connect(
    host: str,
    port: int,
    key: bytes,
    *,
    key_name: str = "the key",
    timeout: float = HANDSHAKE_TIMEOUT_S,
) -> EngineClient:
    """A client of the engine that ``dlbio engine --listen HOST:PORT`` started.

    Parameters
    ----------
    host, port
        Where the engine listens (through an SSH tunnel: the tunnel's local end).
    key
        The key in the engine's key file.
    key_name
        How messages name the key, e.g. "the key in ~/.dlbio/key".
    timeout
        Seconds to connect and authenticate.

    Raises
    ------
    EngineError
        When nothing listens there, the engine refuses the key, or what answers is no
        dlbio engine.
    """
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise EngineError(
            f"nothing is listening at {where}; start the engine there (dlbio engine --listen "
            f"{where}), or check the address and the SSH tunnel"
        ) from None
    except OSError as error:
        raise EngineError(f"cannot reach the engine at {where}: {error}") from None
    sock.settimeout(None)
    connection = Connection(sock.detach())
    try:
        handshake(connection, key, server=False, timeout=timeout)
    except AuthenticationError:
        connection.close()
        raise EngineError(
            f"the engine at {where} refused {key_name}; use the key file the engine was "
            "started with"
        ) from None
    except HandshakeError as error:
        connection.close()
        raise EngineError(f"{where} did not answer as a dlbio engine ({error})") from None
    return EngineClient(
        Channel(connection),
        lost=lambda: EngineDied(
            f"the connection to the engine at {where} was lost; your data here is untouched"
        ),
    )
