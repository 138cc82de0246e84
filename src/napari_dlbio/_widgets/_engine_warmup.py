"""Import the deep-learning engine (TensorFlow and the model code) ahead of the first job.

A process-wide workaround (DESIGN.md, style rule 8), measured with TensorFlow 2.21 and
napari 0.9 on a 2-core CPU: the import holds the GIL, and TensorFlow's objects make full
garbage collections slow; both froze napari's window in the middle of a first job.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading

_log = logging.getLogger(__name__)

# Modules a job imports first thing; importing them loads TensorFlow.
ENGINE_MODULES = (
    "napari_dlbio.models.segmentation",
    "napari_dlbio.models.classification",
    "napari_dlbio.models.gradcam",
)


_engine_ready = threading.Event()


_warm_up_lock = threading.Lock()


_warm_up_started = False


def warm_up_engine() -> threading.Event:
    """Import the model code (and TensorFlow) in a background thread, once per session.

    Loading TensorFlow's libraries holds Python's GIL for up to a second, which freezes the
    window.  Started when a Train or Predict widget opens, that pause comes with opening
    the widget instead of in the middle of the first job.  Returns an event that is set
    when the import has finished (or failed: the job that needs it reports the error).
    """
    global _warm_up_started
    with _warm_up_lock:
        if not _warm_up_started:
            _warm_up_started = True
            threading.Thread(target=_import_engine, name="dlbio-warm-up", daemon=True).start()
    return _engine_ready


def _import_engine() -> None:
    collecting = gc.isenabled()
    gc.disable()
    try:
        for name in ENGINE_MODULES:
            importlib.import_module(name)
    except Exception:  # noqa: BLE001  (the first job imports again and reports it)
        _log.debug("warming up the engine failed", exc_info=True)
    finally:
        # napari, Qt, TensorFlow and Keras are some 300,000 long-lived objects, and a full
        # garbage collection scanning them holds the GIL for a quarter of a second (measured
        # in the middle of tracing a training step, a freeze of the window).  Frozen, they
        # are still freed when unreferenced; collections only scan newer objects.
        gc.freeze()
        if collecting:
            gc.enable()
        _engine_ready.set()
