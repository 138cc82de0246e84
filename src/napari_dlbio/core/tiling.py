"""Tiled prediction: overlapping tiles, smooth blending weights and their weighted average.

A network sees only a tile at a time and is least reliable near a tile's border, so tiles
overlap and each prediction is weighted by a window that is 1 in the tile's interior and
falls smoothly (raised cosine) across the overlap.  Where two tiles overlap by exactly
``overlap`` pixels their windows sum to 1, so the blend moves from one tile to the next
without a step; the weighted average is normalised anyway, so any overlap is handled.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import DTypeLike

from napari_dlbio.core.errors import ConfigError


def _check_tiling(tile: int, overlap: int) -> None:
    if tile < 1:
        raise ConfigError(f"The tile size must be at least 1 pixel, got {tile}.")
    if not 0 <= overlap < tile:
        raise ConfigError(
            f"The tile overlap must be at least 0 and smaller than the tile ({tile}), "
            f"got {overlap}."
        )


def tile_origins(size: int, tile: int, overlap: int) -> list[int]:
    """Start positions of tiles along one axis.

    Tiles advance by ``tile - overlap``; the last one is moved back to end flush with the
    edge (so it may overlap its neighbour by more).  An axis no longer than a tile gets the
    single origin 0.

    Parameters
    ----------
    size : int
        Length of the axis.
    tile : int
        Tile length.
    overlap : int
        Pixels shared by neighbouring tiles, 0 <= overlap < tile.

    Returns
    -------
    list of int
        Increasing origins, the first 0 and the last ``max(size - tile, 0)``.
    """
    _check_tiling(tile, overlap)
    if size <= tile:
        return [0]
    step = tile - overlap
    origins = list(range(0, size - tile, step))
    origins.append(size - tile)
    return origins


def tile_grid(shape_yx: tuple[int, int], tile: int, overlap: int) -> list[tuple[slice, slice]]:
    """Windows (row slice, column slice) of the tiles that cover a YX image.

    An axis shorter than a tile gets one window covering it, which is then smaller than
    the tile: callers pad such tiles (see :func:`pad_to_multiple`).

    Returns
    -------
    list of tuple of slice
        Row-major list of windows; together they cover every pixel.
    """
    height, width = shape_yx
    rows = [slice(y, y + min(tile, height)) for y in tile_origins(height, tile, overlap)]
    cols = [slice(x, x + min(tile, width)) for x in tile_origins(width, tile, overlap)]
    return [(r, c) for r in rows for c in cols]


def _ramp(tile: int, overlap: int) -> np.ndarray:
    weights = np.ones(tile, dtype=np.float64)
    if overlap:
        # Sampled at pixel centres so the values stay strictly inside (0, 1) and a rising
        # ramp plus the mirrored falling one sum to exactly 1.
        rise = 0.5 * (1.0 - np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap))
        weights[:overlap] = np.minimum(weights[:overlap], rise)
        weights[tile - overlap :] = np.minimum(weights[tile - overlap :], rise[::-1])
    return weights


def blending_window(tile: int, overlap: int) -> np.ndarray:
    """Weights of one tile: 1 inside, a raised-cosine ramp across the overlap at each edge.

    Parameters
    ----------
    tile : int
        Tile size (square tiles).
    overlap : int
        Width of the ramp, 0 <= overlap < tile; 0 gives a flat window of ones.

    Returns
    -------
    np.ndarray
        float32 (tile, tile), strictly positive, at most 1.
    """
    _check_tiling(tile, overlap)
    ramp = _ramp(tile, overlap)
    return np.outer(ramp, ramp).astype(np.float32)


class Stitcher:
    """Accumulates weighted tile predictions into the prediction of a whole slice.

    Parameters
    ----------
    shape_yx : tuple of int
        (Y, X) of the slice.
    channels : int
        Values per pixel (e.g. class probabilities).
    dtype : dtype, optional
        Accumulator type; float64 (default) makes the blend of identical tiles exact,
        float32 halves the memory of huge slices.
    """

    def __init__(
        self, shape_yx: tuple[int, int], channels: int, dtype: DTypeLike = np.float64
    ) -> None:
        self.shape_yx = (int(shape_yx[0]), int(shape_yx[1]))
        self.channels = int(channels)
        self._sum = np.zeros((*self.shape_yx, self.channels), dtype=dtype)
        self._weight = np.zeros(self.shape_yx, dtype=dtype)

    def add(self, window: tuple[slice, slice], values: np.ndarray, weights: np.ndarray) -> None:
        """Add the prediction ``values`` (h, w, channels) of a tile with ``weights`` (h, w).

        Raises
        ------
        ValueError
            When the shapes do not match the window or a weight is not positive.
        """
        target = self._weight[window]
        if values.shape != (*target.shape, self.channels) or weights.shape != target.shape:
            raise ValueError(
                f"Tile values {values.shape} and weights {weights.shape} do not fit the "
                f"window of shape {target.shape} with {self.channels} channel(s)."
            )
        if not np.all(weights > 0):
            raise ValueError("Tile weights must be strictly positive.")
        # Multiply in the accumulator's precision: a float32 product would round and
        # break the exact reproduction of identical tiles.
        self._sum[window] += np.multiply(values, weights[..., np.newaxis], dtype=self._sum.dtype)
        self._weight[window] += weights

    def result(self) -> np.ndarray:
        """Weighted average of the tiles, float32 (Y, X, channels).

        Raises
        ------
        ValueError
            When some pixel was covered by no tile.
        """
        if not np.all(self._weight > 0):
            missing = int(np.count_nonzero(self._weight <= 0))
            raise ValueError(f"{missing} pixel(s) were covered by no tile.")
        return (self._sum / self._weight[..., np.newaxis]).astype(np.float32)


def pad_to_multiple(
    image: np.ndarray, multiple: int, minimum: int = 0
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Reflect-pad Y and X so both are at least ``minimum`` and divisible by ``multiple``.

    A U-Net of depth d needs sides divisible by 2**d.  Padding is split evenly between
    both sides of each axis so the image stays centred.

    Parameters
    ----------
    image : np.ndarray
        (Y, X) or (Y, X, C).
    multiple : int
        Required divisor of both sides (>= 1).
    minimum : int
        Smallest side length after padding (e.g. the tile size).

    Returns
    -------
    tuple
        ``(padded, crop)`` where ``padded[crop]`` is the original image.
    """
    if image.ndim not in (2, 3):
        raise ValueError(f"Expected a (Y, X[, C]) image, got shape {image.shape}.")
    widths, crop = padding_to_multiple(image.shape[:2], multiple, minimum)
    widths.extend([(0, 0)] * (image.ndim - 2))
    # numpy reflects repeatedly when the padding is wider than the image.
    padded = np.pad(image, widths, mode="reflect") if any(sum(w) for w in widths) else image
    return padded, crop


def padding_to_multiple(
    shape: tuple[int, int], multiple: int, minimum: int = 0
) -> tuple[list[tuple[int, int]], tuple[slice, slice]]:
    """The padding :func:`pad_to_multiple` adds to a (Y, X) shape, as numpy pad widths,
    and the crop back to the original pixels (computed without touching any pixel)."""
    if multiple < 1:
        raise ConfigError(f"The padding multiple must be at least 1, got {multiple}.")
    widths = []
    crop = []
    for size in shape:
        target = multiple * math.ceil(max(size, minimum, 1) / multiple)
        before = (target - size) // 2
        widths.append((before, target - size - before))
        crop.append(slice(before, before + size))
    return widths, (crop[0], crop[1])
