"""The Correct & fine-tune widget's burst job and its numpy helpers (no Qt).

A burst trains the widget's :class:`~napari_dlbio.models.interactive.FineTuner` for a few
seconds and re-predicts the slice the user looks at; :class:`TunerSlot` keeps what lives on
between bursts, and a helper finds where the model is least sure.  Accepting and scoring a
prediction against the annotation is in :mod:`._agreement`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels, Layer

from napari_dlbio._layers import (
    ROLE_KEY,
    UNCERTAINTY,
    Placement,
    prediction_layers,
)
from napari_dlbio._widgets._agreement import aligned
from napari_dlbio._widgets._common import annotation_class_names, image_data, placement_of
from napari_dlbio._widgets._jobs import Job
from napari_dlbio._widgets._training_job import ModelSource
from napari_dlbio.core.builtin_models import BuiltinModel
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken
from napari_dlbio.core.labels import (
    check_annotation,
    with_reviewed_slices,
)
from napari_dlbio.core.segmentation_config import SegmentationConfig
from napari_dlbio.core.uncertainty import most_uncertain_region

if TYPE_CHECKING:
    from napari_dlbio.models.interactive import FineTuner
    from napari_dlbio.models.store import ModelFolder


@dataclass(frozen=True)
class BurstRequest:
    """What one burst needs.

    Attributes
    ----------
    images
        The image layer's data, not copied (the tuner keeps it normalised between bursts).
    annotation
        A snapshot of the annotation (0 = not annotated, k + 1 = class k).
    recent
        Pixels painted since the last burst, or ``None``.
    reviewed
        Slice -> the predicted mask the user corrected there; the burst takes the
        unpainted pixels of these slices as right (see
        :func:`~napari_dlbio.core.labels.with_reviewed_slices`).
    seconds
        Length of the burst.
    config
        Settings of a new tuner: a new network's, or the training settings for ``start``
        (``None``: the start model's own).
    start
        The model a new tuner starts from: the session's, or a built-in model loaded by
        the burst; ``ModelSource()`` starts from scratch.
    slice_index
        The slice to re-predict; ``None`` for a 2D image.
    placement, image_name
        Where the image lies and its name, for the result layers.
    min_region_pixels
        Smallest region the re-predicted mask keeps, from now on the tuner's setting.
    """

    images: Any
    annotation: np.ndarray
    recent: np.ndarray | None
    reviewed: dict[int, np.ndarray]
    seconds: float
    config: SegmentationConfig | None
    start: ModelSource
    slice_index: int | None
    placement: Placement
    image_name: str
    min_region_pixels: int = 0


@dataclass(frozen=True)
class Published:
    """A burst's model for the session: how it came to be, and the row it replaces."""

    model: ModelFolder
    how: str
    replacing: ModelFolder | None


@dataclass
class TunerSlot:
    """What lives on between bursts: the tuner (a job fills it once the network is built),
    the model it stands for, the annotation as it was at the last burst and the predicted
    masks of the slices the user corrected."""

    tuner: FineTuner | None = None
    tuned_from: ModelFolder | None = None
    baseline: tuple[int, np.ndarray] | None = None
    images: Any = None  # the tuner caches images by id(): keep that id taken
    reviewed: dict[int, np.ndarray] = field(default_factory=dict)
    bursts: int = 0  # of the tuner that published last
    _last_published: ModelFolder | None = None

    def request(
        self,
        image: Image,
        annotation: Labels,
        model: ModelFolder | None,
        config: SegmentationConfig | None,
        seconds: float,
        slice_index: int | None,
        prediction: Labels | None = None,
        builtin: BuiltinModel | None = None,
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
        if self.tuner is not None and model is not None and model is not self.tuned_from:
            self.tuner = None  # another model was trained or loaded: start from it
        start = ModelSource(model=model)
        if self.tuner is not None:
            config, start = self.tuner.config, ModelSource()
            n_classes = config.n_classes
        elif model is not None:
            config = config or model.config
            n_classes = model.config.n_classes
        elif builtin is not None:
            start = ModelSource(folder=builtin.reference)
            n_classes = len(builtin.classes)
        else:
            names = annotation_class_names(annotation) or default_names(snapshot)
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
        self.images = images
        where, name = placement_of(image), image.name
        return BurstRequest(
            images,
            snapshot,
            recent,
            {} if prediction is None else dict(self.reviewed),
            seconds,
            config,
            start,
            slice_index,
            where,
            name,
        )

    def restart(self) -> None:
        """Drop the tuner: the next burst starts a new one from the chosen start."""
        self.tuner = None
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
        self.tuned_from = None if self.tuner is None else self.tuner.model
        if self.tuned_from is None:
            return None
        # One row per tuner in the session's models: its later bursts replace the row.
        same_tuner = previous is not None and previous is self._last_published
        replacing = self._last_published if same_tuner else None
        self.bursts = self.bursts + 1 if same_tuner else 1
        self._last_published = self.tuned_from
        how = f"fine-tuned on corrections, {self.bursts} burst(s)"
        return Published(self.tuned_from, how, replacing)


def fine_tune_burst(request: BurstRequest, slot: TunerSlot, *, cancel: CancelToken) -> Job:
    """Train for a burst, then re-predict the slice; return its layers (none if stopped)."""
    from napari_dlbio.models.interactive import FineTuner
    from napari_dlbio.models.segmentation import iter_predict_segmentation

    if slot.tuner is None:
        start = yield from request.start.load(Task.SEGMENTATION)
        config = request.config or start.config
        slot.tuner = FineTuner(config, start)
    tuner = slot.tuner
    tuner.config = tuner.config.replace(min_region_pixels=request.min_region_pixels)
    model = yield from tuner.iter_burst(
        request.images,
        with_reviewed_slices(request.annotation, request.reviewed),
        seconds=request.seconds,
        recent=request.recent,
        cancel=cancel,
    )
    if cancel.cancelled:
        return []
    index = request.slice_index
    images = request.images if index is None else request.images[index : index + 1]
    prediction = yield from iter_predict_segmentation(model, np.asarray(images), cancel=cancel)
    if prediction is None:
        return []
    names = list(tuner.config.class_names)
    where, name = request.placement, request.image_name
    data = prediction_layers(prediction.mask, prediction.probabilities, names, where, name, index)
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


def default_names(annotation: np.ndarray) -> list[str]:
    """Class names for an annotation without any: background and one per painted label."""
    classes = max(int(annotation.max(initial=0)), 2)
    return ["background", *(f"class {k}" for k in range(1, classes))]
