"""The engine as a child process of this one (napari's): started on first use, started
again after it died, ended with this process.

The child is a fresh interpreter (``python -m napari_dlbio.engine.child``), not a
``multiprocessing`` spawn: a spawned child imports the parent's ``__main__``, which for
the ``napari`` command imports napari.  It gets its key through a pipe, and big arrays
travel both ways through shared memory (:class:`~.transport.SharedFiles`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Client
from pathlib import Path
from typing import IO, Any, cast

import numpy as np

from napari_dlbio.core.events import CancelToken, Event, run_to_end
from napari_dlbio.engine.auth import HANDSHAKE_TIMEOUT_S, handshake
from napari_dlbio.engine.client import EngineClient
from napari_dlbio.engine.protocol import EngineDied, EngineError, Request
from napari_dlbio.engine.transport import Channel, SharedFiles

#: Seconds the child has to start listening (it imports numpy, not TensorFlow).
START_TIMEOUT_S = 60.0
#: Seconds the child has to end once asked, before it is killed.
STOP_TIMEOUT_S = 10.0
#: How much lower the child's CPU priority is than this process's (Unix ``nice``): the
#: window that serves the user gets a busy machine's cores first, the engine every cycle
#: the window leaves idle.  On a 2-core software-GL machine the longest stall while
#: training went from 59.5 to 46.1 ms with it (one run each of
#: benchmarks/gui_responsiveness.py); other busy programs also get ahead of the engine.
BACKGROUND_NICENESS = 10
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class LocalEngine:
    """A child-process engine, shared by every thread of this process.

    :meth:`run` starts the child on first use.  When the child dies (the system killed it
    for lack of memory, say), the jobs in flight raise :class:`~.protocol.EngineDied`,
    its shared memory is cleaned up, and the next request starts a fresh child.

    Parameters
    ----------
    start_timeout
        Seconds the child has to start.
    niceness
        How much lower the child's CPU priority is (0: the same as this process's).
    """

    def __init__(
        self, start_timeout: float = START_TIMEOUT_S, niceness: int = BACKGROUND_NICENESS
    ) -> None:
        self.start_timeout = start_timeout
        self.niceness = niceness
        self._lock = threading.Lock()
        self._child: list[_Child | None] = [None]
        self._finalizer = weakref.finalize(self, _close_child, self._child)

    @property
    def pid(self) -> int | None:
        """The process id of the running child, if any."""
        child = self._child[0]
        return None if child is None or child.client.closed else child.process.pid

    def run(
        self,
        request: Request,
        *,
        feed: Iterable[np.ndarray] | None = None,
        cancel: CancelToken | None = None,
    ) -> Generator[Event, None, Any]:
        """Run ``request`` in the engine (started first if needed): yield its events and
        return its result, as :meth:`EngineClient.run <.client.EngineClient.run>`."""
        return (yield from self.client().run(request, feed=feed, cancel=cancel))

    def call(self, request: Request) -> Any:
        """Run ``request`` to its end (its events are dropped) and return its result."""
        return run_to_end(self.run(request))

    def client(self) -> EngineClient:
        """The client of the running child, starting a child if none runs.

        Raises
        ------
        EngineError
            When the child cannot start.
        """
        with self._lock:
            child = self._child[0]
            if child is None or child.client.closed:
                if child is not None:
                    child.close()
                child = self._child[0] = _start_child(self.start_timeout, self.niceness)
            return child.client

    def close(self) -> None:
        """End the child (jobs in flight raise EngineError); a later request starts one."""
        with self._lock:
            _close_child(self._child)


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    client: EngineClient
    shared: SharedFiles

    def close(self) -> None:
        self.client.close()
        _end_process(self.process)
        self.shared.remove_all()


def _close_child(holder: list[_Child | None]) -> None:
    child, holder[0] = holder[0], None
    if child is not None:
        child.close()


def _start_child(timeout: float, niceness: int) -> _Child:
    key = secrets.token_bytes(32)
    shared = SharedFiles(SharedFiles.default_folder(), SharedFiles.new_prefix(), "client")
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(_PACKAGE_ROOT), environment.get("PYTHONPATH")])
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "napari_dlbio.engine.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=environment,
    )
    # Both are pipes (never None); stdin stays open: the child ends when it closes.
    stdin, stdout = cast(IO[bytes], process.stdin), cast(IO[bytes], process.stdout)
    try:
        settings = {
            "key": key.hex(),
            "folder": str(shared.folder),
            "prefix": shared.prefix,
            "niceness": niceness,
        }
        stdin.write(json.dumps(settings).encode() + b"\n")
        stdin.flush()
        line = _read_line(stdout, timeout)
        if not line:
            raise EngineError(
                f"the engine process could not start ({_ending(process, timeout)}); its "
                "error is in the terminal this program was started from"
            )
        stdout.close()
        connection = Client(json.loads(line)["address"])
        handshake(connection, key, server=False, timeout=HANDSHAKE_TIMEOUT_S)
    except BaseException:
        _end_process(process)
        stdout.close()  # only now: a read still waiting on it holds its lock
        shared.remove_all()
        raise
    client = EngineClient(Channel(connection, shared), lost=lambda: _died(process, shared))
    return _Child(process, client, shared)


def _read_line(stream: IO[bytes], timeout: float) -> bytes:
    """The first line of ``stream``, or b"" when it ends or nothing comes in time."""
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return b""


def _ending(process: subprocess.Popen[bytes], timeout: float) -> str:
    """How a child that never answered ended: its exit code, or that it is still silent."""
    try:
        return f"exit code {process.wait(1.0)}"
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:g} s"


def _end_process(process: subprocess.Popen[bytes]) -> None:
    """Close the child's lifeline, wait for it to end, kill it if it does not."""
    if process.stdin is not None and not process.stdin.closed:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _died(process: subprocess.Popen[bytes], shared: SharedFiles) -> EngineDied:
    """The error of the jobs in flight when the child's connection broke."""
    try:
        code = process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    shared.remove_all()
    after = (
        " Your layers and annotations are untouched; the engine starts again with the next request."
    )
    if code == -getattr(signal, "SIGKILL", 9):
        return EngineDied(
            "The engine process was killed (signal 9), most likely because the computer ran "
            "out of memory: predict or train on less at a time (fewer slices, a smaller "
            "tile, batch or patch size)." + after
        )
    if code < 0:
        return EngineDied(f"The engine process was stopped by signal {-code}." + after)
    return EngineDied(f"The engine process ended unexpectedly (exit code {code})." + after)
