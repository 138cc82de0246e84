"""Bring any image into the network's form: a (Z, Y, X[, C]) stack of float32 values.

Percentile normalisation maps the ``low`` percentile of each slice to 0 and the ``high``
percentile to 1, as CSBDeep does, so that uint8, uint16 and float images of different
exposure look alike to the network.  Stacks are handled slice by slice so that the only full
size allocation is the float32 result.
"""

from __future__ import annotations

import math

import numpy as np

from napari_dlbio.core.errors import ConfigError, InputDataError

# Luminance weights of ITU-R BT.709, the same as skimage.color.rgb2gray.
_LUMINANCE = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)

# Percentiles are estimated on at most this many pixels (a strided subsample beyond it):
# accurate to well under 1% of the range, and fast on 10k x 10k slices.
MAX_PERCENTILE_SAMPLES = 1 << 20


def as_stack(image: np.ndarray, rgb: bool | None = None) -> tuple[np.ndarray, str]:
    """View an image as a stack of slices, adding a leading Z axis to 2D images.

    Parameters
    ----------
    image : np.ndarray
        YX, YXC (C = 3 or 4), ZYX or ZYXC array.
    rgb : bool, optional
        Whether the last axis is colour.  ``None`` guesses: a 3D array whose last axis has
        3 or 4 entries is a colour image, otherwise a stack of grey slices.  ``False``
        forces a 3D array to be read as ZYX, ``True`` requires a colour axis.

    Returns
    -------
    tuple
        ``(stack, axes)`` with axes "ZYX" or "ZYXC"; the stack is a view when possible.

    Raises
    ------
    InputDataError
        For arrays that are not 2D, 3D or 4D, or a 3D array without a 3/4 colour axis when
        ``rgb`` is True.
    """
    shape = np.shape(image)
    if len(shape) == 2:
        if rgb:
            raise InputDataError(f"A colour image needs a colour axis; got shape {shape}.")
        return image[np.newaxis], "ZYX"
    if len(shape) == 3:
        colour = shape[-1] in (3, 4)
        if rgb and not colour:
            raise InputDataError(
                f"A colour image needs 3 (RGB) or 4 (RGBA) values on its last axis; got shape "
                f"{shape}. Untick 'RGB' if this is a stack of grey slices."
            )
        if colour and rgb is not False:
            return image[np.newaxis], "ZYXC"
        return image, "ZYX"
    if len(shape) == 4:
        return image, "ZYXC"
    raise InputDataError(
        f"Cannot read an image of shape {shape} as slices: expected (Y, X), (Y, X, colour), "
        "(Z, Y, X) or (Z, Y, X, colour). Split time points or extra channels into separate "
        "images first."
    )


def to_channels(stack: np.ndarray, channels: int) -> np.ndarray:
    """Give a ZYX or ZYXC stack the number of channels a model expects.

    Grey becomes RGB by repetition, RGB becomes grey by luminance, and RGBA loses its
    alpha channel.

    Parameters
    ----------
    stack : np.ndarray
        (Z, Y, X) or (Z, Y, X, C).
    channels : int
        1 or 3 (or the stack's own number of channels).

    Returns
    -------
    np.ndarray
        (Z, Y, X, channels); float32 when converted to grey by luminance, else the
        input dtype.

    Raises
    ------
    InputDataError
        When the channels cannot be converted.
    """
    stack = np.asarray(stack)
    if stack.ndim == 3:
        stack = stack[..., np.newaxis]
    if stack.ndim != 4:
        raise InputDataError(f"Expected a (Z, Y, X[, C]) stack, got shape {stack.shape}.")
    have = stack.shape[-1]
    if have == 4 and channels in (1, 3):
        stack = stack[..., :3]
        have = 3
    if have == channels:
        return stack
    if have == 1 and channels == 3:
        return np.repeat(stack, 3, axis=-1)
    if have == 3 and channels == 1:
        grey = np.empty((*stack.shape[:3], 1), dtype=np.float32)
        for z in range(stack.shape[0]):
            grey[z, ..., 0] = stack[z].astype(np.float32, copy=False) @ _LUMINANCE
        return grey
    raise InputDataError(
        f"The model expects {channels} channel(s) but the image has {have}; use an image "
        "with the channels the model was trained on."
    )


def check_finite(image: np.ndarray, name: str = "image") -> None:
    """Raise when an image holds NaN or infinite values, naming the first bad slice.

    Parameters
    ----------
    image : np.ndarray
        Any array; its first axis is read as slices when it has 3 or more axes.
    name : str
        What to call the image in the message.

    Raises
    ------
    InputDataError
        When a NaN or infinite value is found.
    """
    if np.ndim(image) < 3:
        _check_plane(np.asarray(image), name, "it")
        return
    for z in range(np.shape(image)[0]):
        _check_plane(np.asarray(image[z]), name, f"slice {z}")


