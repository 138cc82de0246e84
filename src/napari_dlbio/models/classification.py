"""The classification engine: train (or fine-tune) an image classifier, predict, evaluate.

Images are brought to the input size once, as uint8, and kept in memory; tf.data shuffles,
batches and augments them on the fly (flips, 90-degree rotations, zoom, brightness) outside
the network, so the saved model holds only standard layers and predicts exactly what it
validated.  A pretrained backbone is trained in two phases: the new head with the backbone
frozen, then everything at a tenth of the learning rate.  Starting from a trained classifier
whose classes differ from the images' (transfer learning, e.g. from ``builtin:plantvillage-15``)
takes the same two phases: its network body is kept with its weights, input size and
normalisation, and a new top learns the new classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.builtin_models import model_label
from napari_dlbio.core.class_dataset import (
    channel_statistics,
    class_weights,
    image_fingerprints,
    stratified_split,
    to_input_images,
)
from napari_dlbio.core.classifier_config import (
    Backbone,
    ClassifierConfig,
    Normalisation,
    native_normalisation,
)
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError, ModelFolderError
from napari_dlbio.core.events import (
    BatchEnded,
    CancelToken,
    EpochEnded,
    Event,
    Finished,
    Notice,
    RunState,
    TileDone,
    TrainingStarted,
    run_to_end,
)
from napari_dlbio.core.metrics import classification_report
from napari_dlbio.models._tf import load_keras, load_tensorflow
from napari_dlbio.models.classifier import HEAD_LAYER, build_classifier, set_body_trainable
from napari_dlbio.models.distribute import choose_strategy
from napari_dlbio.models.store import ModelFolder
from napari_dlbio.models.training import Clock, CosineDecay, FitResult, iter_fit

tf = load_tensorflow()
keras = load_keras()

# Images per network call at prediction time.
PREDICT_BATCH = 64
# Fine-tuning a pretrained body uses this fraction of the head's learning rate.
FINE_TUNE_LR_FACTOR = 0.1
# The learning rate decays to this fraction of its start value.
MIN_RATE_FACTOR = 0.01
# Settings that describe the trained network; fine-tuning keeps them from the model.
_ARCHITECTURE = (
    "class_names",
    "input_size",
    "input_channels",
    "backbone",
    "filters",
    "blocks",
    "dropout",
    "l2",
    "batch_norm",
    "normalisation",
    "channel_mean",
    "channel_std",
)


@dataclass(frozen=True)
class ClassifierTrainingResult:
    """A trained classifier (in memory, not yet saved) and how its training went."""

    model: ModelFolder
    fit: FitResult


@dataclass(frozen=True)
class ClassPrediction:
    """Class probabilities ``(N, K)`` float32 and the predicted class index ``(N,)``."""

    probabilities: np.ndarray
    predicted: np.ndarray
    class_names: tuple[str, ...]
    seen_in_training: np.ndarray  # (N,) bool: the model was trained on this image


def iter_train_classifier(
    images: np.ndarray | Sequence[np.ndarray],
    class_indices: np.ndarray,
    config: ClassifierConfig,
    *,
    cancel: CancelToken | None = None,
    initial: ModelFolder | None = None,
    backbone_weights: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    callbacks: Sequence[Any] = (),
    clock: Clock = time.perf_counter,
) -> Generator[Event, None, ClassifierTrainingResult]:
    """Train (or fine-tune) an image classifier, yielding progress events.

    Parameters
    ----------
    images
        ``(N, H, W, C)`` or ``(N, H, W)`` array, or a sequence of images of any sizes;
        uint8, uint16 or float in [0, 1].  They are resized to ``config.input_size``.
    class_indices
        ``(N,)`` class index of each image, into ``config.class_names`` (empty names are
        filled with ``"class 0"``, ``"class 1"``, ...).
    config
        Network, data and training settings.
    cancel
        Stops training after the current batch; the best weights so far are kept.
    initial
        Start from this classifier: its network, input size and normalisation are kept;
        the training settings come from ``config``.  When ``config.class_names`` are empty
        or all among its classes, it is fine-tuned on its own classes (the indices are
        read in ``config.class_names`` and renumbered into its order; classes without images
        stay in the model).  Any other class name means transfer learning: a new top for
        ``config.class_names`` is trained with the rest of the network frozen for
        ``config.epochs``, then everything for ``config.fine_tune_epochs`` at a tenth of the
        learning rate.
    backbone_weights
        Local weights file for a keras.applications backbone (see
        :func:`~napari_dlbio.models.classifier.build_classifier`).  With it, the head is
        trained first with the backbone frozen, then the backbone is fine-tuned for
        ``config.fine_tune_epochs``; without it, everything trains from scratch.
    checkpoint_dir
        If given, best and last weights are written there after every epoch.
    callbacks
        More Keras callbacks, in every training phase.
    clock
        The clock of ``config.time_budget_s`` (see :func:`~napari_dlbio.models.training.iter_fit`).

    Yields
    ------
    Event
        ``Notice`` (what trains and validates), ``TrainingStarted``, ``BatchEnded``,
        ``EpochEnded`` (metrics ``accuracy``, ``val_loss``, ``val_accuracy``), ``Finished``.

    Returns
    -------
    ClassifierTrainingResult
        The model in memory (``path`` None), its history and metrics (validation report,
        best epoch, seconds); save it with :func:`~napari_dlbio.models.store.save_model_folder`.

    Raises
    ------
    InputDataError
        Fewer than two classes, class indices that do not fit the images or class names.
    ModelFolderError
        When ``initial`` is not a classification model.
    """
    labels = np.asarray(class_indices)
    new_top = False
    if initial is not None:
        config, labels, new_top = _start_from(config, labels, len(images), initial)
        backbone_weights = None
    config = _with_class_names(config, labels, len(images))
    labels = labels.astype(np.int64)
    data = to_input_images(images, config.input_size, config.input_channels)
    train, validation = stratified_split(labels, config.validation_fraction, config.seed)
    config, notes = _normalisation(config, data[train], initial, backbone_weights)
    if initial is not None:
        notes.extend(_start_notes(config, initial, new_top, labels))
    for note in notes:
        yield Notice(note)
    weights = class_weights(labels[train], config.n_classes) if config.class_weights else None
    yield Notice(_describe(config, labels, train, validation, weights), routine=True)

    strategy = choose_strategy()
    batch_size = min(config.batch_size, train.size) * strategy.num_replicas_in_sync
    with strategy.scope():
        model = build_classifier(config, backbone_weights)
        if initial is not None:
            _copy_weights(initial.model, model, new_top)
    train_data = _training_dataset(data[train], labels[train], weights, config, batch_size)
    validation_data = (
        _validation_dataset(data[validation], labels[validation], batch_size)
        if validation.size
        else None
    )
    fit_options = {
        "steps_per_epoch": math.ceil(train.size / batch_size),
        "validation_data": validation_data,
        "cancel": cancel,
        "patience": config.early_stopping_patience,
        "checkpoint_dir": checkpoint_dir,
        "extra_callbacks": tuple(callbacks),
        "clock": clock,
    }
    transfer = new_top or (
        backbone_weights is not None and config.backbone is not Backbone.SMALL_CNN
    )
    head_budget = config.time_budget_s
    if transfer:
        set_body_trainable(model, False)
        if head_budget is not None:
            # The frozen and the fine-tuning phase share the budget like their epochs.
            head_budget *= config.epochs / (config.epochs + config.fine_tune_epochs)
    fit = yield from _phase(
        model, strategy, train_data, config.learning_rate, config.epochs, head_budget, fit_options
    )
    if transfer and _may_fine_tune(fit, config, cancel):
        fit = yield from _fine_tune(model, strategy, train_data, fit, config, fit_options)
    for layer in model.layers:
        layer.trainable = True  # saved like any other model
    metrics = _training_metrics(model, config, data[validation], labels[validation], fit)
    metrics["training_images"] = image_fingerprints(data[train])
    overfitting = _overfitting(fit, metrics)
    if overfitting is not None:
        yield Notice(overfitting)
    folder = ModelFolder(
        model=model,
        task=Task.CLASSIFICATION,
        config=config,
        history=fit.history,
        metrics=metrics,
    )
    yield Finished(fit.state)
    return ClassifierTrainingResult(model=folder, fit=fit)


def train_classifier(
    images: np.ndarray | Sequence[np.ndarray],
    class_indices: np.ndarray,
    config: ClassifierConfig,
    *,
    cancel: CancelToken | None = None,
    initial: ModelFolder | None = None,
    backbone_weights: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
) -> ClassifierTrainingResult:
    """Run :func:`iter_train_classifier` to the end and return its result."""
    return run_to_end(
        iter_train_classifier(
            images,
            class_indices,
            config,
            cancel=cancel,
            initial=initial,
            backbone_weights=backbone_weights,
            checkpoint_dir=checkpoint_dir,
        )
    )


def fine_tuning_config(config: ClassifierConfig, initial: ModelFolder) -> ClassifierConfig:
    """Training settings from ``config``; what the network is made of from ``initial``.

    Raises
    ------
    ModelFolderError
        When ``initial`` is not a classification model.
    """
    base = classifier_config(initial)
    return config.replace(**{name: getattr(base, name) for name in _ARCHITECTURE})


def classifier_config(model: ModelFolder) -> ClassifierConfig:
    """The config of a classification model folder.

    Raises
    ------
    ModelFolderError
        When ``model`` is not a classification model.
    """
    if model.task is not Task.CLASSIFICATION or not isinstance(model.config, ClassifierConfig):
        where = model.path or "This model"
        raise ModelFolderError(
            f"{where} is a {model.task.value} model; choose a classification model folder."
        )
    return model.config


def iter_predict_classifier(
    model: ModelFolder,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    cancel: CancelToken | None = None,
) -> Generator[Event, None, ClassPrediction | None]:
    """Class probabilities of every image, batch by batch.

    Parameters
    ----------
    model
        A classification model folder (loaded or just trained).
    images
        ``(N, H, W[, C])`` array or a sequence of images of any sizes (grey, RGB, RGBA);
        each is resized to the model's input size as in training.
    cancel
        Stops before the next batch.

    Yields
    ------
    Event
        ``TileDone(i, n)`` after every batch, then ``Finished``.

    Returns
    -------
    ClassPrediction or None
        ``None`` when cancelled.
    """
    config = classifier_config(model)
    cancel = cancel or CancelToken()
    total = math.ceil(len(images) / PREDICT_BATCH)
    probabilities = np.zeros((len(images), config.n_classes), dtype=np.float32)
    trained_on = set(model.metrics.get("training_images", ()))
    seen = np.zeros(len(images), bool)
    for index in range(total):
        if cancel.cancelled:
            yield Finished(RunState.CANCELLED)
            return None
        chunk = slice(index * PREDICT_BATCH, (index + 1) * PREDICT_BATCH)
        batch = to_input_images(images[chunk], config.input_size, config.input_channels)
        probabilities[chunk] = model_probabilities(
            model.model, batch, config.test_time_augmentation
        )
        seen[chunk] = [fingerprint in trained_on for fingerprint in image_fingerprints(batch)]
        yield TileDone(index + 1, total)
    yield Finished(RunState.DONE)
    return ClassPrediction(
        probabilities=probabilities,
        predicted=probabilities.argmax(axis=1).astype(np.int64),
        class_names=config.class_names,
        seen_in_training=seen,
    )


def predict_classifier(
    model: ModelFolder,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    cancel: CancelToken | None = None,
) -> ClassPrediction | None:
    """Run :func:`iter_predict_classifier` to the end and return its result."""
    return run_to_end(iter_predict_classifier(model, images, cancel=cancel))


def evaluate_classifier(
    model: ModelFolder, images: np.ndarray | Sequence[np.ndarray], class_indices: np.ndarray
) -> dict[str, Any]:
    """Accuracy, per-class precision / recall / support and the confusion matrix.

    Parameters
    ----------
    model
        A classification model folder.
    images
        Images in any form :func:`iter_predict_classifier` accepts.
    class_indices
        True class of each image, as an index into the model's class names.

    Returns
    -------
    dict
        :func:`~napari_dlbio.core.metrics.classification_report` of the predictions.
    """
    config = classifier_config(model)
    labels = _check_labels(np.asarray(class_indices), len(images), config.n_classes)
    prediction = predict_classifier(model, images)
    return classification_report(labels, prediction.predicted, config.class_names)


def model_probabilities(
    model: Any, batch: np.ndarray, all_orientations: bool = False
) -> np.ndarray:
    """Softmax output of a classifier for a uint8 batch at its (square) input size.

    With ``all_orientations`` the mean over the batch's 8 flips and quarter turns
    (``ClassifierConfig.test_time_augmentation``).
    """
    if not all_orientations:
        return model(tf.convert_to_tensor(batch, tf.float32), training=False).numpy()
    turned = [np.rot90(batch, turns, axes=(1, 2)) for turns in range(4)]
    views = [view for image in turned for view in (image, image[:, :, ::-1])]
    return np.mean([model_probabilities(model, np.ascontiguousarray(v)) for v in views], axis=0)


def _start_from(
    config: ClassifierConfig, labels: np.ndarray, n_images: int, initial: ModelFolder
) -> tuple[ClassifierConfig, np.ndarray, bool]:
    """The config and class indices to train from ``initial``, and whether it needs a new top.

    Class names that ``initial`` knows (all, some, or none given) fine-tune it on its own
    classes, with the indices renumbered into its class order; any other name means a new
    top for ``config.class_names``.
    """
    known = classifier_config(initial).class_names
    tuned = fine_tuning_config(config, initial)
    names = config.class_names
    if not set(names) <= set(known):
        return tuned.replace(class_names=names), labels, True
    if names and labels.size:
        _check_labels(labels, n_images, len(names))
        labels = np.array([known.index(name) for name in names])[labels]
    return tuned, labels, False


def _start_notes(
    config: ClassifierConfig, initial: ModelFolder, new_top: bool, labels: np.ndarray
) -> list[str]:
    """What happens to ``initial``: a new top, or fine-tuning with classes left without images."""
    names = config.class_names
    if new_top:
        then = (
            "then the whole network is fine-tuned"
            if config.fine_tune_epochs > 0
            else "and the network itself stays as it is (fine_tune_epochs is 0)"
        )
        return [
            f"Starting from {model_label(initial.path)}: its network is kept, a new top is trained "
            f"for your {len(names)} classes ({', '.join(names)}), {then}."
        ]
    missing = [names[i] for i in np.setdiff1d(np.arange(len(names)), labels)]
    if not missing:
        return []
    return [
        f"Fine-tuning {model_label(initial.path)} on its own {len(names)} classes, but these "
        f"images show only {len(names) - len(missing)} of them; it keeps "
        f"{', '.join(missing)}, which it may come to predict less often."
    ]


def _copy_weights(source: Any, target: Any, new_top: bool) -> None:
    """Every weight of ``source`` into ``target``, or every one but the top's for a new top."""
    if not new_top:
        target.set_weights(source.get_weights())
        return
    for layer in target.layers:
        if layer.name != HEAD_LAYER:
            layer.set_weights(source.get_layer(layer.name).get_weights())
    # A random top on trained features (activations up to ~10) starts confidently wrong and
    # needs many steps to recover; a zero top starts at equal probabilities.
    head = target.get_layer(HEAD_LAYER)
    head.set_weights([np.zeros_like(weight) for weight in head.get_weights()])


