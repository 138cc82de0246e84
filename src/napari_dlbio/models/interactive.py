"""Human in the loop: fine-tune a U-Net on painted corrections in bursts of a few seconds.

A :class:`FineTuner` keeps one compiled network, with its optimiser state, between bursts,
so after the first burst (which traces the training step) every second of a burst goes
into training.  A burst trains on the annotated pixels only (the masked loss ignores
annotation 0) and draws a quarter of every batch around the pixels painted since the
previous burst (with every annotation around them as labels), so fresh corrections weigh
more than the scribbles they correct.  It warm-starts from a trained model or, with none,
from scratch on the first scribbles.  After every burst the batch-norm statistics are
recomputed from random crops of the images (a few dozen steps at a high rate leave them
behind the weights, which flipped whole held-out masks to one class).
"""

from __future__ import annotations

import time
from collections.abc import Generator

import numpy as np

from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import ModelFolderError
from napari_dlbio.core.events import (
    BatchEnded,
    CancelToken,
    Event,
    Finished,
    RunState,
    TrainingStarted,
)
from napari_dlbio.core.labels import check_annotation
from napari_dlbio.core.patches import PatchSampler, random_crops
from napari_dlbio.core.segmentation_config import SegmentationConfig
from napari_dlbio.models._tf import device_description, load_keras, releasing_traced_gradients
from napari_dlbio.models.batch_norm import recalibrate_batch_norm
from napari_dlbio.models.losses import MaskedSegmentationLoss
from napari_dlbio.models.segmentation import fine_tuning_config
from napari_dlbio.models.segmentation_data import prepare_images, segmentation_augmenter
from napari_dlbio.models.store import ModelFolder
from napari_dlbio.models.training import build_optimizer
from napari_dlbio.models.unet import build_unet

keras = load_keras()

#: Default length of a burst on a CPU: long enough for a few dozen steps, short enough
#: that painting, training and looking at the new mask feel like one loop.
DEFAULT_BURST_SECONDS = 10.0
#: Bursts have no warm-up and no decay: from a trained model, a lower rate than full
#: training keeps them steady; from scratch, a higher one learns within the first bursts.
BURST_LEARNING_RATE = 1e-3
SCRATCH_LEARNING_RATE = 1e-2
#: Sparse corrections fill little of a large patch; many small patches centred on them
#: put more annotated pixels into every step for the same computation.
BURST_PATCH_SIZE = 128
BURST_BATCH_SIZE = 16
#: Share of every batch centred on the corrections painted since the previous burst: fresh
#: corrections weigh more without crowding out the rest.  On the simulated ISBI annotator
#: neither half nor none measured steadier (two runs of one setting differ by as much as
#: settings do: held-out membrane IoU of late rounds 0.34-0.51).
RECENT_SHARE = 0.25
#: Batches of random crops that recompute the batch-norm statistics after a burst.
RECALIBRATION_BATCHES = 4


