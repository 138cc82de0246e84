"""The Correct & fine-tune widget's burst job and its numpy helpers (no Qt).

A burst has the engine train its fine-tuner (:class:`~napari_dlbio.engine.protocol.Burst`)
for a few seconds and re-predict the slice the user looks at; :class:`TunerSlot` keeps what
lives on between bursts here (the tuner's id, its model's handle), and a helper finds where
the model is least sure.  Accepting and scoring a
prediction against the annotation is in :mod:`._agreement`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from napari.layers import Image, Labels, Layer

from napari_dlbio._layers import (
    ROLE_KEY,
    UNCERTAINTY,
    Placement,
    prediction_layers,
)
from napari_dlbio._widgets._agreement import aligned
from napari_dlbio._widgets._common import (
    annotation_class_names,
    default_class_names,
    image_data,
    placement_of,
)
from napari_dlbio._widgets._engine import SessionEngine
from napari_dlbio._widgets._jobs import Job
from napari_dlbio.core.builtin_models import BuiltinModel
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError, ModelFolderError
from napari_dlbio.core.events import CancelToken
from napari_dlbio.core.labels import (
    check_annotation,
    with_reviewed_slices,
)
from napari_dlbio.core.segmentation_config import SegmentationConfig
from napari_dlbio.core.uncertainty import most_uncertain_region
from napari_dlbio.engine.protocol import Burst, EngineDied, ModelHandle, Tuned


@dataclass(frozen=True)
class BurstRequest:
    """What one burst needs: the engine's request, and where its layers go.

    Attributes
    ----------
    burst
        The request; its annotation is the snapshot taken now with the reviewed slices'
        unpainted pixels taken as right (see
        :func:`~napari_dlbio.core.labels.with_reviewed_slices`).
    annotation
        The snapshot of the annotation (0 = not annotated, k + 1 = class k).
    reviewed
        Slice -> the predicted mask the user corrected there, whose unpainted pixels the
        burst takes as right.
    placement, image_name
        Where the image lies and its name, for the result layers.
    """

    burst: Burst
    annotation: np.ndarray
    reviewed: dict[int, np.ndarray]
    placement: Placement
    image_name: str

    @property
    def seconds(self) -> float:
        """Length of the burst."""
        return self.burst.seconds


@dataclass(frozen=True)
class Published:
    """A burst's model for the session: how it came to be, and the row it replaces."""

    model: ModelHandle
    how: str
    replacing: ModelHandle | None