def _with_class_names(
    config: ClassifierConfig, labels: np.ndarray, n_images: int
) -> ClassifierConfig:
    if not config.class_names and labels.size and np.issubdtype(labels.dtype, np.integer):
        config = config.replace(
            class_names=tuple(f"class {i}" for i in range(max(int(labels.max()) + 1, 2)))
        )
    _check_labels(labels, n_images, config.n_classes)
    present = np.unique(labels)
    if present.size < 2:
        names = ", ".join(config.class_names[i] for i in present) or "none"
        raise InputDataError(
            f"Training a classifier needs images of at least two classes; these images "
            f"are all of one class ({names}). Add images of another class."
        )
    return config


def _check_labels(labels: np.ndarray, n_images: int, n_classes: int) -> np.ndarray:
    if labels.ndim != 1:
        raise InputDataError(
            f"Class indices must be a flat list with one class per image, got an array of "
            f"shape {labels.shape}."
        )
    if labels.size != n_images:
        raise InputDataError(
            f"Got {n_images} images but {labels.size} class indices; give one class per image."
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise InputDataError(
            f"Class indices must be whole numbers from 0 to {n_classes - 1} (one per class "
            f"name), not {labels.dtype} values."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise InputDataError(
            f"Class indices must be whole numbers from 0 to {n_classes - 1} "
            f"(one per class name); got values from {labels.min()} to {labels.max()}."
        )
    return labels.astype(np.int64)


def _normalisation(
    config: ClassifierConfig,
    train_images: np.ndarray,
    initial: ModelFolder | None,
    backbone_weights: str | Path | None,
) -> tuple[ClassifierConfig, list[str]]:
    notes = []
    if backbone_weights is not None and config.backbone is not Backbone.SMALL_CNN:
        native = native_normalisation(config.backbone)
        if config.normalisation is not native:
            notes.append(
                f"Pretrained {config.backbone.value} weights expect inputs "
                f"'{native.value}'; using that instead of '{config.normalisation.value}'."
            )
            config = config.replace(normalisation=native, channel_mean=(), channel_std=())
    if config.normalisation is Normalisation.PER_CHANNEL and initial is None:
        mean, std = channel_statistics(train_images)
        config = config.replace(channel_mean=mean, channel_std=std)
    return config, notes


def _describe(
    config: ClassifierConfig,
    labels: np.ndarray,
    train: np.ndarray,
    validation: np.ndarray,
    weights: dict[int, float] | None,
) -> str:
    size = config.input_size
    text = (
        f"Training a {config.backbone.value} on {train.size} images of "
        f"{config.n_classes} classes at {size} x {size} pixels; "
        f"validating on {validation.size} images."
    )
    if not validation.size:
        text += " Every class has a single image, so nothing is held out for validation."
    counts = np.bincount(labels, minlength=config.n_classes)
    if weights is not None and counts.max() > counts.min():
        listed = ", ".join(f"{name} {weights[i]:.2f}" for i, name in enumerate(config.class_names))
        text += f" Class weights: {listed}."
    return text


def _compile(model: Any, strategy: Any, learning_rate: float) -> None:
    with strategy.scope():
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )


def _training_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    weights: dict[int, float] | None,
    config: ClassifierConfig,
    batch_size: int,
) -> Any:
    per_class = np.array([weights[i] for i in range(config.n_classes)] if weights else [1.0])
    sample_weights = per_class[labels] if weights else np.ones(labels.size)
    dataset = (
        tf.data.Dataset.from_tensor_slices((images, labels, sample_weights.astype(np.float32)))
        .shuffle(labels.size, seed=config.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=False)
    )
    if config.augmentation:
        seeds = tf.data.Dataset.random(seed=config.seed).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda batch, seed: _augment(batch, seed, config),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(lambda x, y, w: (tf.cast(x, tf.float32), y, w))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _validation_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int) -> Any:
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y)).cache()


