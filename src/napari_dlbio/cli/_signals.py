"""Ctrl+C in the terminal stops a training run cleanly instead of killing it."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

from napari_dlbio.core.events import CancelToken


@contextlib.contextmanager
def cancel_on_interrupt(cancel: CancelToken) -> Iterator[None]:
    """Ctrl+C stops after the current batch (a second Ctrl+C aborts at once)."""

    def stop(signum: int, frame: Any) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        sys.stderr.write("\nStopping after the current batch (Ctrl+C again to abort)...\n")
        cancel.cancel()

    try:
        previous = signal.signal(signal.SIGINT, stop)
    except ValueError:  # not the main thread: leave Ctrl+C alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