@dataclass
class TunerSlot:
    """What lives on between bursts: the engine's tuner (a burst fills its id), the model
    it stands for, the annotation as it was at the last burst and the predicted masks of
    the slices the user corrected."""

    tuner: str | None = None
    tuned_from: ModelHandle | None = None
    tuned: ModelHandle | None = None  # the tuner's model after its last burst
    baseline: tuple[int, np.ndarray] | None = None
    reviewed: dict[int, np.ndarray] = field(default_factory=dict)
    bursts: int = 0  # of the tuner that published last
    _last_published: ModelHandle | None = None

    def request(
        self,
        image: Image,
        annotation: Labels,
        model: ModelHandle | None,
        config: SegmentationConfig | None,
        seconds: float,
        slice_index: int | None,
        prediction: Labels | None = None,
        builtin: BuiltinModel | None = None,
        min_region_pixels: int = 0,
    ) -> BurstRequest:
        """The next burst's request; ``model`` is the session's current model.

        Without a tuner, a new one starts from ``model`` (a segmentation model), else from
        ``builtin``, else from scratch with the annotation's classes; ``config`` (or the
        start model's, or the default settings) gives the training settings.  A tuner made
        for another model is dropped.
        Every slice painted since the last burst is recorded as reviewed, with the mask of
        ``prediction`` the user saw there, and the burst learns the unpainted pixels of all
        reviewed slices; ``None`` (the user's choice) records and uses none.
        """
        # A snapshot: the user goes on painting while the network trains.
        snapshot = np.array(annotation.data, dtype=np.uint8, copy=True)
        if model is not None and model.task is not Task.SEGMENTATION:
            model = None
        if self.tuner is not None and model is not None and model != self.tuned_from:
            self.tuner = None  # another model was trained or loaded: start from it
        start = None if model is None else model.source
        if self.tuner is not None and self.tuned is not None:
            config, start = None, None
            n_classes = self.tuned.config.n_classes
        elif model is not None:
            config = config or model.config
            n_classes = model.config.n_classes
        elif builtin is not None:
            start = builtin.reference
            n_classes = len(builtin.classes)
        else:
            names = annotation_class_names(annotation) or default_class_names(snapshot)
            config = (config or SegmentationConfig.interactive()).replace(
                class_names=tuple(names), input_channels=3 if image.rgb else 1
            )
            n_classes = config.n_classes
        if self.tuner is None:
            self.tuned_from = model
        images = image_data(image)
        check_annotation(snapshot, n_classes, tuple(images.shape))
        recent = None
        if self.baseline is not None and self.baseline[0] == id(annotation):
            before = self.baseline[1]
            recent = snapshot != before if before.shape == snapshot.shape else None
        elif self.baseline is not None:
            self.reviewed = {}  # another annotation layer: its slices were not reviewed
        if recent is not None and prediction is not None:
            self._review(recent, prediction, annotation)
        reviewed = {} if prediction is None else self.reviewed
        burst = Burst(
            tuner=self.tuner,
            start=start,
            config=config,
            images=np.asarray(images),
            annotation=with_reviewed_slices(snapshot, reviewed),
            recent=recent,
            seconds=seconds,
            slice_index=slice_index,
            min_region_pixels=min_region_pixels,
        )
        return BurstRequest(burst, snapshot, dict(reviewed), placement_of(image), image.name)

    def restart(self) -> None:
        """Drop the tuner: the next burst starts a new one from the chosen start."""
        self.tuner = None
        self.tuned = None
        self.tuned_from = None

    def _review(self, recent: np.ndarray, prediction: Labels, annotation: Labels) -> None:
        """Keep the predicted mask of every slice with fresh paint that ``prediction`` covers."""
        try:
            first, mask = aligned(prediction, annotation)
        except InputDataError:
            return  # a prediction of another image: nothing was reviewed against it
        painted = recent.reshape(-1, *recent.shape[-2:]).any(axis=(1, 2))
        for z in np.flatnonzero(painted):
            if 0 <= z - first < len(mask):
                self.reviewed[int(z)] = np.array(mask[z - first], dtype=np.uint8, copy=True)

    def published(self, annotation: Labels, snapshot: np.ndarray) -> Published | None:
        """After a finished burst: the model to share; ``snapshot`` becomes the baseline."""
        self.baseline = (id(annotation), snapshot)
        previous = self.tuned_from
        self.tuned_from = None if self.tuner is None else self.tuned
        if self.tuned_from is None:
            return None
        # One row per tuner in the session's models: its later bursts replace the row.
        same_tuner = previous is not None and previous == self._last_published
        replacing = self._last_published if same_tuner else None
        self.bursts = self.bursts + 1 if same_tuner else 1
        self._last_published = self.tuned_from
        how = f"fine-tuned on corrections, {self.bursts} burst(s)"
        return Published(self.tuned_from, how, replacing)


def fine_tune_burst(
    engine: SessionEngine, request: BurstRequest, slot: TunerSlot, *, cancel: CancelToken
) -> Job:
    """Have the engine train for a burst and re-predict the slice; return the slice's
    layers (none if stopped)."""
    try:
        tuned: Tuned | None = yield from engine.run(request.burst, cancel=cancel)
    except (EngineDied, ModelFolderError):
        if request.burst.tuner is not None:
            slot.restart()  # its network died with an engine: the next burst starts anew
        raise
    if tuned is None:
        return []
    slot.tuner, slot.tuned = tuned.tuner, ModelHandle.of(tuned.model)
    names = list(slot.tuned.config.class_names)
    where, name, index = request.placement, request.image_name, request.burst.slice_index
    data = prediction_layers(tuned.mask, tuned.probabilities, names, where, name, index)
    # Built here, off the GUI thread, like the Predict widget's layers.
    return [Layer.create(array, dict(meta), kind) for array, meta, kind in data]


def most_uncertain_point(
    layers: Iterable[Layer], source: str | None, window: int
) -> tuple[float, ...] | None:
    """World coordinates of the centre of the most uncertain ``window``-pixel square of
    the uncertainty map predicted for ``source`` (or any map); ``None`` without maps."""
    maps = [layer for layer in layers if layer.metadata.get(ROLE_KEY) == UNCERTAINTY]
    mine = [layer for layer in maps if layer.metadata.get("source") == source]
    if not maps:
        return None
    uncertainty = (mine or maps)[0]
    z, y, x = most_uncertain_region(np.asarray(uncertainty.data), window)
    index = (z, y, x) if uncertainty.ndim == 3 else (y, x)
    pairs = zip(uncertainty.translate, uncertainty.scale, index, strict=True)
    return tuple(float(t + s * i) for t, s, i in pairs)
