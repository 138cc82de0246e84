"""The whole-stack prediction of a lazy volume: slice by slice into zarr stores on disk.

A job as in :mod:`._jobs` (arrays and configs in, typed events out, no Qt): a volume read
lazily (a dask array) is fed to the engine one slice at a time (its
:class:`~napari_dlbio.engine.protocol.PredictSlices` request), and each slice's mask and
probabilities are written to their stores as soon as it is done, so neither the volume nor
its result is ever whole in memory.  Stopped or failed, no store is left behind
(:func:`~napari_dlbio.core.zarr_output.open_zarr_output` removes a partial one); done, the
stores are opened again, lazily, as layers placed on the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Layer

from napari_dlbio._layers import Placement, prediction_layers
from napari_dlbio._widgets._engine import SessionEngine
from napari_dlbio._widgets._jobs import Job
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken, Finished, RunState, SlicePredicted
from napari_dlbio.core.masks import mask_from_probabilities
from napari_dlbio.engine.protocol import ArrayFeed, LoadModel, ModelHandle, PredictSlices

#: Metadata key of a result layer read from a store: the store's path.
STORE_KEY = "store"
#: Why a whole volume on disk has no objects and no scores, and how to get them.
VOLUME_NOTE = (
    "Objects and scores are not computed for a whole volume on disk: predict a slice range "
    "for them, or run `dlbio predict --instances` on the volume."
)


@dataclass(frozen=True)
class VolumeOutput:
    """The zarr stores a lazy volume's whole-stack prediction is written to.

    Attributes
    ----------
    mask
        The mask store (uint8 classes).
    probabilities
        The class probabilities' store; None when they are not kept.
    units
        The units of the Z, Y and X axes written into the stores; None when unknown.
    """

    mask: Path
    probabilities: Path | None
    units: tuple[str, ...] | None = None

    def paths(self) -> list[Path]:
        """The stores to write, the mask first."""
        return [path for path in (self.mask, self.probabilities) if path is not None]


@dataclass(frozen=True)
class VolumeOutcome:
    """A lazy volume's prediction: its model, the stores written and their lazy layers."""

    model: ModelHandle
    output: VolumeOutput
    layers: list[Layer]

    def summary(self) -> str:
        """What was written, for the status line."""
        written = " and ".join(str(path) for path in self.output.paths())
        return f"Done: wrote {written} and opened them. {VOLUME_NOTE}"


class _Stopped(Exception):
    """The prediction was cancelled: leaving the stores' block this way removes them."""


def predict_volume(
    engine: SessionEngine,
    model: str,
    images: Any,
    output: VolumeOutput,
    placement: Placement,
    image_name: str,
    *,
    cancel: CancelToken,
) -> Job:
    """Predict every slice of a lazy (Z, Y, X[, C]) volume into the ``output`` stores.

    Parameters
    ----------
    engine
        The session's engine, which predicts the slices fed to it.
    model
        The segmentation model: a source or an engine id.
    images
        The volume, read one slice at a time (a dask array, or any array-like).
    output
        The stores to create (neither may exist).
    placement
        The image's scale and translate: the stores' scale, and the layers' placement.
    image_name
        The image layer's name; the result layers are named after it.

    Returns
    -------
    VolumeOutcome or None
        None when cancelled (no store is kept).
    """
    from napari_dlbio.core.zarr_output import open_zarr_output

    handle = ModelHandle.of((yield from engine.run(LoadModel(model), cancel=cancel)))
    if handle.task is not Task.SEGMENTATION:
        raise InputDataError("A whole volume is predicted with a segmentation model.")
    names = list(handle.config.class_names)
    boundary = list(handle.config.boundary_classes)
    min_pixels = handle.config.min_region_pixels
    shape = tuple(int(n) for n in images.shape[:3])
    where = {"shape": shape, "scale": placement.for_slices().scale, "units": output.units}
    origin = {"class_names": names, "source": image_name}
    try:
        with ExitStack() as stores:
            masks = stores.enter_context(
                open_zarr_output(
                    output.mask,
                    dtype=np.uint8,
                    metadata={"layer_type": "labels", "boundary_classes": boundary, **origin},
                    **where,
                )
            )
            probabilities = None
            if output.probabilities is not None:
                probabilities = stores.enter_context(
                    open_zarr_output(
                        output.probabilities,
                        dtype=np.float32,
                        channels=len(names),
                        channel_names=names,
                        metadata=origin,
                        **where,
                    )
                )
            stack = (*shape, int(images.shape[3]) if len(images.shape) == 4 else 1)
            feed = ArrayFeed(stack, np.dtype(images.dtype).str)
            planes = (np.asarray(images[z]).reshape(stack[1:]) for z in range(shape[0]))
            request = PredictSlices(handle.id, feed)
            for event in engine.run(request, feed=planes, cancel=cancel):
                if isinstance(event, SlicePredicted):
                    mask = mask_from_probabilities(event.probabilities, min_pixels)
                    masks.write(event.index, mask)
                    if probabilities is not None:
                        probabilities.write(event.index, event.probabilities)
                elif isinstance(event, Finished):
                    # Stop may reach the engine after its last slice: stopped all the same.
                    if event.state is not RunState.DONE or cancel.cancelled:
                        raise _Stopped
                else:
                    yield event
    except _Stopped:
        yield Finished(RunState.CANCELLED)
        return None
    # Finished once the stores are complete and in place.
    yield Finished(RunState.DONE)
    layers = stored_layers(output, names, boundary, placement, image_name)
    return VolumeOutcome(handle, output, layers)


def stored_layers(
    output: VolumeOutput,
    class_names: Sequence[str],
    boundary_classes: Sequence[str],
    placement: Placement,
    image_name: str,
) -> list[Layer]:
    """The mask (and probability) layers of the ``output`` stores, read lazily.

    Built in the job's thread, as :func:`~._jobs.predict_segmentation`'s layers.
    """
    mask = _lazy_level(output.mask)
    probabilities = None if output.probabilities is None else _lazy_level(output.probabilities)
    data = prediction_layers(
        mask, probabilities, class_names, placement, image_name, None, boundary_classes
    )
    layers = []
    for index, (array, meta, kind) in enumerate(data):
        meta["metadata"][STORE_KEY] = str(output.mask if index == 0 else output.probabilities)
        layers.append(Layer.create(array, dict(meta), kind))
    return layers


def _lazy_level(path: Path) -> Any:
    """The full-resolution level of a store as (Z, Y, X[, C]), lazily (dask)."""
    from napari_dlbio.core.zarr_images import open_zarr_image

    return open_zarr_image(path).levels[0]
