"""Training patches from annotated stacks: sampling, validation hold-out and class weights.

Annotations may be sparse scribbles on a few slices of a large stack, so patches are not
drawn uniformly: a class is picked first (uniformly among the annotated classes, which
balances rare and common classes), then an annotated pixel of that class, and the patch is
centred on that pixel with some jitter.  Every patch therefore holds annotated pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from napari_dlbio.core.errors import ConfigError, InputDataError

Augmenter = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]

# Pixel coordinates kept per class; beyond this a strided subsample is kept (32 MiB each),
# which still covers a fully annotated 30 x 512 x 512 stack at every other pixel.
MAX_COORDINATES_PER_CLASS = 1 << 22


class PatchSampler:
    """Draws random (image patch, annotation patch) pairs centred on annotated pixels.

    Parameters
    ----------
    images : np.ndarray
        Normalised images (Z, Y, X, C) (or (Z, Y, X) for one channel); patches are
        returned as float32.
    annotations : np.ndarray
        Annotation (Z, Y, X): 0 = not annotated, 1 = background, k = class k-1.
    patch_size : int
        Side P of the square patches.
    seed : int
        Seed of the sampler's random generator (also passed to ``augment``).
    augment : callable, optional
        ``augment(image, annotation, rng) -> (image, annotation)`` applied to each patch.
    slices : sequence of int, optional
        Slices to sample from (e.g. the training slices of :func:`split_validation`);
        all slices by default.
    centres : np.ndarray, optional
        Boolean (Z, Y, X) mask of the annotated pixels patches may be centred on (e.g. the
        latest corrections); the patches still carry every annotation around them.

    Raises
    ------
    InputDataError
        When shapes do not match or the chosen slices hold no annotated pixel.
    """

    def __init__(
        self,
        images: np.ndarray,
        annotations: np.ndarray,
        patch_size: int,
        seed: int = 0,
        augment: Augmenter | None = None,
        slices: Sequence[int] | None = None,
        centres: np.ndarray | None = None,
    ) -> None:
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if images.ndim != 4 or annotations.ndim != 3 or images.shape[:3] != annotations.shape:
            raise InputDataError(
                f"Images {images.shape} and annotations {annotations.shape} do not match; "
                "expected images (Z, Y, X, C) and annotations (Z, Y, X) of the same stack."
            )
        if patch_size < 1:
            raise ConfigError(f"The patch size must be at least 1, got {patch_size}.")
        n_slices = annotations.shape[0]
        chosen = list(range(n_slices)) if slices is None else [int(z) for z in slices]
        outside = [z for z in chosen if not 0 <= z < n_slices]
        if outside:
            raise InputDataError(f"Slices {outside} do not exist; the stack has {n_slices}.")
        self.images = images
        self.annotations = annotations
        self.patch_size = int(patch_size)
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        if centres is not None and np.shape(centres) != annotations.shape:
            raise InputDataError(
                f"The centre mask {np.shape(centres)} does not match the annotations "
                f"{annotations.shape}."
            )
        where = annotations if centres is None else np.where(centres, annotations, np.uint8(0))
        self._coordinates = _class_coordinates(where, sorted(set(chosen)))
        if not self._coordinates:
            raise InputDataError(
                "The training slices hold no annotated pixel: paint at least a few strokes "
                "of each class."
            )
        self._values = np.array(sorted(self._coordinates), dtype=np.int64)

    @property
    def annotation_values(self) -> list[int]:
        """Annotation values (class index + 1) that patches are centred on."""
        return self._values.tolist()

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """Draw one patch.

        Returns
        -------
        tuple of np.ndarray
            float32 image (P, P, C) and uint8 annotation (P, P).
        """
        value = int(self._values[self.rng.integers(self._values.size)])
        candidates = self._coordinates[value]
        flat = int(candidates[self.rng.integers(candidates.size)])
        z, y, x = np.unravel_index(flat, self.annotations.shape)
        (rows, row_pad), (cols, col_pad) = (
            self._window(int(centre), size)
            for centre, size in zip((y, x), self.annotations.shape[1:], strict=True)
        )
        image = np.asarray(self.images[z, rows, cols], dtype=np.float32)
        annotation = np.asarray(self.annotations[z, rows, cols], dtype=np.uint8)
        if any(row_pad) or any(col_pad):
            image = np.pad(image, (row_pad, col_pad, (0, 0)), mode="reflect")
            annotation = np.pad(annotation, (row_pad, col_pad), mode="constant")
        if self.augment is not None:
            image, annotation = self.augment(image, annotation, self.rng)
        return (
            np.ascontiguousarray(image, dtype=np.float32),
            np.ascontiguousarray(annotation, dtype=np.uint8),
        )

    def sample_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``batch_size`` patches: float32 (B, P, P, C) and uint8 (B, P, P)."""
        pairs = [self.sample() for _ in range(batch_size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def _window(self, centre: int, size: int) -> tuple[slice, tuple[int, int]]:
        """Slice of one axis around ``centre`` and the padding that brings it to P."""
        p = self.patch_size
        if size < p:
            # Random placement of the short axis inside the patch is free augmentation.
            before = int(self.rng.integers(p - size + 1))
            return slice(0, size), (before, p - size - before)
        # A jitter of at most P/4 keeps the chosen pixel inside the patch even after the
        # window is clamped to the image.
        jitter = p // 4
        start = centre - p // 2 + int(self.rng.integers(-jitter, jitter + 1))
        start = min(max(start, 0), size - p)
        return slice(start, start + p), (0, 0)


def random_crops(
    images: np.ndarray, patch_size: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` crops of P x P taken anywhere in the stack, annotated or not.

    ``images`` are (Z, Y, X, C) (or (Z, Y, X)); axes shorter than P are padded by
    reflection.  Returns float32 (count, P, P, C).
    """
    if images.ndim == 3:
        images = images[..., np.newaxis]
    z_size, y_size, x_size = images.shape[:3]
    crops = []
    for _ in range(count):
        z = int(rng.integers(z_size))
        y, x = (int(rng.integers(max(size - patch_size, 0) + 1)) for size in (y_size, x_size))
        crop = np.asarray(images[z, y : y + patch_size, x : x + patch_size], dtype=np.float32)
        missing = [(0, patch_size - size) for size in crop.shape[:2]]
        if any(after for _, after in missing):
            crop = np.pad(crop, (*missing, (0, 0)), mode="reflect")
        crops.append(crop)
    return np.stack(crops)


def _class_coordinates(annotations: np.ndarray, slices: list[int]) -> dict[int, np.ndarray]:
    """Flat (Z, Y, X) indices of the annotated pixels of each annotation value."""
    plane_size = math.prod(annotations.shape[1:])
    counts = np.zeros(256, dtype=np.int64)
    for z in slices:
        counts += np.bincount(_as_values(annotations[z]).reshape(-1), minlength=256)
    strides = {
        v: max(1, math.ceil(int(counts[v]) / MAX_COORDINATES_PER_CLASS))
        for v in np.flatnonzero(counts[1:]) + 1
    }
    collected: dict[int, list[np.ndarray]] = {int(v): [] for v in strides}
    seen = dict.fromkeys(collected, 0)
    for z in slices:
        plane = _as_values(annotations[z]).reshape(-1)
        index = np.flatnonzero(plane)
        values = plane[index]
        for v in np.unique(values):
            v = int(v)
            found = index[values == v]
            # A global stride over the stack: continue where the previous slice stopped.
            start = (-seen[v]) % strides[v]
            seen[v] += found.size
            collected[v].append(found[start :: strides[v]].astype(np.int64) + z * plane_size)
    return {v: np.concatenate(parts) for v, parts in collected.items() if parts}


def _as_values(plane: np.ndarray) -> np.ndarray:
    plane = np.asarray(plane)
    if plane.dtype != np.uint8:
        if plane.size and (plane.min() < 0 or plane.max() > 255):
            raise InputDataError(
                f"Annotations must hold values 0..255, got {plane.min()}..{plane.max()}."
            )
        plane = plane.astype(np.uint8)
    return plane


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(
            f"The validation fraction must be at least 0 and below 1, got {fraction}."
        )


def annotated_slices(annotations: np.ndarray) -> list[int]:
    """Indices of the slices that hold at least one annotated pixel."""
    return [z for z in range(annotations.shape[0]) if np.any(annotations[z])]


def split_validation(
    annotations: np.ndarray, fraction: float, seed: int = 0
) -> tuple[list[int], list[int]]:
    """Split the annotated slices into training and validation slices.

    Rule: with two or more annotated slices, ``round(fraction * n)`` of them (at least one
    when ``fraction > 0``, never all) are drawn at random for validation.  With a single
    annotated slice nothing can be held out by slice: it returns ``([z], [])`` and
    :func:`validation_mask` should hold out a band of its pixels instead.

    Parameters
    ----------
    annotations : np.ndarray
        Annotation (Z, Y, X).
    fraction : float
        Share of annotated slices for validation, 0 <= fraction < 1.
    seed : int
        Seed of the random draw.

    Returns
    -------
    tuple of list of int
        ``(train_slices, validation_slices)``, each sorted; unannotated slices are in
        neither.

    Raises
    ------
    InputDataError
        When no slice is annotated.
    """
    _check_fraction(fraction)
    annotated = annotated_slices(annotations)
    if not annotated:
        raise InputDataError(
            "Nothing is annotated yet: paint at least a few strokes of each class."
        )
    if len(annotated) < 2 or fraction == 0:
        return annotated, []
    n_validation = min(max(1, round(fraction * len(annotated))), len(annotated) - 1)
    rng = np.random.default_rng(seed)
    validation = sorted(int(z) for z in rng.choice(annotated, n_validation, replace=False))
    train = [z for z in annotated if z not in validation]
    return train, validation


def validation_mask(annotations: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Hold out a band of rows holding about ``fraction`` of each slice's annotated pixels.

    Meant for a single annotated slice, where :func:`split_validation` cannot hold out a
    slice.  In every annotated slice, a band of whole rows is chosen at a random height so
    that it holds about ``fraction`` of that slice's annotated pixels (at least one row).
    When all of a slice's annotated pixels lie in one row, nothing of it is held out, so
    training always keeps pixels.

    Parameters
    ----------
    annotations : np.ndarray
        Annotation (Z, Y, X).
    fraction : float
        Share of annotated pixels to hold out, 0 <= fraction < 1.
    seed : int
        Seed of the band positions.

    Returns
    -------
    np.ndarray
        Boolean (Z, Y, X), True on the annotated pixels held out for validation.
    """
    _check_fraction(fraction)
    mask = np.zeros(annotations.shape, dtype=bool)
    if fraction == 0:
        return mask
    rng = np.random.default_rng(seed)
    for z in annotated_slices(annotations):
        annotated = np.asarray(annotations[z]) > 0
        per_row = annotated.sum(axis=1)
        total = int(per_row.sum())
        start_rank = rng.uniform(0.0, 1.0 - fraction) * total
        end_rank = start_rank + fraction * total
        ends = np.cumsum(per_row)
        middles = ends - per_row / 2.0
        band = (per_row > 0) & (middles >= start_rank) & (middles < end_rank)
        if not band.any():
            band[int(np.searchsorted(ends, start_rank, side="right"))] = True
        if int(per_row[band].sum()) == total:
            continue
        mask[z] = annotated & band[:, np.newaxis]
    return mask


def hold_out(annotations: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split an annotation by a validation mask into training and validation annotations.

    Returns
    -------
    tuple of np.ndarray
        ``(train, validation)``: copies of ``annotations`` set to 0 (not annotated)
        inside and outside ``mask`` respectively.
    """
    zero = np.zeros((), dtype=annotations.dtype)
    return np.where(mask, zero, annotations), np.where(mask, annotations, zero)


def class_pixel_counts(annotations: np.ndarray, n_classes: int) -> np.ndarray:
    """Annotated pixels of each class index (annotation value - 1).

    Returns
    -------
    np.ndarray
        int64 (n_classes,).

    Raises
    ------
    InputDataError
        When an annotation value exceeds ``n_classes``.
    """
    counts = np.zeros(256, dtype=np.int64)
    for z in range(annotations.shape[0]):
        counts += np.bincount(_as_values(annotations[z]).reshape(-1), minlength=256)
    too_high = np.flatnonzero(counts[n_classes + 1 :])
    if too_high.size:
        raise InputDataError(
            f"The annotation holds value {int(too_high[-1]) + n_classes + 1} but there are "
            f"only {n_classes} classes (labels 1..{n_classes})."
        )
    return counts[1 : n_classes + 1].copy()


def class_weights_from_counts(counts: np.ndarray, max_weight: float = 50.0) -> np.ndarray:
    """Median-frequency balancing weights for a weighted cross-entropy.

    The weight of class c is ``median(f) / f_c`` where ``f`` are the pixel frequencies of
    the classes present, so the median class weighs 1 and rarer classes more.  Classes
    with no pixel get weight 1 (they do not occur in the loss, and 1 is neutral should
    they occur in validation).  Weights are capped at ``max_weight`` so that a class
    painted with a handful of pixels cannot dominate the loss.

    Parameters
    ----------
    counts : np.ndarray
        Pixels per class index (see :func:`class_pixel_counts`).
    max_weight : float
        Largest weight returned.

    Returns
    -------
    np.ndarray
        float32 (K,), finite and positive.
    """
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.ones(counts.shape, dtype=np.float64)
    present = counts > 0
    if present.any():
        frequency = counts[present] / counts[present].sum()
        weights[present] = np.median(frequency) / frequency
    return np.minimum(weights, max_weight).astype(np.float32)
