"""The engine's side: run each request as a job, stream its events, serve connections.

:class:`Engine` holds what every connection shares (the loaded models, the handlers) and
serves one connection: it reads messages, runs each request as a job in a thread of its
own (its handler from :mod:`.handlers`), sends the job's events as they come and its
result last, honours Cancel, and cancels a connection's jobs when the connection breaks.
:class:`EngineServer` accepts connections on a TCP address (``dlbio engine``), each
authenticated and served in a thread of its own, so a wrong key, a silent or garbled
peer, or a slow client never keeps the others waiting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import AuthenticationError, Connection, Listener
from typing import Any

from napari_dlbio.core.events import CancelToken, Finished, RunState
from napari_dlbio.engine.auth import HANDSHAKE_TIMEOUT_S, HandshakeError, handshake
from napari_dlbio.engine.feed import FedStack, JobCancelled
from napari_dlbio.engine.handlers import HANDLERS, Handler, JobContext, new_registry
from napari_dlbio.engine.protocol import (
    USER_ERRORS,
    ArrayFeed,
    Cancel,
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
from napari_dlbio.engine.registry import ModelRegistry
from napari_dlbio.engine.transport import Channel, Limits

log = logging.getLogger("napari_dlbio.engine")


class _Disconnected(Exception):
    """The connection of a job broke: nobody is left to tell anything."""


class Engine:
    """What the engine process holds for all its connections: loaded models, handlers.

    Parameters
    ----------
    handlers
        Handler of each request type (default :data:`~.handlers.HANDLERS`).
    models
        The loaded models (default: an empty registry).
    """

    def __init__(
        self,
        handlers: Mapping[type[Request], Handler] | None = None,
        models: ModelRegistry | None = None,
    ) -> None:
        self.handlers = dict(HANDLERS if handlers is None else handlers)
        self.models = new_registry() if models is None else models
        self.workers = _Workers()

    def serve(self, channel: Channel, peer: str = "the client") -> None:
        """Serve one connection until it closes or breaks the protocol (blocks)."""
        _Session(self, channel, peer).run()


class _Workers:
    """Threads that run jobs, each kept for the next job once its job ends.

    TensorFlow sets up per-thread state (its eager context) on a thread's first call: a
    new thread per job cost 3-4 ms a job (TensorFlow 2.21, 2-core CPU), a reused one none.
    There is no cap, so a job waiting for its slices never holds up another.
    """

    def __init__(self) -> None:
        self._idle: queue.SimpleQueue[queue.SimpleQueue[Callable[[], None]]] = queue.SimpleQueue()
        self._count = itertools.count(1)

    def run(self, task: Callable[[], None]) -> None:
        """Run ``task`` on an idle thread, or on a new one if none is idle."""
        try:
            inbox = self._idle.get_nowait()
        except queue.Empty:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=self._serve,
                args=(inbox,),
                name=f"dlbio-engine-worker-{next(self._count)}",
                daemon=True,
            ).start()
        inbox.put(task)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            inbox.get()()
            self._idle.put(inbox)


@dataclasses.dataclass
class _Job:
    cancel: CancelToken
    feed: FedStack | None = None


class _Session:
    """One connection: a reader loop here, each job on a worker thread."""

    def __init__(self, engine: Engine, channel: Channel, peer: str) -> None:
        self.engine = engine
        self.channel = channel
        self.peer = peer
        self.jobs: dict[int, _Job] = {}
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            while True:
                self._dispatch(self.channel.recv())
        except EOFError:
            log.info("the connection from %s closed", self.peer)
        except ProtocolError as error:
            log.warning("closed the connection from %s: %s", self.peer, error)
        except OSError as error:
            log.warning("the connection from %s broke: %s", self.peer, error)
        except MemoryError:
            log.warning(
                "closed the connection from %s: a message too large for this computer's memory",
                self.peer,
            )
        finally:
            with self.lock:
                for job in self.jobs.values():
                    job.cancel.cancel()
            self.channel.shutdown()
            self.channel.close()

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, Submit):
            self._start(message)
        elif isinstance(message, Cancel):
            with self.lock:
                job = self.jobs.get(message.job_id)
            if job is not None:
                job.cancel.cancel()
        elif isinstance(message, Feed):
            with self.lock:
                job = self.jobs.get(message.job_id)
            # Slices may still arrive for a job that has ended: they are dropped.
            if job is not None and job.feed is not None:
                job.feed.put(message.index, message.array)
        else:
            raise ProtocolError(f"a client sent a {type(message).__name__}, not a request")

    def _start(self, message: Submit) -> None:
        job_id, request = message.job_id, message.request
        if not isinstance(job_id, int) or not isinstance(request, Request):
            raise ProtocolError("a Submit without a job number or a request")
        job = _Job(CancelToken())
        fed = [
            f.name
            for f in dataclasses.fields(request)
            if isinstance(getattr(request, f.name), ArrayFeed)
        ]
        if len(fed) > 1:
            raise ProtocolError("a request with more than one ArrayFeed")
        if fed:
            job.feed = FedStack(
                getattr(request, fed[0]), job.cancel, lambda index: self._taken(job_id, index)
            )
            request = dataclasses.replace(request, **{fed[0]: job.feed})
        with self.lock:
            if job_id in self.jobs:
                raise ProtocolError(f"job {job_id} was submitted twice")
            self.jobs[job_id] = job
        context = JobContext(job.cancel, self.engine.models)
        self.engine.workers.run(lambda: self._run_job(job_id, request, context))

    def _run_job(self, job_id: int, request: Request, context: JobContext) -> None:
        try:
            try:
                value = self._drive(job_id, request, context)
                self._send(Result(job_id, value))
            except JobCancelled:
                self._send(EventMessage(job_id, Finished(RunState.CANCELLED)))
                self._send(Result(job_id, None))
            except _Disconnected:
                raise
            # Every failure goes back to the client, which raises it; none ends the engine.
            except Exception as error:
                failure = Failure.of(job_id, error)
                if failure.kind not in USER_ERRORS:  # a bug: its traceback goes to the log
                    log.exception("job %s (%s) failed", job_id, type(request).__name__)
                self._send(failure)
        except _Disconnected:
            log.info("job %s stopped: its connection closed", job_id)
        finally:
            with self.lock:
                self.jobs.pop(job_id, None)

    def _drive(self, job_id: int, request: Request, context: JobContext) -> Any:
        handler = self.engine.handlers.get(type(request))
        if handler is None:
            raise EngineError(f"this engine has no handler for {type(request).__name__}")
        job = handler(request, context)
        try:
            while True:
                try:
                    event = next(job)
                except StopIteration as stop:
                    return stop.value
                self._send(EventMessage(job_id, event))
        finally:
            job.close()

    def _send(self, message: Any) -> None:
        try:
            self.channel.send(message)
        except (OSError, EOFError):
            raise _Disconnected from None

    def _taken(self, job_id: int, index: int) -> None:
        # When the connection is gone, the reader cancels the job.
        with contextlib.suppress(_Disconnected):
            self._send(FeedTaken(job_id, index))


class EngineServer:
    """An engine that serves every authenticated connection to a TCP address.

    Parameters
    ----------
    address
        ``(host, port)`` to listen on (IPv4 or a host name); port 0 picks a free port
        (see :attr:`address`).
    key
        The key clients must prove they hold.
    engine
        The engine to serve (default: a new one).
    limits
        What one message from a client may declare.
    handshake_timeout
        Seconds a new connection has to authenticate.
    """

    def __init__(
        self,
        address: tuple[str, int],
        key: bytes,
        engine: Engine | None = None,
        limits: Limits | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self.key = key
        self.engine = Engine() if engine is None else engine
        self.limits = limits
        self.handshake_timeout = handshake_timeout
        # No authkey here: each connection authenticates in its own thread, so accepting
        # the next one never waits for a slow or silent peer.
        self._listener = Listener(address, family="AF_INET")
        self._address: tuple[str, int] = self._listener.address[:2]
        self._stopping = threading.Event()
        self._channels: set[Channel] = set()
        self._lock = threading.Lock()
        self._count = itertools.count(1)

    @property
    def address(self) -> tuple[str, int]:
        """The host and port it listens on."""
        return self._address

    def serve_forever(self) -> None:
        """Accept and serve connections until :meth:`stop` (or an exception such as
        KeyboardInterrupt in this thread); then stop serving every connection."""
        try:
            while not self._stopping.is_set():
                try:
                    connection = self._listener.accept()
                except OSError as error:
                    if self._stopping.is_set():
                        break
                    log.warning("could not accept a connection: %s", error)
                    self._stopping.wait(0.1)
                    continue
                if self._stopping.is_set():
                    connection.close()
                    break
                peer = _peer(self._listener.last_accepted)
                threading.Thread(
                    target=self._serve,
                    args=(connection, peer),
                    name=f"dlbio-engine-connection-{next(self._count)}",
                    daemon=True,
                ).start()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop accepting, and close every connection (their jobs are cancelled)."""
        with self._lock:
            self._stopping.set()
            channels = list(self._channels)
        self._wake_accept()
        self._listener.close()
        for channel in channels:
            channel.shutdown()

    def _serve(self, connection: Connection, peer: str) -> None:
        try:
            handshake(connection, self.key, server=True, timeout=self.handshake_timeout)
        except AuthenticationError:
            log.warning("refused a connection from %s: wrong key", peer)
            connection.close()
            return
        except HandshakeError as error:
            log.warning("refused a connection from %s: %s", peer, error)
            connection.close()
            return
        channel = Channel(connection, limits=self.limits)
        with self._lock:
            if self._stopping.is_set():
                connection.close()
                return
            self._channels.add(channel)
        log.info("accepted a connection from %s", peer)
        try:
            self.engine.serve(channel, peer)
        finally:
            with self._lock:
                self._channels.discard(channel)

    def _wake_accept(self) -> None:
        """Connect once to the listener, so a thread blocked in ``accept`` returns (closing
        a listening socket does not wake it on Linux)."""
        import socket

        host, port = self.address
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        with contextlib.suppress(OSError):
            socket.create_connection((host, port), timeout=1.0).close()


def _peer(address: Any) -> str:
    """HOST:PORT of an accepted connection's address."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[:2]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