class FineTuner:
    """A U-Net that learns from corrections in short bursts.

    Parameters
    ----------
    config
        Training settings (patch and batch size, learning rate, augmentation).  With a
        ``model``, its network, classes and normalisation are kept (see
        :func:`~napari_dlbio.models.segmentation.fine_tuning_config`).
    model
        The model to start from; ``None`` starts from scratch (with ``config``'s network:
        :meth:`SegmentationConfig.interactive` is made for this).
    learning_rate
        Of the bursts; default :data:`BURST_LEARNING_RATE` from a model,
        :data:`SCRATCH_LEARNING_RATE` from scratch.
    patch_size, batch_size
        Settings of the bursts, which replace those of ``config``.
    """

    def __init__(
        self,
        config: SegmentationConfig,
        model: ModelFolder | None = None,
        *,
        learning_rate: float | None = None,
        patch_size: int = BURST_PATCH_SIZE,
        batch_size: int = BURST_BATCH_SIZE,
    ) -> None:
        if learning_rate is None:
            learning_rate = SCRATCH_LEARNING_RATE if model is None else BURST_LEARNING_RATE
        config = config if model is None else fine_tuning_config(config, model)
        if config.packaged_network:
            raise ModelFolderError(
                "Correct & fine-tune trains napari-dlbio's U-Nets; this model's network comes "
                "from a bioimage.io package. Fine-tune it with Train instead."
            )
        self.config = config.replace(
            learning_rate=learning_rate, patch_size=patch_size, batch_size=batch_size
        )
        self._network = build_unet(
            self.config.network, self.config.input_channels, self.config.n_classes
        )
        if model is not None:
            self._network.set_weights(model.model.get_weights())
        self._network.compile(
            optimizer=keras.optimizers.Adam(self.config.learning_rate),
            loss=MaskedSegmentationLoss(self.config.n_classes, self.config.loss),
        )
        build_optimizer(self._network)
        self._normalised: tuple[np.ndarray, np.ndarray] | None = None
        self._bursts = 0

    @property
    def model(self) -> ModelFolder:
        """The network as an (unsaved) model folder.

        It is the live network, not a copy: the next burst changes it (copying would make
        every burst trace a new prediction graph, seconds on a CPU).
        """
        return ModelFolder(self._network, Task.SEGMENTATION, self.config)

    def iter_burst(
        self,
        images: np.ndarray,
        annotations: np.ndarray,
        *,
        seconds: float = DEFAULT_BURST_SECONDS,
        steps: int | None = None,
        recent: np.ndarray | None = None,
        cancel: CancelToken | None = None,
    ) -> Generator[Event, None, ModelFolder]:
        """Train on the annotated pixels for ``seconds`` (or ``steps``); return the model.

        Parameters
        ----------
        images
            (Z, Y, X[, C]) or (Y, X[, C]) images of any real dtype.
        annotations
            Annotation of the same (Z, Y, X): 0 = not annotated, 1 = background, k + 1 =
            class k.
        seconds
            Length of the burst (the first burst also traces the training step).
        steps
            If given, the burst also ends after this many steps, whichever comes first
            (a burst of ``seconds=math.inf`` then trains the same on any machine).
        recent
            Boolean (Z, Y, X) mask of the pixels painted since the last burst;
            :data:`RECENT_SHARE` of every batch is centred on them.  ``None`` or empty:
            all annotations alike.
        cancel
            Ends the burst after the current step.

        Yields
        ------
        Event
            ``TrainingStarted``, ``BatchEnded`` after every step, then ``Finished``.

        Raises
        ------
        InputDataError
            For images and annotations that do not match or hold no annotated pixel, or
            images whose channels do not fit the model (see
            :func:`~napari_dlbio.core.normalisation.fit_channels`).
        """
        config = self.config
        annotations = np.asarray(annotations)
        if annotations.ndim == 2:
            annotations = annotations[np.newaxis]
        normalised = self._prepare(images)
        check_annotation(annotations, config.n_classes, normalised.shape)
        annotations = annotations.astype(np.uint8, copy=False)
        everything = self._sampler(normalised, annotations)
        fresh = None
        if recent is not None:
            recent = np.reshape(recent, annotations.shape).astype(bool) & (annotations > 0)
            if recent.any():
                fresh = self._sampler(normalised, annotations, centres=recent)
        self._bursts += 1
        yield TrainingStarted(1, 0, device_description(), time_budget_s=seconds)
        deadline = time.perf_counter() + seconds
        step = 0
        while time.perf_counter() < deadline and (steps is None or step < steps):
            if cancel is not None and cancel.cancelled:
                self._recalibrate(normalised)
                yield Finished(RunState.CANCELLED)
                return self.model
            x, y = _mixed_batch(everything, fresh, config.batch_size)
            with releasing_traced_gradients():  # the first step traces
                loss = float(self._network.train_on_batch(x, y))
            step += 1
            yield BatchEnded(1, step, 0, loss)
        self._recalibrate(normalised)
        yield Finished(RunState.DONE)
        return self.model

    def _prepare(self, images: np.ndarray) -> np.ndarray:
        """Normalised (Z, Y, X, C) images, kept while the same array object comes again
        (an array changed in place is not noticed: give a new array for new images)."""
        if self._normalised is None or self._normalised[0] is not images:
            self._normalised = (images, prepare_images(images, self.config))
        return self._normalised[1]

    def _recalibrate(self, images: np.ndarray) -> None:
        """Batch-norm statistics of the current weights, from crops anywhere in ``images``."""
        rng = np.random.default_rng(self.config.seed + self._bursts)
        size, count = self.config.patch_size, self.config.batch_size
        batches = (random_crops(images, size, count, rng) for _ in range(RECALIBRATION_BATCHES))
        recalibrate_batch_norm(self._network, batches)

    def _sampler(
        self, images: np.ndarray, annotations: np.ndarray, centres: np.ndarray | None = None
    ) -> PatchSampler:
        config = self.config
        seed = config.seed + self._bursts
        return PatchSampler(
            images,
            annotations,
            config.patch_size,
            seed=seed,
            augment=segmentation_augmenter(config),
            centres=centres,
        )


def _mixed_batch(
    everything: PatchSampler, fresh: PatchSampler | None, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A batch around all annotations, :data:`RECENT_SHARE` of it around fresh corrections."""
    n_fresh = 0 if fresh is None else min(round(batch_size * RECENT_SHARE), batch_size - 1)
    x, y = everything.sample_batch(batch_size - n_fresh)
    if n_fresh == 0:
        return x, y
    fresh_x, fresh_y = fresh.sample_batch(n_fresh)
    return np.concatenate([x, fresh_x]), np.concatenate([y, fresh_y])
