"""Messages to bytes and back: pickle protocol 5, arrays out of band, a restricted decoder.

:func:`encode` pickles a message with its numpy arrays' memory kept out of the pickle
(``buffer_callback``): the transport moves those buffers as they are, never as pickled
copies.  :func:`decode` rebuilds only what the protocol needs (the allow-list
:func:`allowed_global`), so a peer that knows the key still cannot make the other side
import a module or call a function of its choice (``os.system``, ``subprocess.Popen``).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import pathlib
import pickle
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_dlbio.engine.protocol import ProtocolError

PROTOCOL = 5
PACKAGE = "napari_dlbio"


def encode(message: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """The pickle of ``message`` and the out-of-band buffers of its arrays, in order.

    Arrays that pickle would copy into the stream (views with strides, ``np.memmap`` and
    other subclasses) are sent as contiguous arrays instead.
    """
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _Pickler(stream, protocol=PROTOCOL, buffer_callback=buffers.append).dump(message)
    return stream.getvalue(), buffers


def decode(payload: bytes | memoryview, buffers: Sequence[Any] = ()) -> Any:
    """Rebuild a message from :func:`encode`'s payload and buffers.

    Raises
    ------
    ProtocolError
        For a payload that names anything outside the allow-list, or is no valid pickle.
    """
    try:
        return _Unpickler(io.BytesIO(payload), buffers=buffers).load()
    except ProtocolError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ProtocolError(f"a message could not be decoded ({error})") from None


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if (
            isinstance(obj, np.ndarray)
            and not obj.dtype.hasobject
            and (type(obj) is not np.ndarray or not _contiguous(obj))
        ):
            return np.ascontiguousarray(obj).__reduce_ex__(PROTOCOL)
        return NotImplemented


def _contiguous(array: np.ndarray) -> bool:
    return bool(array.flags.c_contiguous or array.flags.f_contiguous)


def _checked_scalar(dtype: np.dtype, data: Any = None) -> Any:
    """numpy's scalar rebuilder, refusing a size that does not match its bytes (a huge
    dtype with no data would otherwise allocate its whole size)."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise ProtocolError("a numpy scalar of an unexpected type was refused")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise ProtocolError("a numpy scalar whose size does not match its data was refused")
    return _SCALAR(dtype, data)


# numpy's own rebuilders, found through the reductions they appear in (their module moved
# from numpy.core to numpy._core in numpy 2).
_RECONSTRUCT = np.empty(0, dtype=object).__reduce__()[0]
_FROMBUFFER = np.empty(1).__reduce_ex__(PROTOCOL)[0]
_SCALAR = np.float32(0).__reduce__()[0]

_ALLOWED: dict[tuple[str, str], Any] = {
    (function.__module__, function.__name__): function for function in (_RECONSTRUCT, _FROMBUFFER)
}
_ALLOWED[(_SCALAR.__module__, _SCALAR.__name__)] = _checked_scalar
_ALLOWED.update(
    {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "slice"): slice,
        ("builtins", "range"): range,
    }
)
_ALLOWED.update(
    {
        ("pathlib", kind.__name__): kind
        for kind in (
            pathlib.Path,
            pathlib.PosixPath,
            pathlib.WindowsPath,
            pathlib.PurePath,
            pathlib.PurePosixPath,
            pathlib.PureWindowsPath,
        )
    }
)


def allowed_global(module: str, name: str) -> Any:
    """What a pickle may name: numpy's array, dtype and scalar rebuilders, paths, a few
    builtins, and the dataclasses and enums of napari-dlbio's modules already imported.

    Nothing is imported on a peer's request, and dotted or private names are refused, so
    the allow-list cannot be walked out of (``Class.__init__.__globals__``).

    Raises
    ------
    ProtocolError
        For anything else.
    """
    found = _ALLOWED.get((module, name))
    if found is not None:
        return found
    if (module == PACKAGE or module.startswith(PACKAGE + ".")) and _public_name(name):
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type) and (
            dataclasses.is_dataclass(kind) or issubclass(kind, enum.Enum)
        ):
            return kind
    raise ProtocolError(f"a message naming {module}.{name} was refused")


def _public_name(name: str) -> bool:
    return name.isidentifier() and not name.startswith("_")


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return allowed_global(module, name)
