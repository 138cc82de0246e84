"""The segmentation data pipeline: checked, normalised stacks and tf.data patch streams.

Images of any dtype with the model's channels are brought into the network's form (float32
``(Z, Y, X, C)``, percentile-normalised per slice) by :func:`prepare_images`, which prediction
uses too, so training and prediction always see images the same way.  Training patches are
drawn by :class:`~napari_dlbio.core.patches.PatchSampler` (centred on annotated pixels,
augmented) in a background generator that tf.data prefetches while the network trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from napari_dlbio.core.augment import make_augmenter
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.labels import check_annotation
from napari_dlbio.core.normalisation import (
    as_stack,
    check_finite,
    fit_channels,
    normalise_input,
)
from napari_dlbio.core.patches import (
    PatchSampler,
    class_pixel_counts,
    class_weights_from_counts,
    hold_out,
    split_validation,
    validation_mask,
)
from napari_dlbio.core.segmentation_config import SegmentationConfig
from napari_dlbio.models._tf import load_tensorflow

tf = load_tensorflow()

# Validation patches kept in memory; beyond this a random subset is used every epoch.
MAX_VALIDATION_PATCHES = 64
# Batches the patch generator runs ahead of training.
PREFETCH_BATCHES = 4


@dataclass(frozen=True)
class TrainingData:
    """Normalised images and the training / validation split of their annotation.

    Attributes
    ----------
    images
        float32 (Z, Y, X, C), normalised.
    train_annotations, validation_annotations
        uint8 (Z, Y, X) annotations; pixels of the other set are 0 (not annotated).
        ``validation_annotations`` is ``None`` when nothing is held out.
    train_slices, validation_slices
        Slices that hold training / validation pixels.
    class_weights
        Cross-entropy weight of each class, or ``None`` when not asked for.
    """

    images: np.ndarray
    train_annotations: np.ndarray
    validation_annotations: np.ndarray | None
    train_slices: list[int]
    validation_slices: list[int]
    class_weights: np.ndarray | None

    def describe(self) -> str:
        """One sentence for the user about what trains and what validates."""
        train = _count(len(self.train_slices), "slice")
        if self.validation_annotations is None:
            return f"Training on {train}, with no validation set."
        if self.validation_slices == self.train_slices:
            return f"Training on {train}; a band of its annotated rows is held out for validation."
        return f"Training on {train}, validating on {_count(len(self.validation_slices), 'slice')}."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def prepare_images(images: np.ndarray, config: SegmentationConfig) -> np.ndarray:
    """Check an image stack and normalise it for the network.

    Parameters
    ----------
    images
        (Y, X), (Y, X, C), (Z, Y, X) or (Z, Y, X, C) of any real dtype (uint8, uint16,
        float ...) with the model's channels (see
        :func:`~napari_dlbio.core.normalisation.fit_channels`).
    config
        Gives the input channels and the normalisation percentiles.

    Returns
    -------
    np.ndarray
        float32 (Z, Y, X, C).

    Raises
    ------
    InputDataError
        For images of the wrong rank or dtype, NaN / infinite pixels, or channels that
        do not fit the model.
    """
    stack = as_model_stack(images, config)
    check_finite(stack, "image")
    return normalise_input(
        stack, config.normalise_low, config.normalise_high, config.input_processing
    )


def as_model_stack(images: np.ndarray, config: SegmentationConfig) -> np.ndarray:
    """View images as a (Z, Y, X, C) stack with the model's channels (not normalised).

    Every slice's channels are checked (see
    :func:`~napari_dlbio.core.normalisation.fit_channels`).

    Raises
    ------
    InputDataError
        For images of the wrong rank or dtype, or channels that do not fit the model.
    """
    return fit_channels(as_image_stack(images), config.input_channels)


def as_image_stack(images: np.ndarray) -> np.ndarray:
    """View images as a (Z, Y, X) or (Z, Y, X, C) stack, channels as they are.

    Raises
    ------
    InputDataError
        For images of the wrong rank or dtype.
    """
    dtype = np.dtype(getattr(images, "dtype", np.float64))
    if dtype.kind not in "buif":
        raise InputDataError(
            f"Images of type {dtype} cannot be segmented; use greyscale or colour images "
            "with integer or floating-point pixels."
        )
    # A 3D array with 3 or 4 values last is read as one colour image: no real stack of
    # slices is 3 or 4 pixels wide.
    stack, _axes = as_stack(images)
    return stack


def prepare_training_data(
    images: np.ndarray, annotations: np.ndarray, config: SegmentationConfig
) -> TrainingData:
    """Check images and annotations, normalise, split validation, count class weights.

    Raises
    ------
    InputDataError
        For shapes that do not match, annotation values beyond the model's classes, an
        annotation without any annotated pixel, bad pixels, or images smaller than the
        patch size.
    """
    annotations = np.asarray(annotations)
    if annotations.ndim == 2:
        annotations = annotations[np.newaxis]
    stack = as_model_stack(images, config)
    check_annotation(annotations, config.n_classes, stack.shape)
    annotations = annotations.astype(np.uint8, copy=False)
    height, width = stack.shape[1:3]
    if min(height, width) < config.patch_size:
        multiple = config.network.size_multiple
        fits = (min(height, width) // multiple) * multiple
        advice = (
            f"choose a patch size of at most {fits}"
            if fits >= multiple
            else f"use images of at least {multiple} x {multiple} pixels"
        )
        raise InputDataError(
            f"The patch size {config.patch_size} is larger than the images "
            f"({height} x {width} pixels); {advice}."
        )
    check_finite(stack, "image")
    normalised = normalise_input(
        stack, config.normalise_low, config.normalise_high, config.input_processing
    )
    train_slices, validation_slices = split_validation(
        annotations, config.validation_fraction, config.seed
    )
    train_annotations = annotations
    validation_annotations = None
    if validation_slices:
        keep = np.zeros(annotations.shape[0], dtype=bool)
        keep[validation_slices] = True
        train_annotations = np.where(keep[:, None, None], np.uint8(0), annotations)
        validation_annotations = np.where(keep[:, None, None], annotations, np.uint8(0))
    elif config.validation_fraction > 0:
        held_out = validation_mask(annotations, config.validation_fraction, config.seed)
        if held_out.any():
            train_annotations, validation_annotations = hold_out(annotations, held_out)
            validation_slices = list(train_slices)
    weights = None
    if config.class_weights:
        counts = class_pixel_counts(train_annotations, config.n_classes)
        weights = class_weights_from_counts(counts)
    return TrainingData(
        images=normalised,
        train_annotations=train_annotations,
        validation_annotations=validation_annotations,
        train_slices=train_slices,
        validation_slices=validation_slices,
        class_weights=weights,
    )


def training_batches(
    data: TrainingData, config: SegmentationConfig, batch_size: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """An endless stream of augmented (image, annotation) training batches, as numpy arrays.

    Parameters
    ----------
    data
        Prepared images and annotations.
    config
        Patch size and augmentation switches.
    batch_size
        Patches per batch (the global batch under a distribution strategy).
    seed
        Seed of this stream (differs between workers of a multi-worker run).
    """
    sampler = PatchSampler(
        data.images,
        data.train_annotations,
        config.patch_size,
        seed=seed,
        augment=segmentation_augmenter(config),
        slices=data.train_slices,
    )
    while True:
        yield sampler.sample_batch(batch_size)


def training_dataset(
    data: TrainingData, config: SegmentationConfig, batch_size: int, seed: int
) -> tf.data.Dataset:
    """:func:`training_batches` as a prefetched ``tf.data`` dataset, for several replicas."""
    size = config.patch_size
    channels = data.images.shape[-1]
    dataset = tf.data.Dataset.from_generator(
        lambda: training_batches(data, config, batch_size, seed),
        output_signature=(
            tf.TensorSpec((batch_size, size, size, channels), tf.float32),
            tf.TensorSpec((batch_size, size, size), tf.uint8),
        ),
    )
    return dataset.with_options(_unsharded()).prefetch(PREFETCH_BATCHES)


def validation_dataset(
    data: TrainingData, config: SegmentationConfig, batch_size: int
) -> tf.data.Dataset | None:
    """Fixed validation batches: the patch-size tiles of the held-out pixels.

    Tiles without held-out pixels are skipped; beyond :data:`MAX_VALIDATION_PATCHES` a
    seeded random subset is kept.  ``None`` when nothing is held out.
    """
    if data.validation_annotations is None:
        return None
    size = config.patch_size
    image_patches, annotation_patches = [], []
    for z in data.validation_slices:
        annotation = data.validation_annotations[z]
        for y in _origins(annotation.shape[0], size):
            for x in _origins(annotation.shape[1], size):
                window = annotation[y : y + size, x : x + size]
                if window.any():
                    annotation_patches.append(window)
                    image_patches.append(data.images[z, y : y + size, x : x + size])
    if len(image_patches) > MAX_VALIDATION_PATCHES:
        rng = np.random.default_rng(config.seed)
        chosen = sorted(rng.choice(len(image_patches), MAX_VALIDATION_PATCHES, replace=False))
        image_patches = [image_patches[i] for i in chosen]
        annotation_patches = [annotation_patches[i] for i in chosen]
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.stack(image_patches), np.stack(annotation_patches))
    )
    return dataset.batch(batch_size).with_options(_unsharded()).cache().prefetch(1)


def _origins(size: int, tile: int) -> list[int]:
    """Tile starts covering ``size`` pixels, the last one flush with the edge."""
    count = math.ceil(size / tile)
    return sorted({min(i * tile, size - tile) for i in range(count)})


def _unsharded() -> tf.data.Options:
    # Patches are drawn at random, so workers of a multi-worker run each draw their own
    # stream (seeded differently) instead of splitting one by file or element.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def segmentation_augmenter(
    config: SegmentationConfig,
) -> Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """The random changes of training patches that ``config`` switches on."""
    return make_augmenter(
        flips=config.augment_flips,
        rotations=config.augment_rotations,
        elastic=config.augment_elastic,
        intensity=config.augment_intensity,
        scale=config.augment_scale,
    )