def _augment(batch: tuple[Any, Any, Any], seed: Any, config: ClassifierConfig) -> tuple:
    """Random flips, 90-degree rotations, zoom and brightness of a uint8 batch."""
    images, labels, weights = batch
    x = tf.cast(images, tf.float32)
    n = tf.shape(x)[0]
    seeds = tf.random.experimental.stateless_split(seed, 6)

    def chance(index: int) -> Any:
        return tf.random.stateless_uniform((n, 1, 1, 1), seeds[index]) < 0.5

    if config.flips:
        x = tf.where(chance(0), tf.reverse(x, axis=[2]), x)
        x = tf.where(chance(1), tf.reverse(x, axis=[1]), x)
    if config.rotations:
        # Transposing, with the flips above, gives all eight 90-degree orientations.
        x = tf.where(chance(2), tf.transpose(x, [0, 2, 1, 3]), x)
    if config.zoom > 0:
        x = _zoom(x, seeds[3], config.zoom, config.input_size)
    if config.brightness > 0:
        shift = tf.random.stateless_uniform(
            (n, 1, 1, 1), seeds[4], -config.brightness, config.brightness
        )
        x = tf.clip_by_value(x + 255.0 * shift, 0.0, 255.0)
    return x, labels, weights


def _zoom(x: Any, seed: Any, zoom: float, size: int) -> Any:
    n = tf.shape(x)[0]
    parts = tf.random.experimental.stateless_split(seed, 2)
    scale = tf.random.stateless_uniform((n, 1), parts[0], 1.0 - zoom, 1.0)
    corner = tf.random.stateless_uniform((n, 2), parts[1]) * (1.0 - scale)
    boxes = tf.concat([corner, corner + scale], axis=1)
    return tf.image.crop_and_resize(x, boxes, tf.range(n), (size, size))


