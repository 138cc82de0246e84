"""Messages to bytes and back: arrays out of band, and a decoder that runs no foreign code."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from napari_dlbio.core.events import Finished, RunState, SlicePredicted, TileDone
from napari_dlbio.engine.codec import allowed_global, decode, encode
from napari_dlbio.engine.protocol import (
    EventMessage,
    Failure,
    LoadModel,
    ModelInfo,
    PredictSlices,
    ProtocolError,
    Submit,
)

DTYPES = ["uint8", "uint16", ">u2", "int32", "float32", "float64", "bool", "complex64"]


def round_trip(message: object) -> object:
    payload, buffers = encode(message)
    return decode(payload, [bytearray(b.raw()) for b in buffers])


@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_of_every_dtype_travel_out_of_band(dtype: str) -> None:
    array = (np.arange(4 * 5 * 6) % 7).astype(dtype).reshape(4, 5, 6)
    payload, buffers = encode(Submit(3, PredictSlices("model-1", array)))
    assert len(buffers) == 1
    assert buffers[0].raw().nbytes == array.nbytes
    assert len(payload) < 600  # the pixels are not in the pickle
    back = decode(payload, [bytearray(buffers[0].raw())])
    assert back.job_id == 3
    assert back.request.images.dtype == array.dtype
    np.testing.assert_array_equal(back.request.images, array)
    assert back.request.images.flags.writeable


def test_views_and_memmaps_are_sent_as_contiguous_arrays(tmp_path: Path) -> None:
    base = np.arange(2 * 64 * 64, dtype=np.float32).reshape(2, 64, 64)
    mapped = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype="u2", shape=(8, 8))
    mapped[:] = 7
    for array in (base[:, ::2, 1::3], base.transpose(2, 0, 1), mapped):
        payload, buffers = encode(array)
        assert len(buffers) == 1
        assert len(payload) < 300
        back = decode(payload, [b.raw() for b in buffers])
        assert type(back) is np.ndarray
        np.testing.assert_array_equal(back, array)


def test_events_results_and_small_values_round_trip() -> None:
    probabilities = np.random.default_rng(0).random((8, 8, 2), dtype=np.float32)
    messages = [
        EventMessage(1, TileDone(1, 4)),
        EventMessage(1, SlicePredicted(0, 2, probabilities)),
        EventMessage(1, Finished(RunState.CANCELLED)),
        ModelInfo("model-1", "builtin:x", "segmentation", {"a": [1, 2.5, None]}, "/m"),
        Failure(2, "InputDataError", "no"),
        [np.float32(1.5), np.int64(3), np.array(2.0), Path("/x/y"), {1, 2}, frozenset([3])],
        np.zeros((0, 3), dtype=np.uint8),
        np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]),
    ]
    for message in messages:
        back = round_trip(message)
        if isinstance(message, EventMessage) and isinstance(message.event, SlicePredicted):
            np.testing.assert_array_equal(back.event.probabilities, probabilities)
            assert back.event.index == 0
        elif isinstance(message, np.ndarray):
            np.testing.assert_array_equal(back, message)
            assert back.dtype == message.dtype
        else:
            assert back == message


def _global(module: str, name: str) -> bytes:
    """A pickle that names ``module.name`` (STACK_GLOBAL), as a hostile peer may write it."""

    def text(value: str) -> bytes:
        return b"\x8c" + bytes([len(value)]) + value.encode()

    return b"\x80\x05" + text(module) + text(name) + b"\x93."


class _Evil:
    def __init__(self, call: object, args: tuple) -> None:
        self.call = call
        self.args = args

    def __reduce__(self) -> tuple:
        return self.call, self.args


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(_Evil(os.system, ("touch /tmp/dlbio-pwned",)), protocol=5),
        pickle.dumps(_Evil(subprocess.Popen, (["true"],)), protocol=5),
        pickle.dumps(_Evil(eval, ("1",)), protocol=5),
        pickle.dumps(_Evil(getattr, (1, "real")), protocol=5),
        pickle.dumps(_Evil(bytearray, (10**12,)), protocol=5),
        # A function of the package itself, and a way out through a class's attributes.
        pickle.dumps(_Evil(encode, (1,)), protocol=5),
        _global("napari_dlbio.engine.protocol", "LoadModel.__init__.__globals__"),
        _global("napari_dlbio.engine.protocol", "_private"),
        _global("napari_dlbio.cli", "main"),
        _global("os", "system"),
        b"not a pickle",
    ],
)
def test_the_decoder_refuses_anything_outside_the_protocol(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(payload)


def test_the_decoder_imports_nothing_a_peer_names() -> None:
    with pytest.raises(ProtocolError, match="refused"):
        allowed_global("napari_dlbio._widgets.train_widget", "TrainWidget")
    assert allowed_global("napari_dlbio.engine.protocol", "LoadModel") is LoadModel


def test_a_numpy_scalar_whose_size_lies_is_refused() -> None:
    scalar = allowed_global(*_scalar_global())
    assert scalar(np.dtype("f4"), np.float32(2.5).tobytes()) == np.float32(2.5)
    with pytest.raises(ProtocolError):
        scalar(np.dtype("V1000000000"))
    with pytest.raises(ProtocolError):
        scalar(np.dtype("f8"), b"\x00")


def _scalar_global() -> tuple[str, str]:
    function = np.float32(0).__reduce__()[0]
    return function.__module__, function.__name__
