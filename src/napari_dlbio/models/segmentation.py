"""The segmentation engine: train or fine-tune a U-Net, predict masks tile by tile, evaluate.

Training and prediction are generators of typed events (see
:mod:`napari_dlbio.core.events`) that return their result last; :func:`train_segmentation`
and :func:`predict_segmentation` run them to the end.  Prediction cuts every slice into
overlapping tiles, predicts them in batches with one compiled step that is reused across
calls, and blends the tiles with smooth weights, so any image size and any number of slices
work and tile borders leave no trace.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.bioimage_processing import StepKind, output_probabilities
from napari_dlbio.core.builtin_models import model_label
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError, ModelFolderError
from napari_dlbio.core.events import (
    CancelToken,
    Event,
    Finished,
    Notice,
    RunState,
    SlicePredicted,
    TileDone,
    run_to_end,
)
from napari_dlbio.core.io import physical_memory_bytes
from napari_dlbio.core.labels import check_annotation_values, classes_from_annotation
from napari_dlbio.core.masks import mask_from_probabilities
from napari_dlbio.core.metrics import segmentation_report
from napari_dlbio.core.normalisation import check_finite, fit_channels, normalise_input
from napari_dlbio.core.patches import class_pixel_counts
from napari_dlbio.core.segmentation_config import SegmentationConfig
from napari_dlbio.core.tiling import (
    Stitcher,
    blending_window,
    pad_to_multiple,
    padding_to_multiple,
    tile_grid,
)
from napari_dlbio.models._tf import load_keras, load_tensorflow
from napari_dlbio.models.distribute import choose_strategy, worker_index
from napari_dlbio.models.losses import MaskedIoU, MaskedSegmentationLoss, class_probabilities
from napari_dlbio.models.multi_worker import WorkerAgreement, spans_workers
from napari_dlbio.models.segmentation_data import (
    TrainingData,
    as_image_stack,
    prepare_training_data,
    training_batches,
    training_dataset,
    validation_dataset,
)
from napari_dlbio.models.store import ModelFolder
from napari_dlbio.models.training import Clock, CosineDecay, FitResult, iter_fit
from napari_dlbio.models.unet import build_unet

tf = load_tensorflow()
keras = load_keras()

# Pixels predicted per network call: 4 tiles of 512 x 512 keep a CPU's cores busy and the
# activations of a slim U-Net within a few hundred MiB.
PREDICT_PIXELS_PER_BATCH = 4 * 512 * 512
# Validation slices predicted whole at the end of training for the per-class report.
MAX_REPORT_SLICES = 16


@dataclass(frozen=True)
class SegmentationTrainingResult:
    """A trained model (in memory, not yet saved) and how its training went."""

    model: ModelFolder
    fit: FitResult


@dataclass(frozen=True)
class SegmentationPrediction:
    """Predicted mask (Z, Y, X) uint8 (0 = background, k = class k) and class
    probabilities (Z, Y, X, K) float32."""

    mask: np.ndarray
    probabilities: np.ndarray


def iter_train_segmentation(
    images: np.ndarray,
    annotations: np.ndarray,
    config: SegmentationConfig,
    *,
    cancel: CancelToken | None = None,
    initial: ModelFolder | None = None,
    checkpoint_dir: str | Path | None = None,
    callbacks: Sequence[Any] = (),
    clock: Clock = time.perf_counter,
) -> Generator[Event, None, SegmentationTrainingResult]:
    """Train (or fine-tune) a U-Net, yielding progress events.

    Every worker of a multi-worker cluster (see
    :func:`~napari_dlbio.models.distribute.find_cluster`) runs this with the same
    arguments: each trains on ``config.batch_size`` patches of its own per step, and all
    end with the same model.

    Parameters
    ----------
    images
        (Z, Y, X) or (Z, Y, X, C) (a single (Y, X[, C]) image also works), any real dtype.
    annotations
        (Z, Y, X): 0 = not annotated, 1 = background, k >= 2 = class k-1.
    config
        Architecture, data and training settings.
    cancel
        Stops training after the current batch; the best weights so far are kept.
    initial
        Fine-tune this model: its network, normalisation, class names, input channels and
        tiling are kept; the training settings come from ``config``.
    checkpoint_dir
        If given, best and last weights are written there after every epoch.
    callbacks
        More Keras callbacks (e.g. TensorBoard on a cluster, or a benchmark's probe).
    clock
        The clock of ``config.time_budget_s`` (see :func:`~napari_dlbio.models.training.iter_fit`).

    Yields
    ------
    Event
        ``Notice`` (what trains and validates), ``TrainingStarted``, ``BatchEnded``,
        ``EpochEnded`` (metrics ``val_loss``, ``val_iou`` ...), then ``Finished``.

    Returns
    -------
    SegmentationTrainingResult
        The model in memory (``path`` None) with history and metrics (validation report,
        best epoch, seconds); save it with :func:`~napari_dlbio.models.store.save_model_folder`.

    Raises
    ------
    InputDataError
        For images and annotations that cannot train (see :func:`prepare_training_data`),
        among them images whose channels do not fit ``config.input_channels`` (when
        fine-tuning, the model's: a grey model is not fine-tuned on colour images).
    ModelFolderError
        When ``initial`` is not a segmentation model.
    """
    if initial is not None:
        config = fine_tuning_config(config, initial)
    data = prepare_training_data(images, annotations, config)
    if initial is not None:
        yield Notice(
            f"Fine-tuning {model_label(initial.path)}: its network, classes and "
            "normalisation are kept.",
            routine=True,
        )
    yield Notice(data.describe(), routine=True)
    missing = [
        name
        for name, count in zip(
            config.class_names,
            class_pixel_counts(data.train_annotations, config.n_classes),
            strict=True,
        )
        if count == 0
    ]
    if missing:
        yield Notice(
            f"No training pixel is annotated as {', '.join(missing)}; the model cannot learn "
            "what it has not seen. Paint a few strokes of every class."
        )
    if data.class_weights is not None:
        weights = ", ".join(
            f"{name} {weight:.2f}"
            for name, weight in zip(config.class_names, data.class_weights, strict=True)
        )
        yield Notice(f"Class weights: {weights}.", routine=True)
    strategy = choose_strategy()
    # config.batch_size patches per replica: several replicas in this process split batches
    # of that many times more, a worker among several draws its own.
    workers = spans_workers(strategy)
    batch_size = config.batch_size * (1 if workers else strategy.num_replicas_in_sync)
    with strategy.scope():
        if config.packaged_network and initial is not None:
            # A bioimage.io package's own network, not a U-Net of ``config.network``.
            model = keras.models.clone_model(initial.model)
        else:
            model = build_unet(config.network, config.input_channels, config.n_classes)
        if initial is not None:
            model.set_weights(initial.model.get_weights())
        model.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss=MaskedSegmentationLoss(
                config.n_classes,
                config.loss,
                None if data.class_weights is None else data.class_weights.tolist(),
            ),
            metrics=[MaskedIoU(config.n_classes)],
            # Keras' "auto": XLA on a single GPU only.  Forced on a 2-core CPU, its faster
            # steps only made up for its compiling in 5-minute runs (700 steps against 709
            # without), and each compiled model stayed in memory (~55 MiB per run).
            jit_compile="auto",
        )
    if workers:
        # All workers stop at the same batch and keep the same model (see multi_worker).
        agreement = WorkerAgreement(strategy, cancel or CancelToken(), clock)
        cancel, clock, callbacks = agreement.cancel, agreement.clock, [*callbacks, agreement]
    # One device, and each worker, trains fastest on numpy batches drawn in its own loop
    # (see iter_fit); several replicas in this process split tf.data batches.
    split_batches = strategy.num_replicas_in_sync > 1 and not workers
    stream = training_dataset if split_batches else training_batches
    job = iter_fit(
        model,
        stream(data, config, batch_size, seed=config.seed + 7919 * worker_index()),
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=validation_dataset(data, config, batch_size),
        cancel=cancel,
        time_budget_s=config.time_budget_s,
        patience=config.early_stopping_patience,
        checkpoint_dir=checkpoint_dir,
        extra_callbacks=[
            *([_learning_rate_schedule(config, clock)] if config.learning_rate_decay else []),
            *callbacks,
        ],
        clock=clock,
    )
    finished: Finished | None = None
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                fit: FitResult = stop.value
                break
            # The final Finished waits until the validation report below is ready.
            if isinstance(event, Finished):
                finished = event
            else:
                yield event
    finally:
        # A consumer that stops listening also stops the training thread.
        job.close()
    folder = ModelFolder(
        model=model,
        task=Task.SEGMENTATION,
        config=config,
        path=None,
        history=fit.history,
        metrics=_training_metrics(model, config, data, fit),
    )
    yield finished or Finished(fit.state)
    return SegmentationTrainingResult(model=folder, fit=fit)


# The learning rate ends at this share of its start.
FINAL_RATE_FACTOR = 0.05
# Steps over which the rate rises linearly to its start: the first batches of a fresh
# network with batch norm give large, noisy gradients.
WARMUP_STEPS = 20


def _learning_rate_schedule(config: SegmentationConfig, clock: Clock) -> CosineDecay:
    return CosineDecay(
        config.learning_rate,
        config.epochs * config.steps_per_epoch,
        config.time_budget_s,
        final_factor=FINAL_RATE_FACTOR,
        warmup_steps=WARMUP_STEPS,
        clock=clock,
    )


def train_segmentation(
    images: np.ndarray,
    annotations: np.ndarray,
    config: SegmentationConfig,
    *,
    cancel: CancelToken | None = None,
    initial: ModelFolder | None = None,
    checkpoint_dir: str | Path | None = None,
) -> SegmentationTrainingResult:
    """Run :func:`iter_train_segmentation` to the end and return its result."""
    return run_to_end(
        iter_train_segmentation(
            images,
            annotations,
            config,
            cancel=cancel,
            initial=initial,
            checkpoint_dir=checkpoint_dir,
        )
    )


def fine_tuning_config(config: SegmentationConfig, initial: ModelFolder) -> SegmentationConfig:
    """Training settings from ``config``; what the saved model is made of from ``initial``.

    The class roles (which classes are boundaries) are ``config``'s when it names any,
    else ``initial``'s: fine-tuning a membrane model keeps its cells.

    Raises
    ------
    ModelFolderError
        When ``initial`` is not a segmentation model.
    """
    base = _segmentation_config(initial)
    _refuse_untrainable_output(base, initial)
    return config.replace(
        class_names=base.class_names,
        boundary_classes=config.boundary_classes or base.boundary_classes,
        input_channels=base.input_channels,
        network=base.network,
        normalise_low=base.normalise_low,
        normalise_high=base.normalise_high,
        tile_size=base.tile_size,
        tile_overlap=base.tile_overlap,
        input_processing=base.input_processing,
        output_processing=base.output_processing,
    )


# Post-processing that reads probabilities: a network followed only by these already
# outputs what the loss compares with the annotation.
_PROBABILITY_STEPS = {StepKind.BINARIZE, StepKind.CLIP, StepKind.ENSURE_DTYPE}


def _refuse_untrainable_output(config: SegmentationConfig, model: ModelFolder) -> None:
    """Refuse to fine-tune a packaged network whose output is not yet probabilities."""
    steps = [step.kind.value for step in config.output_processing]
    if any(step.kind not in _PROBABILITY_STEPS for step in config.output_processing):
        raise ModelFolderError(
            f"{model.path or 'This model'} comes from a bioimage.io package whose network "
            f"output becomes probabilities only after its post-processing ({', '.join(steps)}); "
            "napari-dlbio can predict with it but fine-tunes only networks that output "
            "probabilities themselves."
        )


def _segmentation_config(model: ModelFolder) -> SegmentationConfig:
    if model.task is not Task.SEGMENTATION or not isinstance(model.config, SegmentationConfig):
        where = model.path or "This model"
        raise ModelFolderError(
            f"{where} is a {model.task.value} model; choose a segmentation model folder."
        )
    return model.config


def _training_metrics(
    model: Any, config: SegmentationConfig, data: TrainingData, fit: FitResult
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "state": fit.state.value,
        "best_epoch": fit.best_epoch,
        "epochs_run": len(fit.history.get("loss", [])),
        "train_seconds": round(fit.seconds, 3),
        "train_slices": data.train_slices,
        "validation_slices": data.validation_slices,
    }
    if "val_iou" in fit.history and fit.best_epoch is not None:
        metrics["val_iou"] = fit.history["val_iou"][fit.best_epoch - 1]
    if data.validation_annotations is None or fit.best_epoch is None:
        return metrics
    slices = data.validation_slices[:MAX_REPORT_SLICES]
    folder = ModelFolder(model=model, task=Task.SEGMENTATION, config=config)
    prediction = run_to_end(_iter_predict(folder, data.images[slices], None, normalised=True))
    report = evaluate_segmentation(
        prediction.mask, data.validation_annotations[slices], config.class_names
    )
    report.pop("slices")
    metrics["validation"] = report
    return metrics


def iter_predict_segmentation(
    model: ModelFolder, images: np.ndarray, *, cancel: CancelToken | None = None
) -> Generator[Event, None, SegmentationPrediction | None]:
    """Predict a mask and class probabilities for every slice, tile by tile.

    Parameters
    ----------
    model
        A segmentation model folder (loaded or just trained).
    images
        (Y, X), (Y, X, C), (Z, Y, X) or (Z, Y, X, C) of any size and real dtype.
    cancel
        Stops before the next batch of tiles.

    Yields
    ------
    Event
        ``TileDone(i, n)`` after every tile, then ``Finished``.

    Returns
    -------
    SegmentationPrediction or None
        ``None`` when cancelled.

    Raises
    ------
    InputDataError
        For images the model cannot read (rank, dtype, NaN / infinite pixels, channels
        that do not fit the model: a grey model refuses colour images and a colour model
        grey ones; an RGB image whose channels are equal is grey, and alpha is dropped).
    ModelFolderError
        When ``model`` is not a segmentation model.
    """
    return (yield from _iter_predict(model, images, cancel, normalised=False))


def predict_segmentation(
    model: ModelFolder, images: np.ndarray, *, cancel: CancelToken | None = None
) -> SegmentationPrediction | None:
    """Run :func:`iter_predict_segmentation` to the end and return its result."""
    return run_to_end(iter_predict_segmentation(model, images, cancel=cancel))


def _iter_predict(
    model: ModelFolder,
    images: np.ndarray,
    cancel: CancelToken | None,
    *,
    normalised: bool,
) -> Generator[Event, None, SegmentationPrediction | None]:
    probabilities: np.ndarray | None = None
    state = RunState.DONE
    for event in iter_predict_slices(model, images, cancel=cancel, normalised=normalised):
        if isinstance(event, SlicePredicted):
            if probabilities is None:
                shape = (event.total, *event.probabilities.shape)
                probabilities = np.empty(shape, dtype=np.float32)
            probabilities[event.index] = event.probabilities
            continue
        if isinstance(event, Finished):
            state = event.state
        yield event
    if state is not RunState.DONE or probabilities is None:
        return None
    mask = mask_from_probabilities(probabilities, model.config.min_region_pixels)
    return SegmentationPrediction(mask=mask, probabilities=probabilities)


def iter_predict_slices(
    model: ModelFolder,
    images: np.ndarray,
    *,
    cancel: CancelToken | None = None,
    normalised: bool = False,
) -> Generator[Event, None, None]:
    """Predict slice after slice without holding the whole result: for any volume size.

    Slices are read one at a time, so ``images`` may be a memory-mapped file or a dask
    array much larger than memory.

    Parameters
    ----------
    model
        A segmentation model folder.
    images
        (Y, X), (Y, X, C), (Z, Y, X) or (Z, Y, X, C) of any size and real dtype.
    cancel
        Stops before the next batch of tiles.
    normalised
        Whether ``images`` are already normalised (float32 with the model's channels).

    Yields
    ------
    Event
        ``TileDone`` after every tile, ``SlicePredicted`` when a slice is complete, then
        ``Finished`` (``CANCELLED`` when stopped).

    Raises
    ------
    InputDataError
        For images the model cannot read (rank, dtype, NaN / infinite pixels, channels
        that do not fit the model: see
        :func:`~napari_dlbio.core.normalisation.fit_channels`).  The channels of the
        first slice are checked before any work, those of the others as they are read.
    ModelFolderError
        When ``model`` is not a segmentation model.
    """
    config = _segmentation_config(model)
    channels = config.input_channels
    if normalised:
        stack = images
    else:
        stack = as_image_stack(images)
        # The first slice now, to refuse an image of the wrong kind before any work; each
        # slice again as it is read, so a huge stack is not read twice.
        fit_channels(stack[:1], channels)
    n_slices, height, width = stack.shape[:3]
    multiple = config.network.size_multiple
    if n_slices == 0 or height == 0 or width == 0:
        raise InputDataError(f"The image is empty (shape {tuple(stack.shape)}).")
    padded_shape, crop = _padded_shape(height, width, multiple)
    _check_slice_fits_in_memory(padded_shape, config)
    windows = tile_grid(padded_shape, config.tile_size, config.tile_overlap)
    tile_h = windows[0][0].stop - windows[0][0].start
    tile_w = windows[0][1].stop - windows[0][1].start
    weights = blending_window(config.tile_size, config.tile_overlap)[:tile_h, :tile_w]
    batch = max(1, PREDICT_PIXELS_PER_BATCH // (tile_h * tile_w))
    step = _predict_step(model.model, channels)
    # Only a bioimage.io package's network may give one channel (the foreground).
    one_channel = config.packaged_network and model.model.output.shape[-1] == 1

    def finish(raw: np.ndarray) -> np.ndarray:
        return output_probabilities(raw, config.output_processing, one_channel)

    n_classes = config.n_classes
    total = n_slices * len(windows)
    pending: list[tuple[int, tuple[slice, slice]]] = []
    tiles = np.empty((batch, tile_h, tile_w, channels), dtype=np.float32)
    chunk = batch  # tiles per network call; halved when the device runs out of memory
    stitchers: dict[int, Stitcher] = {}
    done = 0
    for z in range(n_slices):
        plane = np.asarray(stack[z : z + 1])
        if not normalised:
            plane = fit_channels(plane, channels)
            check_finite(plane, "image")
            plane = normalise_input(
                plane, config.normalise_low, config.normalise_high, config.input_processing
            )
        plane, _ = pad_to_multiple(plane[0], multiple)
        if len(windows) > 1:
            stitchers[z] = Stitcher(padded_shape, n_classes, dtype=np.float32)
        for window in windows:
            tiles[len(pending)] = plane[window]
            pending.append((z, window))
            if len(pending) < batch and not (z == n_slices - 1 and window is windows[-1]):
                continue
            if cancel is not None and cancel.cancelled:
                yield Finished(RunState.CANCELLED)
                return
            while True:
                try:
                    predicted = _predict_in_chunks(step, tiles[: len(pending)], chunk)
                    break
                except tf.errors.ResourceExhaustedError:
                    if chunk == 1:
                        raise
                    chunk = max(1, chunk // 2)
                    yield Notice(
                        f"Out of memory while predicting; going on with {chunk} tile(s) at "
                        "a time (slower).  A smaller tile size (Advanced) avoids this."
                    )
            for (tile_z, tile_window), values in zip(pending, predicted, strict=True):
                if tile_z in stitchers:
                    stitchers[tile_z].add(tile_window, values, weights)
                done += 1
                yield TileDone(done, total)
                if tile_window is windows[-1]:
                    whole = stitchers.pop(tile_z).result() if tile_z in stitchers else values
                    yield SlicePredicted(tile_z, n_slices, finish(whole[crop]))
            pending.clear()
    yield Finished(RunState.DONE)


def _predict_in_chunks(step: Any, tiles: np.ndarray, chunk: int) -> np.ndarray:
    """Class probabilities of ``tiles``, ``chunk`` tiles per network call."""
    parts = [step(tiles[start : start + chunk]).numpy() for start in range(0, len(tiles), chunk)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _padded_shape(height: int, width: int, multiple: int) -> tuple[tuple[int, int], Any]:
    """Shape of a slice padded to a multiple of ``multiple``, and the crop back."""
    widths, crop = padding_to_multiple((height, width), multiple)
    return (height + sum(widths[0]), width + sum(widths[1])), crop


def _check_slice_fits_in_memory(padded_shape: tuple[int, int], config: SegmentationConfig) -> None:
    """Refuse slices whose prediction cannot fit in memory, before allocating anything.

    One slice is held at once: its normalised and padded copies (float32 per channel),
    the blended class probabilities with their weights, and the finished probabilities.
    """
    bytes_per_pixel = 4 * (2 * config.input_channels + 2 * config.n_classes + 1)
    needed = padded_shape[0] * padded_shape[1] * bytes_per_pixel
    available = physical_memory_bytes()
    if available is not None and needed > available:
        raise InputDataError(
            f"One {padded_shape[0]} x {padded_shape[1]} slice needs about "
            f"{needed / 2**30:,.1f} GiB of memory to predict, more than this computer's "
            f"{available / 2**30:,.1f} GiB; crop the image into smaller pieces and predict each."
        )


# One compiled prediction step per Keras model, reused by every call: tracing a graph
# costs far more than predicting a slice.
_PREDICT_STEPS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _predict_step(model: Any, channels: int) -> Any:
    step = _PREDICT_STEPS.get(model)
    if step is None:
        step = _compile_step(weakref.ref(model), channels)
        _PREDICT_STEPS[model] = step
    return step


def _compile_step(model_ref: weakref.ref, channels: int) -> Any:
    # A weak reference, so the cached step does not keep its model alive; one input
    # signature with free sizes, so every tile shape reuses the same graph.
    @tf.function(
        input_signature=[tf.TensorSpec((None, None, None, channels), tf.float32)],
        autograph=False,
    )
    def predict_tiles(tiles: Any) -> Any:
        return class_probabilities(model_ref()(tiles, training=False))

    return predict_tiles


def evaluate_segmentation(
    prediction_mask: np.ndarray, annotation: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Per-class IoU and Dice, pixel accuracy and per-slice figures on annotated pixels.

    Parameters
    ----------
    prediction_mask
        (Z, Y, X) predicted mask: 0 = background, k = class k.
    annotation
        (Z, Y, X) annotation or ground truth in the annotation convention: 0 = not
        annotated (ignored), 1 = background, k >= 2 = class k-1.
    class_names
        The model's class names, background first.

    Returns
    -------
    dict
        ``{"pixel_accuracy", "classes": {name: {"iou", "dice", "pixels"}}, "slices",
        "confusion_matrix"}`` (see :func:`~napari_dlbio.core.metrics.segmentation_report`).

    Raises
    ------
    InputDataError
        When the shapes differ, or the annotation holds classes the model does not have,
        negative values or fractions.
    """
    annotation = np.asarray(annotation)
    prediction_mask = np.asarray(prediction_mask)
    if annotation.shape != prediction_mask.shape:
        raise InputDataError(
            f"The labels have shape {annotation.shape} but the prediction has shape "
            f"{prediction_mask.shape}; compare labels of the same image."
        )
    check_annotation_values(annotation)
    if annotation.size and int(annotation.max()) > len(class_names):
        raise InputDataError(
            f"The labels hold value {int(annotation.max())} but the model knows only "
            f"{len(class_names)} classes ({', '.join(class_names)}: labels 1 to "
            f"{len(class_names)}); map the label values to these classes with --label-values."
        )
    classes, annotated = classes_from_annotation(annotation)
    return segmentation_report(classes, prediction_mask, class_names, valid=annotated)
