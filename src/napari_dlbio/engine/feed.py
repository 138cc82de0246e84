"""A stack whose slices arrive after its request: what a handler sees for an ArrayFeed.

The job reads it like a (Z, Y, X, C) array, slice ranges in increasing order (as
:func:`~napari_dlbio.models.segmentation.iter_predict_slices` reads any stack); a read
waits for its slices, and slices before the one read are dropped and reported taken, so
the client sends more and memory holds only a few slices.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from napari_dlbio.core.events import CancelToken
from napari_dlbio.engine.protocol import ArrayFeed, ProtocolError

# How often a read waiting for a slice looks at the cancel token (s).
POLL_S = 0.1


class JobCancelled(Exception):
    """The job was cancelled (or lost its client) while it waited for a slice."""


class FedStack:
    """The slices of an :class:`ArrayFeed`, as they arrive.

    Parameters
    ----------
    feed
        Shape and dtype the client declared.
    cancel
        The job's cancel token: a waiting read gives up when it is set.
    taken
        Called with ``index`` when the slices before ``index`` are dropped.
    """

    def __init__(self, feed: ArrayFeed, cancel: CancelToken, taken: Callable[[int], None]) -> None:
        self.shape = tuple(feed.shape)
        self.dtype = np.dtype(feed.dtype)
        self.ndim = len(self.shape)
        self._cancel = cancel
        self._taken = taken
        self._slices: dict[int, np.ndarray] = {}
        self._first = 0  # slices before this one were dropped
        self._arrived = threading.Condition()

    def __len__(self) -> int:
        return self.shape[0]

    def put(self, index: int, array: np.ndarray) -> None:
        """Add slice ``index`` (from the connection's reader).

        Raises
        ------
        ProtocolError
            For an index out of range or sent twice, or a slice of another shape or dtype.
        """
        if not isinstance(array, np.ndarray):
            raise ProtocolError("a fed slice is not an array")
        if array.shape != self.shape[1:] or array.dtype != self.dtype:
            raise ProtocolError(
                f"a fed slice of shape {array.shape} and type {array.dtype} does not fit the "
                f"declared stack {self.shape} of {self.dtype}"
            )
        with self._arrived:
            if not self._first <= index < self.shape[0] or index in self._slices:
                raise ProtocolError(f"slice {index} was fed out of turn")
            self._slices[index] = array
            self._arrived.notify_all()

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        if isinstance(key, int):
            return self[key : key + 1][0]
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"a fed stack is read by ranges of slices, not {key!r}")
        start, stop, _ = key.indices(self.shape[0])
        stop = max(start, stop)
        with self._arrived:
            if start < self._first:
                raise IndexError(
                    f"slice {start} of a fed stack was read after slice {self._first}; "
                    "its slices are read in order"
                )
            dropped = start > self._first
            for index in range(self._first, start):
                self._slices.pop(index, None)
            self._first = start
            while not all(index in self._slices for index in range(start, stop)):
                if self._cancel.cancelled:
                    raise JobCancelled
                self._arrived.wait(POLL_S)
            planes = [self._slices[index] for index in range(start, stop)]
        if dropped:
            self._taken(start)
        if len(planes) == 1:
            return planes[0][np.newaxis]
        return np.stack(planes) if planes else np.empty((0, *self.shape[1:]), self.dtype)
