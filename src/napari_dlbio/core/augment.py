"""Random augmentation of (image patch, annotation patch) pairs for training.

Geometric changes (flips, 90-degree rotations, elastic deformation) move image and
annotation together; intensity changes touch the image only.  The annotation is resampled
with nearest neighbour so it keeps its label values, including 0 = not annotated.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from napari_dlbio.core.errors import ConfigError

# Displacement noise is drawn at about this many samples per sigma: a field this smooth
# needs few samples, and a coarse grid is much cheaper to filter than a full-size one.
_FIELD_SAMPLES_PER_SIGMA = 2.0


def augment_pair(
    image: np.ndarray,
    annotation: np.ndarray,
    rng: np.random.Generator,
    *,
    flips: bool = True,
    rotations: bool = True,
    elastic: bool = True,
    intensity: bool = True,
    elastic_alpha: float = 30.0,
    elastic_sigma: float = 6.0,
    elastic_probability: float = 0.5,
    brightness: float = 0.1,
    contrast: float = 0.2,
    scale: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply random flips, rotations, scaling, elastic deformation and intensity jitter.

    Parameters
    ----------
    image : np.ndarray
        Image patch (P, P, C), normalised (roughly 0..1).
    annotation : np.ndarray
        Annotation patch (P, P).
    rng : np.random.Generator
        Source of randomness (the patch sampler's, for reproducible runs).
    flips, rotations, elastic, intensity : bool
        Which augmentations are on.  Rotations by 90 or 270 degrees are only used on
        square patches, so shapes never change.
    elastic_alpha, elastic_sigma : float
        Strength and smoothness of the elastic deformation (Simard et al. 2003): a random
        field uniform in [-1, 1] is smoothed with a Gaussian of ``elastic_sigma`` pixels
        and scaled by ``elastic_alpha`` pixels.
    elastic_probability : float
        Chance that a patch is deformed at all.
    brightness, contrast : float
        Intensity jitter: the image becomes ``(x - mean) * c + mean + b`` with
        ``c`` in ``1 +- contrast`` and ``b`` in ``+- brightness``.
    scale : float
        Random zoom about the patch centre by a factor drawn log-uniformly from
        ``1 / (1 + scale)`` to ``1 + scale`` (0 = off): structures then appear at other
        sizes, as they do in images of another pixel size (zoomed-out patches reflect at
        their border).

    Returns
    -------
    tuple of np.ndarray
        float32 image (P, P, C) and uint8 annotation (P, P), contiguous.
    """
    if flips:
        if rng.random() < 0.5:
            image, annotation = image[::-1], annotation[::-1]
        if rng.random() < 0.5:
            image, annotation = image[:, ::-1], annotation[:, ::-1]
    if rotations:
        square = image.shape[0] == image.shape[1]
        turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        image = np.rot90(image, turns, axes=(0, 1))
        annotation = np.rot90(annotation, turns, axes=(0, 1))
    image = np.array(image, dtype=np.float32, order="C")  # a fresh copy, safe to modify
    annotation = np.ascontiguousarray(annotation, dtype=np.uint8)
    zoom = float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(scale))) if scale > 0 else 1.0
    deform = elastic and elastic_alpha > 0 and rng.random() < elastic_probability
    if deform or zoom != 1.0:
        alpha = elastic_alpha if deform else 0.0
        image, annotation = _warp(image, annotation, rng, zoom, alpha, elastic_sigma)
    if intensity:
        gain = np.float32(1.0 + rng.uniform(-contrast, contrast))
        offset = np.float32(rng.uniform(-brightness, brightness))
        mean = image.mean(axis=(0, 1), dtype=np.float32)
        image -= mean
        image *= gain
        image += mean + offset
    return image, annotation


def _warp(
    image: np.ndarray,
    annotation: np.ndarray,
    rng: np.random.Generator,
    zoom: float,
    alpha: float,
    sigma: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Zoom about the centre by ``zoom`` and deform elastically (``alpha`` > 0) in one pass."""
    shape = annotation.shape
    rows, cols = (
        (np.arange(size, dtype=np.float32) - (size - 1) / 2) / np.float32(zoom) + (size - 1) / 2
        for size in shape
    )
    rows, cols = np.meshgrid(rows, cols, indexing="ij")
    if alpha > 0:
        rows += _displacement(shape, rng, alpha, sigma)
        cols += _displacement(shape, rng, alpha, sigma)
    coordinates = np.stack([rows, cols])
    warped = np.empty_like(image)
    for c in range(image.shape[-1]):
        ndimage.map_coordinates(
            image[..., c], coordinates, output=warped[..., c], order=1, mode="reflect"
        )
    labels = ndimage.map_coordinates(annotation, coordinates, order=0, mode="reflect")
    return warped, labels


def _displacement(
    shape: tuple[int, ...], rng: np.random.Generator, alpha: float, sigma: float
) -> np.ndarray:
    """Gaussian-smoothed uniform noise times alpha, as in Simard et al. (2003).

    The noise is drawn and smoothed on a grid ``factor`` times coarser than the patch,
    then interpolated linearly, which is exact enough for a field this smooth.  Smoothing
    averages ``factor`` squared times fewer samples on the coarse grid, so the field is
    scaled down by ``factor`` to keep the strength of the full-resolution recipe.  Plain
    indexing is used instead of matrix products, which stall when BLAS threads compete
    with training for the cores.
    """
    factor = max(1, int(sigma / _FIELD_SAMPLES_PER_SIGMA))
    row_index, row_weight = _linear_weights(shape[0], factor)
    col_index, col_weight = _linear_weights(shape[1], factor)
    noise = rng.uniform(-1.0, 1.0, (row_index[-1] + 2, col_index[-1] + 2)).astype(np.float32)
    coarse = ndimage.gaussian_filter(noise, sigma / factor, mode="reflect")
    coarse *= np.float32(alpha / factor)
    rows = coarse[row_index] + (coarse[row_index + 1] - coarse[row_index]) * row_weight
    return rows[:, col_index] + (rows[:, col_index + 1] - rows[:, col_index]) * col_weight.T


@functools.lru_cache(maxsize=16)
def _linear_weights(size: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Coarse sample left of each of ``size`` pixels, and the pixel's weight of the next.

    Returned as read-only (size,) indices and (size, 1) float32 weights, shared through the
    cache.
    """
    position = np.arange(size, dtype=np.float64) / factor
    index = np.floor(position).astype(np.intp)
    weight = (position - index).astype(np.float32)[:, np.newaxis]
    index.setflags(write=False)
    weight.setflags(write=False)
    return index, weight


def make_augmenter(
    **flags: Any,
) -> Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """Bind keyword options of :func:`augment_pair` into an ``augment(image, annotation, rng)``.

    Raises
    ------
    ConfigError
        For an option that :func:`augment_pair` does not have.
    """
    known = {
        name
        for name, parameter in inspect.signature(augment_pair).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(flags) - known)
    if unknown:
        raise ConfigError(
            f"Unknown augmentation option(s): {', '.join(unknown)}. "
            f"Known options: {', '.join(sorted(known))}."
        )
    return functools.partial(augment_pair, **flags)
