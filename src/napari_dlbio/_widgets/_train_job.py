"""The Train widget's job without its widgets: the request and what the run gave.

:func:`train_request` builds the engine's request from the layers and the form: the
annotation is copied (the user may keep painting while the network trains), a lazy stack
is read only on the slices the annotation paints on, and the form's settings, the ticked
boundary classes and the model to start from complete it.  :class:`TrainOutcome` is the
run's result, with how the widget describes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from napari_dlbio._widgets._common import (
    annotation_class_names,
    class_stack_metadata,
    default_class_names,
    painted_slices,
    spatial_shape,
    task_of,
    training_images,
)
from napari_dlbio._widgets._config_form import ConfigForm
from napari_dlbio._widgets._model_choices import NEW_NETWORK, model_source
from napari_dlbio._widgets._session import Session
from napari_dlbio.core.errors import DlbioError
from napari_dlbio.core.events import RunState
from napari_dlbio.core.labels import check_annotation
from napari_dlbio.engine.protocol import ModelHandle, Train, Trained


@dataclass(frozen=True)
class TrainOutcome:
    """What a training run gave: the model's handle, how the run ended (``fit``) and
    the folder the user chose for it (None: kept in the session's scratch folder)."""

    model: ModelHandle
    fit: Trained
    saved: Path | None

    @property
    def stopped(self) -> bool:
        """Whether the user stopped the run (its best weights so far are kept)."""
        return self.fit.state is RunState.CANCELLED

    @property
    def how(self) -> str:
        """How the model came to be, for the session's lists of models."""
        return f"{'stopped' if self.stopped else 'trained'}, best epoch {self.fit.best_epoch}"

    def summary(self) -> str:
        """How the run ended and where its model is, for the status line."""
        fit = self.fit
        where = f"saved to {self.saved}" if self.saved else "in memory; Export saves it"
        return (
            f"{'Stopped' if self.stopped else 'Done'} after {fit.seconds:.0f} s, "
            f"{fit.stop_reason.value}; kept the weights of epoch {fit.best_epoch} ({where})."
        )


def train_request(
    image: Image | None,
    annotation: Labels | None,
    form: ConfigForm,
    session: Session,
    *,
    boundary_classes: tuple[str, ...],
    start: str,
    start_folder: str,
    save_to: str,
) -> Train:
    """The request training on ``image``: a leaf stack's classes, or ``annotation``.

    Parameters
    ----------
    image, annotation
        The chosen layers (the annotation is not used for a leaf stack).
    form
        The settings form of the image's task.
    session
        The viewer's session: its current model, its engine's scratch folder.
    boundary_classes
        The ticked classes that outline objects; none ticked leaves a fine-tuned model its
        own roles.
    start, start_folder
        The "Start from" choice and the text of its folder field.
    save_to
        The folder the user chose for the model; empty: a new one in the scratch folder.

    Raises
    ------
    DlbioError
        When a layer is missing, the annotation does not fit the image or the model to
        start from cannot be found.
    """
    if image is None:
        raise DlbioError("open an image (or a sample) first.")
    task = task_of(image)
    channels = 3 if image.rgb else 1
    classes = class_stack_metadata(image)
    roles: dict[str, Any] = {}
    slices = None
    if classes is not None:
        names, targets = classes
    else:
        if annotation is None:
            raise DlbioError("create an annotation layer (Data & annotation) and paint on it.")
        # A snapshot: the user may keep painting while the network trains.
        targets = np.array(annotation.data, dtype=np.uint8, copy=True)
        names = annotation_class_names(annotation) or default_class_names(targets)
        check_annotation(targets, len(names), spatial_shape(image) + (channels,) * image.rgb)
        slices = painted_slices(image, targets)
        targets = targets if slices is None else targets[slices]
        # A fine-tuned model keeps its own roles unless the user ticks some.
        roles = {"boundary_classes": boundary_classes} if boundary_classes else {}
    fixed = {"class_names": tuple(names), "input_channels": channels}
    return Train(
        task=task,
        images=training_images(image, slices),
        targets=np.asarray(targets),
        config=form.config(**fixed, **roles),
        save_to=str(
            Path(save_to).expanduser().resolve() if save_to else session.engine.scratch_folder()
        ),
        training={**form.values(training_only=True), **roles},
        start=None if start == NEW_NETWORK else model_source(start, start_folder, session, task),
    )
