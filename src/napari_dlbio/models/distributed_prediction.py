"""Segmentation on a dask.distributed cluster: one task per slice, one model per worker.

The client reads the volume slice after slice and submits each slice as a task; a worker
loads the model the first time it needs it and keeps it for every later slice (and later
runs, while the model folder is unchanged), then predicts the slice tile by tile with
:func:`~napari_dlbio.models.segmentation.iter_predict_slices`, as one process would.  At
most ``window`` slices are in flight and the results are taken in slice order, so memory
does not grow with the volume.

Each slice travels inside its task rather than scattered to one worker: dask then computes
the task again elsewhere when its worker dies (up to ``distributed.scheduler.allowed-failures``
times); a slice that still fails stops the job with :class:`ClusterError`, and no slice after
it is yielded.

Probabilities equal those of one process up to float32 rounding (at most 5.4e-7 on ISBI
2012 crops, TensorFlow 2.21 on CPU), and the masks were equal: one process fills a network
call with tiles of consecutive slices, a worker with tiles of its one slice, and a tile's
result depends in its last bits on the size of the batch it was predicted in.  Slices whose
tiles fill whole batches (four tiles of 512 x 512) came out bit for bit equal.

Nothing here imports TensorFlow until a worker predicts.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections import deque
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from distributed import Client, Future, KilledWorker
from distributed.client import FutureCancelledError

from napari_dlbio.core.builtin_models import is_builtin_reference
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import DlbioError, InputDataError
from napari_dlbio.core.events import (
    CancelToken,
    Event,
    Finished,
    Notice,
    RunState,
    SlicePredicted,
    TileDone,
)
from napari_dlbio.core.normalisation import as_stack

if TYPE_CHECKING:
    from napari_dlbio.models.store import ModelFolder

# How often a wait for a slice looks at the cancel token.
POLL_S = 0.25


class ClusterError(DlbioError, RuntimeError):
    """A dask cluster that cannot be reached, or that could not finish the work."""


def iter_predict_slices_distributed(
    model_source: str | Path,
    images: Any,
    client: Client,
    *,
    cancel: CancelToken | None = None,
    window: int | None = None,
) -> Generator[Event, None, None]:
    """Predict slice after slice on a dask cluster; yield what ``iter_predict_slices`` yields.

    Parameters
    ----------
    model_source
        A segmentation model folder, ``builtin:NAME`` or a bioimage.io package, readable
        by every worker at this path (a relative path is made absolute here).
    images
        (Y, X), (Y, X, C), (Z, Y, X) or (Z, Y, X, C), any real dtype; a memory-mapped file
        or a dask array larger than memory works: one slice is read at a time.
    client
        A client of the cluster that predicts.
    cancel
        Stops at once: slices not yet predicted are cancelled on the cluster.
    window
        Slices in flight at most (default: twice the cluster's worker threads, at least 2).

    Yields
    ------
    Event
        ``Notice`` (where the work runs), ``TileDone(i, n)`` and ``SlicePredicted`` per slice
        in slice order (a "tile" is a whole slice here), then ``Finished`` (``CANCELLED``
        when stopped).

    Raises
    ------
    ClusterError
        When dask gives up on a slice (its workers kept dying, or the cluster dropped it).
    InputDataError
        For empty images, or images the model cannot read (raised by the worker that
        read the first such slice, see
        :func:`~napari_dlbio.models.segmentation.iter_predict_slices`).
    ModelFolderError
        When the workers cannot load the model or it is not a segmentation model.
    """
    source = portable_model_source(model_source)
    stack, _axes = as_stack(images)
    n_slices = stack.shape[0]
    if 0 in stack.shape[:3]:
        raise InputDataError(f"The image is empty (shape {tuple(stack.shape)}).")
    threads = sum(client.nthreads().values())
    window = window or max(2, 2 * threads)
    if threads:
        yield Notice(
            f"Predicting {n_slices} slice(s) on {threads} dask worker thread(s).", routine=True
        )
    else:
        yield Notice(
            "No dask worker has joined the scheduler yet; the slices wait for the first one."
        )
    pending: deque[Future] = deque()
    submitted = 0
    try:
        for index in range(n_slices):
            while submitted < n_slices and len(pending) < window:
                if cancel is not None and cancel.cancelled:
                    yield Finished(RunState.CANCELLED)
                    return
                pending.append(_submit(client, source, np.asarray(stack[submitted])))
                submitted += 1
            probabilities = _slice_result(pending[0], index, cancel)
            if probabilities is None:
                yield Finished(RunState.CANCELLED)
                return
            pending.popleft()
            yield TileDone(index + 1, n_slices)
            yield SlicePredicted(index, n_slices, probabilities)
    finally:
        # Stops the queued slices of a run that was cancelled, failed or abandoned (a
        # closed client has dropped them already).
        if pending and client.status == "running":
            client.cancel(list(pending))
    yield Finished(RunState.DONE)


def portable_model_source(source: str | Path) -> str:
    """``builtin:NAME`` as it is; a path made absolute, as workers may run elsewhere."""
    if is_builtin_reference(source):
        return str(source)
    return str(Path(source).expanduser().resolve())


def predict_slice(source: str, plane: np.ndarray) -> np.ndarray:
    """On a worker: the (Y, X, classes) float32 probabilities of one (Y, X[, C]) slice."""
    from napari_dlbio.models.segmentation import iter_predict_slices

    events = iter_predict_slices(worker_model(source), plane[np.newaxis])
    return next(event.probabilities for event in events if isinstance(event, SlicePredicted))


_model_lock = threading.Lock()


def worker_model(source: str) -> ModelFolder:
    """The model of ``source``, loaded once per process while its folder stays the same.

    A worker with several threads loads it once too: the lock holds the others back.
    """
    with _model_lock:
        return _load_model(source, _folder_stamp(source))


@functools.lru_cache(maxsize=1)
def _load_model(source: str, stamp: tuple[int, int]) -> ModelFolder:
    from napari_dlbio.models.store import load_model_folder

    return load_model_folder(source, Task.SEGMENTATION)


def _folder_stamp(source: str) -> tuple[int, int]:
    """Identity and age of a model folder: saving a new model there gives another stamp."""
    if is_builtin_reference(source):
        return (0, 0)  # shipped with the package, never rewritten
    try:
        status = Path(source).stat()
    except OSError:
        return (0, 0)  # loading it says what is wrong
    return (status.st_ino, status.st_mtime_ns)


def _submit(client: Client, source: str, plane: np.ndarray) -> Future:
    with warnings.catch_warnings():
        # The slice is meant to travel with its task (see the module's docstring); dask
        # warns about any task above 10 MB, e.g. a float32 slice of 2048 x 2048.
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        return client.submit(predict_slice, source, plane, pure=False)


def _slice_result(future: Future, index: int, cancel: CancelToken | None) -> np.ndarray | None:
    """The probabilities of slice ``index``, or None when cancelled while waiting."""
    while cancel is None or not cancel.cancelled:
        try:
            return future.result(timeout=POLL_S)
        except TimeoutError:
            continue
        except KilledWorker as error:
            raise ClusterError(
                f"Slice {index} could not be predicted: every dask worker that tried it died "
                f"({error}). Nothing was written. Workers die most often for lack of "
                "memory: give each more memory, or run fewer workers per node."
            ) from None
        except FutureCancelledError as error:
            raise ClusterError(
                f"The dask cluster dropped slice {index} ({error}); nothing was written. "
                "Check that the scheduler is still running and predict again."
            ) from None
    return None
