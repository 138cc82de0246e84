"""The widgets' one way to the engine: a child-process engine per napari session, or an
engine on another machine (``dlbio engine --listen``) the user connects to.

The engine (:class:`~napari_dlbio.engine.local.LocalEngine`) owns TensorFlow and every
model; napari's process only sends it requests and turns the events that come back into
UI.  It starts with the first request a widget sends, ends when napari quits (or when this
process ends), and starts again with the next request after it died: the request then
running fails with :class:`~napari_dlbio.engine.protocol.EngineDied`, whose message (shown
as a notification by :class:`~._worker.Job`) says what happened and that the layers are
untouched.

Models trained in the engine are written to the session's scratch folder unless the user
chose a folder, so a model never lives only in the engine's memory: after a restart the
next request loads it again from its folder (see :class:`~.protocol.ModelHandle`).
Paths in requests are paths on the engine's machine: a remote engine writes that scratch
folder on its own disk (where it stays after the session).  A lost connection to a remote
engine (a dropped SSH tunnel, say) fails the request then running; the next request
connects again, with the same address and key.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QApplication

from napari_dlbio.core.events import CancelToken, Event
from napari_dlbio.engine.auth import read_key
from napari_dlbio.engine.client import EngineClient, connect
from napari_dlbio.engine.local import LocalEngine
from napari_dlbio.engine.protocol import Request

#: How the session's engine is described while it is the local child process.
THIS_COMPUTER = "this computer"


class SessionEngine:
    """The engine of one napari session and the folder its unsaved models are kept in.

    Nothing starts until the first request; :meth:`close` ends the engine and removes
    the scratch folder (and so do napari's quitting and this object's collection).
    """

    def __init__(self) -> None:
        self._engine: list[LocalEngine | EngineClient] = [LocalEngine()]
        self._reconnect: Callable[[], EngineClient] | None = None
        self._lock = threading.Lock()
        self.where = THIS_COMPUTER
        self._scratch = Path(tempfile.mkdtemp(prefix="dlbio-session-"))
        self._models = 0
        self._finalizer = weakref.finalize(self, _end, self._engine, self._scratch)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._finalizer)

    @property
    def pid(self) -> int | None:
        """The local engine process's id while it runs (None for a remote engine)."""
        return getattr(self._engine[0], "pid", None)

    def connect(self, host: str, port: int, key_file: str | Path) -> None:
        """Use the engine listening at ``host:port`` from now on (the local one ends).

        Raises
        ------
        DlbioError
            When the key file cannot be read or the engine cannot be reached (its
            message says what to check).
        """
        key = read_key(key_file)

        def reconnect() -> EngineClient:
            return connect(host, port, key, key_name=f"the key in {key_file}")

        self._use(reconnect(), f"{host}:{port}", reconnect)

    def use_local(self) -> None:
        """Use an engine on this computer from now on (started with the next request)."""
        if not isinstance(self._engine[0], LocalEngine):
            self._use(LocalEngine(), THIS_COMPUTER, None)

    def _use(
        self,
        engine: LocalEngine | EngineClient,
        where: str,
        reconnect: Callable[[], EngineClient] | None,
    ) -> None:
        with self._lock:
            old, self._engine[0] = self._engine[0], engine
            self.where, self._reconnect = where, reconnect
        old.close()

    def _live(self) -> LocalEngine | EngineClient:
        """The engine; a remote one whose connection broke is connected again."""
        with self._lock:
            engine = self._engine[0]
            if isinstance(engine, EngineClient) and engine.closed and self._reconnect:
                engine = self._engine[0] = self._reconnect()
            return engine

    def run(
        self,
        request: Request,
        *,
        feed: Iterable[np.ndarray] | None = None,
        cancel: CancelToken | None = None,
    ) -> Generator[Event, None, Any]:
        """Run ``request`` in the engine (started first if needed): yield its events and
        return its result; ``feed`` gives the slices of its ArrayFeed."""
        return (yield from self._live().run(request, feed=feed, cancel=cancel))

    def call(self, request: Request) -> Any:
        """Run ``request`` to its end and return its result."""
        return self._live().call(request)

    def job(self, request: Request) -> Callable[..., Generator[Event, None, Any]]:
        """``request`` as a job function for :class:`~._worker.Job` (Stop cancels it)."""

        def run(*, cancel: CancelToken) -> Generator[Event, None, Any]:
            return (yield from self.run(request, cancel=cancel))

        return run

    def scratch_folder(self) -> Path:
        """A new folder name in the session's scratch folder, for an unsaved model."""
        self._models += 1
        return self._scratch / f"model-{self._models}"

    def close(self) -> None:
        """End the engine and remove the scratch folder."""
        self._finalizer()


def _end(engine: list[LocalEngine | EngineClient], scratch: Path) -> None:
    engine[0].close()
    shutil.rmtree(scratch, ignore_errors=True)