def _phase(
    model: Any,
    strategy: Any,
    train_data: Any,
    learning_rate: float,
    epochs: int,
    budget: float | None,
    fit_options: dict[str, Any],
) -> Generator[Event, None, FitResult]:
    """Compile with a fresh optimiser and train for ``epochs`` or ``budget`` seconds."""
    _compile(model, strategy, learning_rate)
    schedule = CosineDecay(
        learning_rate,
        epochs * fit_options["steps_per_epoch"],
        budget,
        final_factor=MIN_RATE_FACTOR,
        clock=fit_options["clock"],
    )
    job = iter_fit(
        model,
        train_data,
        epochs=epochs,
        time_budget_s=budget,
        **(fit_options | {"extra_callbacks": [schedule, *fit_options["extra_callbacks"]]}),
    )
    return (yield from _without_finished(job))


def _without_finished(job: Generator[Event, None, FitResult]) -> Generator[Event, None, FitResult]:
    """Pass a fit's events on, except its ``Finished``: ours comes once metrics are ready."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if not isinstance(event, Finished):
            yield event


def _may_fine_tune(fit: FitResult, config: ClassifierConfig, cancel: CancelToken | None) -> bool:
    cancelled = fit.state is RunState.CANCELLED or (cancel is not None and cancel.cancelled)
    budget_left = config.time_budget_s is None or fit.seconds < config.time_budget_s
    return config.fine_tune_epochs > 0 and not cancelled and budget_left


def _fine_tune(
    model: Any,
    strategy: Any,
    train_data: Any,
    head: FitResult,
    config: ClassifierConfig,
    fit_options: dict[str, Any],
) -> Generator[Event, None, FitResult]:
    """Unfreeze the body and train on; keep the head-only weights if they were better."""
    yield Notice(
        f"Fine-tuning the whole {config.backbone.value} for up to {config.fine_tune_epochs} "
        f"epochs at learning rate {config.learning_rate * FINE_TUNE_LR_FACTOR:g}.",
        routine=True,
    )
    monitor = "val_loss" if fit_options["validation_data"] is not None else "loss"
    head_best = min(head.history.get(monitor, [math.inf]))
    head_weights = model.get_weights()
    set_body_trainable(model, True)
    offset = len(head.history.get("loss", []))
    budget = None if config.time_budget_s is None else config.time_budget_s - head.seconds
    job = _phase(
        model,
        strategy,
        train_data,
        config.learning_rate * FINE_TUNE_LR_FACTOR,
        config.fine_tune_epochs,
        budget,
        fit_options,
    )
    tuned = yield from _renumbered(job, offset)
    tuned_best = min(tuned.history.get(monitor, [math.inf]))
    history = {
        key: head.history.get(key, []) + tuned.history.get(key, [])
        for key in dict.fromkeys([*head.history, *tuned.history])
    }
    best_epoch = head.best_epoch
    if tuned_best < head_best and tuned.best_epoch is not None:
        best_epoch = offset + tuned.best_epoch
    else:
        model.set_weights(head_weights)
    return FitResult(
        state=tuned.state,
        history=history,
        best_epoch=best_epoch,
        seconds=head.seconds + tuned.seconds,
        stop_reason=tuned.stop_reason,
    )


def _renumbered(
    job: Generator[Event, None, FitResult], offset: int
) -> Generator[Event, None, FitResult]:
    """Continue the epoch count of the first phase, so progress bars and plots go on."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, TrainingStarted):
            continue
        if isinstance(event, BatchEnded):
            event = BatchEnded(event.epoch + offset, event.step, event.steps, event.loss)
        elif isinstance(event, EpochEnded):
            event = EpochEnded(
                event.epoch + offset, event.epochs + offset, event.loss, event.metrics
            )
        yield event


