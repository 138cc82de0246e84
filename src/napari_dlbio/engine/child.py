"""The engine process of a LocalEngine: ``python -m napari_dlbio.engine.child``.

The parent writes one JSON line to its standard input: the key, the shared-memory files'
folder and prefix, and how much to lower the child's CPU priority. The child listens on a
fresh local address (a Unix socket, a named pipe on Windows), writes that address as one
JSON line to standard output, accepts one connection, authenticates it and serves it until
it closes. It also ends when its standard input closes: the parent closed it, or died. It
imports the engine package and, in the engine's handlers, the models package: never napari
or Qt.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from multiprocessing.connection import Listener

from napari_dlbio.engine.auth import HANDSHAKE_TIMEOUT_S, handshake
from napari_dlbio.engine.server import Engine
from napari_dlbio.engine.transport import Channel, SharedFiles


def main() -> None:
    """Serve the parent's one connection, then end the process."""
    logging.basicConfig(level=logging.WARNING, format="dlbio engine: %(message)s")
    settings = json.loads(sys.stdin.buffer.readline())
    if settings["niceness"] and hasattr(os, "nice"):  # before any thread: they inherit it
        os.nice(settings["niceness"])
    key = bytes.fromhex(settings["key"])
    shared = SharedFiles(settings["folder"], settings["prefix"], "engine")
    listener = Listener()
    try:
        sys.stdout.write(json.dumps({"address": listener.address}) + "\n")
        sys.stdout.flush()
        # Anything printed from now on (a library's notice) goes to the terminal.
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        threading.Thread(target=_end_with_parent, name="dlbio-engine-lifeline", daemon=True).start()
        connection = listener.accept()
    finally:
        listener.close()
    handshake(connection, key, server=True, timeout=HANDSHAKE_TIMEOUT_S)
    Engine().serve(Channel(connection, shared))
    _exit()


def _end_with_parent() -> None:
    """End the process when the parent closes standard input or dies, whatever runs."""
    sys.stdin.buffer.read()
    _exit()


def _exit() -> None:
    """End at once: jobs still running have nobody to report to, and a normal shutdown
    would wait on the thread that reads standard input."""
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
