"""Where a segmentation is unsure: entropy maps and the region a user should check next."""

from __future__ import annotations

import math

import numpy as np
from skimage.util import view_as_blocks

from napari_dlbio.core.errors import InputDataError


def entropy_map(probabilities: np.ndarray) -> np.ndarray:
    """Uncertainty of a (..., K) probability map: entropy divided by log K, in [0, 1]."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    n_classes = probabilities.shape[-1]
    if n_classes < 2:
        return np.zeros(probabilities.shape[:-1], dtype=np.float32)
    clipped = np.clip(probabilities, 1e-7, 1.0)
    entropy = -np.sum(probabilities * np.log(clipped), axis=-1, dtype=np.float32)
    return np.clip(entropy / math.log(n_classes), 0.0, 1.0).astype(np.float32)


def most_uncertain_region(uncertainty: np.ndarray, window: int = 128) -> tuple[int, int, int]:
    """Centre ``(z, y, x)`` of the ``window`` x ``window`` square with the highest mean
    uncertainty, over all slices of a (Z, Y, X) (or (Y, X)) map.

    Squares tile each slice from its top-left corner; an edge narrower than ``window`` is
    left out unless the slice is smaller than one square.

    Raises
    ------
    InputDataError
        For an empty map or one that is not 2D or 3D.
    """
    stack = np.asarray(uncertainty, dtype=np.float32)
    if stack.ndim == 2:
        stack = stack[np.newaxis]
    if stack.ndim != 3 or stack.size == 0:
        raise InputDataError(
            f"An uncertainty map must be a non-empty (Z, Y, X) or (Y, X) array, not {stack.shape}."
        )
    size_y, size_x = (min(window, side) for side in stack.shape[1:])
    rows, cols = stack.shape[1] // size_y, stack.shape[2] // size_x
    cropped = np.ascontiguousarray(stack[:, : rows * size_y, : cols * size_x])
    means = view_as_blocks(cropped, (1, size_y, size_x)).mean(axis=(3, 4, 5))
    z, row, col = np.unravel_index(int(np.argmax(means)), means.shape)
    return int(z), int(row * size_y + size_y // 2), int(col * size_x + size_x // 2)
