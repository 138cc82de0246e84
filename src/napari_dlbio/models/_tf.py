"""The one place TensorFlow is imported.

On Linux with Mesa OpenGL (software GL under Xvfb, Intel and AMD drivers), importing
TensorFlow after napari has created its OpenGL canvas crashes the process: Mesa has already
loaded its own LLVM and TensorFlow's bundled LLVM static initialisers bind to Mesa's symbols.
Loading TensorFlow's shared objects with ``RTLD_DEEPBIND`` makes them resolve their own
symbols first, which avoids the collision (see "Known hazard" in DESIGN.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from types import ModuleType
from typing import Any

_lock = threading.Lock()
_configured = False


def load_tensorflow() -> ModuleType:
    """Import TensorFlow safely (once), configure it for sharing a machine, and return it."""
    global _configured
    with _lock:
        if "tensorflow" in sys.modules and _configured:
            return sys.modules["tensorflow"]
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        tf = _import_with_deepbind()
        if not _configured:
            _configure(tf)
            _configured = True
        return tf


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


def _import_with_deepbind() -> ModuleType:
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if deepbind is None or "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    old_flags = sys.getdlopenflags()
    sys.setdlopenflags(old_flags | deepbind)
    try:
        import keras  # noqa: F401  (Keras' own extension modules load under the same flags)
        import tensorflow as tf
    finally:
        sys.setdlopenflags(old_flags)
    return tf


def _configure(tf: ModuleType) -> None:
    # Grow GPU memory on demand so napari's own OpenGL canvas is never starved.
    for gpu in tf.config.list_physical_devices("GPU"):
        # Memory growth can only be set before the GPU is first used.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
