"""Images of classes as one uint8 array: loading, resizing, stratified split, class weights.

Every image is decoded and resized once into an ``(N, S, S, C)`` uint8 array (720 leaf
photos at 128 x 128 take 35 MB), so training epochs never touch the disk.  Pixels are
converted by :mod:`napari_dlbio.core.photo` (the napari reader uses the same conversion):
to uint8, to grey or RGB, then resized to a square with anti-aliasing (aspect ratios are
not kept, the same at training and prediction time).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.photo import convert_photo


@dataclass(frozen=True)
class ClassDataset:
    """Images of a class folder at the network's input size.

    Attributes
    ----------
    images
        ``(N, S, S, C)`` uint8.
    class_indices
        ``(N,)`` int64, index into ``class_names``.
    class_names
        Sub-folder names in alphabetical order.
    paths
        The file of each image.
    skipped
        ``(path, reason)`` for every file that could not be used.
    """

    images: np.ndarray
    class_indices: np.ndarray
    class_names: tuple[str, ...]
    paths: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]


def load_class_folder(
    folder: str | Path,
    size: int,
    channels: int = 3,
    *,
    on_progress: Callable[[int, int], object] | None = None,
) -> ClassDataset:
    """Read a folder with one sub-folder per class into a uint8 array of ``size x size``.

    Parameters
    ----------
    folder
        Root folder; each sub-folder is a class (alphabetical order = class index).
    size
        Side length of the square images returned.
    channels
        1 (grey) or 3 (RGB).
    on_progress
        Called with ``(done, total)`` after each file.

    Raises
    ------
    InputDataError
        Fewer than two classes with usable images.
    """
    from napari_dlbio.core.io import list_class_folder

    listing = list_class_folder(folder)
    images, kept, skipped = load_images(listing.paths, size, channels, on_progress=on_progress)
    index_of = {
        path: int(index) for path, index in zip(listing.paths, listing.class_indices, strict=True)
    }
    class_indices = np.array([index_of[path] for path in kept], dtype=np.int64)
    present = np.unique(class_indices)
    if present.size < 2:
        raise InputDataError(
            f"{folder}: fewer than two classes have images that could be read "
            f"({len(skipped)} file(s) skipped); a classifier needs at least two classes."
        )
    return ClassDataset(
        images=images,
        class_indices=class_indices,
        class_names=tuple(listing.class_names),
        paths=tuple(kept),
        skipped=tuple(listing.skipped) + tuple(skipped),
    )


def load_images(
    paths: Iterable[str | Path],
    size: int,
    channels: int = 3,
    *,
    on_progress: Callable[[int, int], object] | None = None,
) -> tuple[np.ndarray, tuple[Path, ...], tuple[tuple[Path, str], ...]]:
    """Read image files into ``(N, size, size, channels)`` uint8, skipping unreadable ones.

    Returns
    -------
    images, kept, skipped
        The array, the path of each of its images, and ``(path, reason)`` per skipped file.
    """
    from napari_dlbio.core.io import read_image

    paths = [Path(path) for path in paths]
    images = np.empty((len(paths), size, size, channels), dtype=np.uint8)
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for done, path in enumerate(paths, start=1):
        try:
            images[len(kept)] = to_input_image(read_image(path), size, channels)
            kept.append(path)
        except InputDataError as error:
            skipped.append((path, str(error)))
        if on_progress is not None:
            on_progress(done, len(paths))
    return images[: len(kept)].copy(), tuple(kept), tuple(skipped)


def to_input_images(
    images: np.ndarray | Sequence[np.ndarray], size: int, channels: int
) -> np.ndarray:
    """Convert a batch of images of any size to ``(N, size, size, channels)`` uint8.

    Parameters
    ----------
    images
        An array whose first axis counts images (``(N, Y, X)`` grey or ``(N, Y, X, C)``),
        or a sequence of single images of possibly different sizes.
    size, channels
        The classifier's input size and channels.
    """
    ready = (
        isinstance(images, np.ndarray)
        and images.dtype == np.uint8
        and images.shape[1:] == (size, size, channels)
    )
    if ready:
        return images
    out = np.empty((len(images), size, size, channels), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = to_input_image(np.asarray(image), size, channels)
    return out


def to_input_image(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """One image as ``(size, size, channels)`` uint8, the way the classifier sees it.

    Parameters
    ----------
    image
        Grey ``(Y, X)`` (or grey + alpha), RGB ``(Y, X, 3)`` or RGBA ``(Y, X, 4)`` of any
        numeric type, brought to 0-255 by :func:`napari_dlbio.core.photo.to_uint8`.
    size
        Side of the square output.
    channels
        1 (grey) or 3 (RGB).

    Raises
    ------
    InputDataError
        For other shapes, non-numeric pixels, NaN / infinite values, or an image too large
        to convert in memory.
    """
    return convert_photo(image, channels, (size, size))


def image_fingerprints(images: np.ndarray | Sequence[np.ndarray]) -> list[str]:
    """A short hash of each image's pixels, as the classifier sees them.

    A model keeps the fingerprints of its training images, so a later prediction can say
    which images it was trained on, whichever path (napari or ``dlbio``) they came by: both
    convert photos the same way (:mod:`napari_dlbio.core.photo`).
    """
    return [
        hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:16] for image in images
    ]


def stratified_split(
    class_indices: np.ndarray, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a training and a validation set with the same class proportions.

    Every class with at least two images gives at least one to each set; a class with a
    single image goes to training.

    Returns
    -------
    train, validation
        Sorted int64 index arrays into ``class_indices``.
    """
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    validation: list[np.ndarray] = []
    for label in np.unique(class_indices):
        members = rng.permutation(np.flatnonzero(class_indices == label))
        n_val = round(validation_fraction * members.size)
        n_val = min(max(n_val, 1), members.size - 1) if members.size >= 2 else 0
        validation.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def class_weights(class_indices: np.ndarray, n_classes: int) -> dict[int, float]:
    """Loss weights ``N / (K * count)`` per class, so every class counts the same.

    Classes without images get weight 0 (they cannot appear in a batch anyway).
    """
    counts = np.bincount(class_indices, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {index: float(weight) for index, weight in enumerate(weights)}


def channel_statistics(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``(N, Y, X, C)``, computed in float64."""
    values = images.reshape(-1, images.shape[-1])
    mean = values.mean(axis=0, dtype=np.float64)
    std = values.std(axis=0, dtype=np.float64)
    return tuple(float(m) for m in mean), tuple(float(max(s, 1e-3)) for s in std)


def skipped_text(skipped: Sequence[tuple[Path, str]], limit: int = 20) -> str:
    """A readable list of skipped files and why, shortened after ``limit`` entries."""
    lines = [f"Skipped {len(skipped)} file(s):"]
    lines.extend(f"  {path}: {reason}" for path, reason in skipped[:limit])
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return "\n".join(lines)
