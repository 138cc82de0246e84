"""The one place TensorFlow is imported.

TensorFlow never shares napari's process: the engine process imports it (see
:mod:`napari_dlbio.engine`), so the measures that kept its LLVM apart from Mesa's OpenGL
(loading with ``RTLD_DEEPBIND``, a preload of its libraries with the GIL released) are
gone.

One process-wide workaround keeps TensorFlow's C++ log lines off standard error, in
``dlbio``, the demo and napari alike, unless :func:`show_tensorflow_logs` was called first
(``dlbio --verbose``).  Checked with TensorFlow 2.21 on Linux: its libraries log from their static
initialisers, before ``absl::InitializeLog()`` runs ("WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR", "oneDNN custom operations are on",
"Could not find cuda drivers"), and listing the devices of a machine without a GPU logs
"failed call to cuInit: ... CUDA error": lines that read like a crash.
``TF_CPP_MIN_LOG_LEVEL=3`` silences only the later ones (the cuInit error); the early ones
ignore it and every other setting tried (``GLOG_minloglevel``, ``ABSL_MIN_LOG_LEVEL``,
``GRPC_VERBOSITY``, ``TF_CPP_MAX_VLOG_LEVEL``).  So ``TF_CPP_MIN_LOG_LEVEL`` defaults to 3,
and while TensorFlow loads and lists its devices, file descriptor 2 points at a temporary
file; afterwards everything written there that is not one of TensorFlow's log lines (Python
warnings, other threads' messages) is written back to standard error, and all of it if
loading failed.  A hard crash inside that window (a segmentation fault) loses its output:
``--verbose`` shows it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

_lock = threading.Lock()
_configured = False
_show_logs = False
_gradient_lock = threading.Lock()
_training_runs = 0
_gradients_before: set[str] = set()


def load_tensorflow() -> ModuleType:
    """Import TensorFlow safely (once), configure it for sharing a machine, and return it."""
    global _configured
    with _lock:
        if "tensorflow" in sys.modules and _configured:
            return sys.modules["tensorflow"]
        if not _show_logs:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _startup_logs_held_back():
            import tensorflow as tf

            if not _configured:
                _configure(tf)
                _configured = True
        return tf


def show_tensorflow_logs() -> None:
    """Let TensorFlow's C++ log lines reach standard error (``dlbio --verbose``).

    They are held back by default (see the module docstring).  Call this before TensorFlow
    is first loaded: its start-up lines are written only once.
    """
    global _show_logs
    _show_logs = True


def load_keras() -> Any:
    """The Keras 3 package, imported after :func:`load_tensorflow`."""
    load_tensorflow()
    import keras as keras_module

    return keras_module


def device_description() -> str:
    """What training runs on, in words: the GPU names, or the CPU and its thread count."""
    tf = load_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            names.append(details.get("device_name", gpu.name))
        return "GPU: " + ", ".join(names)
    return f"CPU ({os.cpu_count()} cores)"


@contextlib.contextmanager
def releasing_traced_gradients() -> Iterator[None]:
    """Training inside this block leaves no gradient function in TensorFlow's registry.

    Every traced Keras train step registers a ``tf.custom_gradient`` (the optimizer's
    all-reduce) under a new name in TensorFlow's global gradient registry, which keeps the
    traced graph and so the whole model alive for the life of the process
    (tensorflow/tensorflow#80895): about 35 MiB per training run, without end in a napari
    session.  A traced step no longer needs them, so they are dropped when the last
    training run of the process that is inside such a block ends (another may be tracing).
    """
    global _training_runs, _gradients_before
    registry = _gradient_registry()
    with _gradient_lock:
        if _training_runs == 0:
            _gradients_before = set(registry)
        _training_runs += 1
    try:
        yield
    finally:
        with _gradient_lock:
            _training_runs -= 1
            if _training_runs == 0:
                for name in set(registry) - _gradients_before:
                    if name.startswith("CustomGradient-"):
                        registry.pop(name, None)


def _gradient_registry() -> dict[str, Any]:
    """TensorFlow's registry of gradient functions by op name (private: empty if it moved)."""
    load_tensorflow()
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else {}


# One of TensorFlow's C++ log lines: absl's "I0000 00:00:1796477844.512562    7672 port.cc:153] ",
# TensorFlow's own "2025-01-31 12:00:00.123456: E tensorflow/core/...:52] ", or absl's notice
# that logging is not initialised yet.
_TF_LOG_LINE = re.compile(
    rb"[IWEF]\d{4} [\d:.]+ +\d+ [^\s\]]+:\d+\] "
    rb"|\d{4}-\d\d-\d\d [\d:.]+: [IWEF] [^\s\]]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
)


@contextlib.contextmanager
def _startup_logs_held_back() -> Iterator[None]:
    """Inside this block, what reaches file descriptor 2 is held back in a temporary file.

    On leaving it, everything but TensorFlow's log lines is written back to standard error
    (other threads' messages and Python warnings arrive late, not never); if the block
    raised, all of it is, as it may explain the error.
    """
    saved = None
    if not _show_logs:
        _flush_stderr()
        with contextlib.suppress(OSError):  # no standard error at all (pythonw)
            saved = os.dup(2)
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read()
            if not failed:
                text = _without_tensorflow_logs(text)
            if text:
                with open(2, "wb", closefd=False) as stderr:
                    stderr.write(text)


def _without_tensorflow_logs(text: bytes) -> bytes:
    lines = text.splitlines(keepends=True)
    return b"".join(line for line in lines if not _TF_LOG_LINE.match(line))


def _flush_stderr() -> None:
    # Python's own buffered text belongs on the side of the swap it was written on.
    if sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


def _configure(tf: ModuleType) -> None:
    # Grow GPU memory on demand so napari's own OpenGL canvas is never starved.
    for gpu in tf.config.list_physical_devices("GPU"):
        # Memory growth can only be set before the GPU is first used.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
