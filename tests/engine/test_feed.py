"""A stack whose slices arrive after its request, read in order by a job."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_dlbio.core.events import CancelToken
from napari_dlbio.engine.feed import FedStack, JobCancelled
from napari_dlbio.engine.protocol import ArrayFeed, ProtocolError

# Hang guard for the reading thread (s); never a measurement.
WAIT_S = 30.0


def fed(n: int = 4) -> tuple[FedStack, list[int], CancelToken]:
    taken: list[int] = []
    cancel = CancelToken()
    return FedStack(ArrayFeed((n, 2, 3, 1), "|u1"), cancel, taken.append), taken, cancel


def plane(value: int) -> np.ndarray:
    return np.full((2, 3, 1), value, dtype=np.uint8)


def test_reads_wait_for_their_slices_and_drop_the_earlier_ones() -> None:
    stack, taken, _ = fed()
    assert (stack.shape, stack.dtype, stack.ndim, len(stack)) == ((4, 2, 3, 1), np.uint8, 4, 4)
    read: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: read.append(stack[1:3]))
    stack.put(0, plane(0))
    np.testing.assert_array_equal(stack[:1], plane(0)[np.newaxis])
    reader.start()
    stack.put(2, plane(2))
    stack.put(1, plane(1))
    reader.join(WAIT_S)
    np.testing.assert_array_equal(read[0], np.stack([plane(1), plane(2)]))
    assert taken == [1]
    np.testing.assert_array_equal(stack[2], plane(2))
    assert taken == [1, 2]


def test_slices_are_read_in_order_once() -> None:
    stack, _, _ = fed()
    stack.put(0, plane(0))
    stack.put(1, plane(1))
    stack[1:2]
    with pytest.raises(IndexError, match="in order"):
        stack[0:1]
    with pytest.raises(TypeError):
        stack[::2]


@pytest.mark.parametrize(
    ("index", "array"),
    [
        (7, plane(0)),
        (0, np.zeros((2, 3, 1), np.uint16)),
        (0, np.zeros((3, 2, 1), np.uint8)),
        (0, [[1]]),
    ],
)
def test_a_slice_that_does_not_fit_is_refused(index, array) -> None:
    stack, _, _ = fed()
    with pytest.raises(ProtocolError):
        stack.put(index, array)


def test_a_slice_sent_twice_is_refused() -> None:
    stack, _, _ = fed()
    stack.put(0, plane(0))
    with pytest.raises(ProtocolError, match="out of turn"):
        stack.put(0, plane(0))


def test_cancelling_wakes_a_waiting_read() -> None:
    stack, _, cancel = fed()
    raised = threading.Event()

    def read() -> None:
        try:
            stack[0:1]
        except JobCancelled:
            raised.set()

    reader = threading.Thread(target=read)
    reader.start()
    cancel.cancel()
    reader.join(WAIT_S)
    assert raised.is_set()