def _check_plane(plane: np.ndarray, name: str, where: str) -> None:
    if not np.issubdtype(plane.dtype, np.inexact):
        return
    bad = int(plane.size - np.count_nonzero(np.isfinite(plane)))
    if bad:
        raise InputDataError(
            f"The {name} holds NaN or infinite values ({where}: {bad} pixel(s)). "
            "Replace them (e.g. with 0 or the local mean) or re-export the image without them."
        )


def normalise_percentile(
    stack: np.ndarray,
    low: float = 1.0,
    high: float = 99.8,
    per_slice: bool = True,
) -> np.ndarray:
    """Scale a stack so its ``low`` percentile is 0 and its ``high`` percentile is 1.

    Values outside the percentiles fall below 0 or above 1 (no clipping).  When both
    percentiles coincide (e.g. a mostly empty slice) the full min-max range is used
    instead, and a constant slice becomes all zeros.

    Parameters
    ----------
    stack : np.ndarray
        (Z, Y, X) or (Z, Y, X, C), any real dtype.
    low, high : float
        Percentiles, 0 <= low < high <= 100.
    per_slice : bool
        Compute the percentiles of each slice (True) or of the whole stack (False);
        channels are always scaled separately.

    Returns
    -------
    np.ndarray
        float32 array of the same shape.

    Raises
    ------
    ConfigError
        For impossible percentiles.
    InputDataError
        For a stack of the wrong rank, a non-numeric dtype or non-finite values.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ConfigError(
            f"Normalisation percentiles must satisfy 0 <= low < high <= 100, "
            f"got low={low}, high={high}."
        )
    shape = np.shape(stack)
    if len(shape) not in (3, 4):
        raise InputDataError(f"Expected a (Z, Y, X[, C]) stack, got shape {shape}.")
    dtype = np.dtype(stack.dtype)
    if dtype.kind not in "buif":
        raise InputDataError(f"Cannot normalise an image of type {dtype}; expected numbers.")
    out = np.empty(shape, dtype=np.float32)
    # Stacks are read slice by slice (dask arrays included) and checked as they are read;
    # a NaN in the global sample only gives NaN ranges, and the slice check then reports it.
    ranges = None if per_slice else _ranges(_subsample(stack), low, high)
    for z in range(shape[0]):
        plane = np.asarray(stack[z])
        if plane.dtype == bool:
            plane = plane.view(np.uint8)
        _check_plane(plane, "image", f"slice {z}")
        plane_ranges = _ranges(_subsample(plane[np.newaxis]), low, high) if per_slice else ranges
        _scale(plane, plane_ranges, out[z])
    return out


def _subsample(stack: np.ndarray) -> np.ndarray:
    """A strided (Z, Y, X, C) sample of at most about MAX_PERCENTILE_SAMPLES pixels."""
    z, y, x = np.shape(stack)[:3]
    step = max(1, math.ceil(math.sqrt(z * y * x / MAX_PERCENTILE_SAMPLES)))
    sample = np.stack([np.asarray(stack[i, ::step, ::step]) for i in range(z)])
    if sample.ndim == 3:
        sample = sample[..., np.newaxis]
    return sample.reshape(-1, sample.shape[-1])


def _ranges(sample: np.ndarray, low: float, high: float) -> np.ndarray:
    """(C, 2) offset and scale per channel from a (N, C) sample."""
    sample = sample.astype(np.float64, copy=False)
    p_low, p_high = np.percentile(sample, [low, high], axis=0)
    lo, hi = sample.min(axis=0), sample.max(axis=0)
    coincide = p_high - p_low <= 0
    p_low = np.where(coincide, lo, p_low)
    width = np.where(coincide, hi - lo, p_high - p_low)
    scale = np.divide(1.0, width, out=np.zeros_like(width), where=width > 0)
    return np.stack([p_low, scale], axis=-1)


def _scale(plane: np.ndarray, ranges: np.ndarray, out: np.ndarray) -> None:
    """Write (plane - offset) * scale into ``out`` (float32), channel by channel."""
    if plane.ndim == 2:
        plane = plane[..., np.newaxis]
        out = out[..., np.newaxis]
    for c, (offset, scale) in enumerate(ranges):
        np.subtract(plane[..., c], offset, out=out[..., c], dtype=np.float32, casting="unsafe")
        out[..., c] *= np.float32(scale)