#: Training accuracy this far above validation accuracy is reported as overfitting.
OVERFITTING_GAP = 0.25


def _overfitting(fit: FitResult, metrics: dict[str, Any]) -> str | None:
    """A notice when the kept weights classify training images far better than unseen ones."""
    accuracy = fit.history.get("accuracy", [])
    if fit.best_epoch is None or "val_accuracy" not in metrics or len(accuracy) < fit.best_epoch:
        return None
    train, held_out = accuracy[fit.best_epoch - 1], metrics["val_accuracy"]
    if train - held_out < OVERFITTING_GAP:
        return None
    return (
        f"The classifier is right on {train:.0%} of its training images but on only "
        f"{held_out:.0%} of the {metrics['validation_images']} images held out: it has learned "
        "those images rather than their classes (overfitting). More images per class, "
        "augmentation, or starting from a trained network help."
    )


def _training_metrics(
    model: Any,
    config: ClassifierConfig,
    images: np.ndarray,
    labels: np.ndarray,
    fit: FitResult,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "state": fit.state.value,
        "best_epoch": fit.best_epoch,
        "epochs_run": len(fit.history.get("loss", [])),
        "train_seconds": round(fit.seconds, 3),
        "validation_images": int(labels.size),
    }
    if fit.best_epoch is None or not labels.size:
        return metrics
    predicted = np.concatenate(
        [
            model_probabilities(
                model, images[start : start + PREDICT_BATCH], config.test_time_augmentation
            ).argmax(axis=1)
            for start in range(0, labels.size, PREDICT_BATCH)
        ]
    )
    report = classification_report(labels, predicted, config.class_names)
    metrics["val_accuracy"] = report["accuracy"]
    metrics["validation"] = report
    return metrics
