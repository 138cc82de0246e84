"""A terminal progress bar that consumes the typed events of any long job.

On a terminal the current bar is redrawn in place; when the stream is a file or a pipe (an
HPC job log) only whole lines are written: one per epoch, notices, and the final state.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from napari_dlbio.core.events import (
    BatchEnded,
    EpochEnded,
    Event,
    Finished,
    Notice,
    TileDone,
    TrainingStarted,
)

_BAR_WIDTH = 28
_REDRAW_S = 0.1


class ProgressPrinter:
    """Write progress of a job to a text stream; call it with every event.

    Parameters
    ----------
    stream
        Where to write (default: standard error, so standard output stays parseable).
    quiet
        Write nothing but notices.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._quiet = quiet
        self._live = bool(getattr(self._stream, "isatty", lambda: False)())
        self._started = time.perf_counter()
        self._last_draw = 0.0
        self._open_line = False

    def __call__(self, event: Event) -> None:
        """Show one event."""
        if isinstance(event, Notice):
            self._line(event.text)
            return
        if self._quiet:
            return
        if isinstance(event, TrainingStarted):
            self._started = time.perf_counter()
            self._line(
                f"Training on {event.device}: up to {event.epochs} epochs "
                f"of {event.steps_per_epoch} steps."
            )
        elif isinstance(event, BatchEnded):
            self._bar(
                event.step,
                event.steps,
                f"epoch {event.epoch} loss {event.loss:.4f}",
                final=False,
            )
        elif isinstance(event, EpochEnded):
            figures = "  ".join(f"{key} {value:.4f}" for key, value in event.metrics.items())
            self._line(
                f"epoch {event.epoch}/{event.epochs}  loss {event.loss:.4f}  {figures}".rstrip()
                + f"  [{self._elapsed()}]"
            )
        elif isinstance(event, TileDone):
            self._bar(event.index, event.total, "tiles", final=event.index == event.total)
        elif isinstance(event, Finished):
            self._line(f"{event.state.value} after {self._elapsed()}")

    def _bar(self, done: int, total: int, label: str, *, final: bool) -> None:
        if not self._live:
            return
        now = time.perf_counter()
        if not final and now - self._last_draw < _REDRAW_S:
            return
        self._last_draw = now
        filled = round(_BAR_WIDTH * done / max(total, 1))
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        self._stream.write(f"\r[{bar}] {done}/{total} {label} [{self._elapsed()}]\x1b[K")
        self._stream.flush()
        self._open_line = True

    def _line(self, text: str) -> None:
        if self._open_line:
            self._stream.write("\r\x1b[K")
            self._open_line = False
        self._stream.write(text + "\n")
        self._stream.flush()

    def _elapsed(self) -> str:
        seconds = int(time.perf_counter() - self._started)
        return f"{seconds // 60}:{seconds % 60:02d}"
