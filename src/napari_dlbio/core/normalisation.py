"""Bring any image into the network's form: a (Z, Y, X[, C]) stack of float32 values.

Percentile normalisation maps the ``low`` percentile of each slice to 0 and the ``high``
percentile to 1, as CSBDeep does, so that uint8, uint16 and float images of different
exposure look alike to the network.  Stacks are handled slice by slice so that the only full
size allocation is the float32 result.  Channels are never converted between grey and
colour: :func:`fit_channels` refuses an image whose channels the model was not trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from napari_dlbio.core.bioimage_processing import ProcessingStep, apply_steps
from napari_dlbio.core.errors import ConfigError, InputDataError

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


def fit_channels(stack: np.ndarray, channels: int) -> np.ndarray:
    """Give a ZYX or ZYXC stack the channels of a model, refusing images that do not fit.

    A model only sees images of the kind it was trained on: a colour image is never made
    grey for a grey model (a grey EM model would paint membranes on a leaf photo), nor a
    grey one repeated into colour for a colour model.  Two changes lose nothing and are
    made: an alpha channel is dropped (RGBA to RGB), and for a grey model an RGB image
    whose three channels are equal in every slice (a grey image saved as RGB, as some EM
    TIFFs are) is read as the grey image it is.

    Slices are read one at a time, so memory-mapped or dask stacks are never loaded whole;
    to check a stack too large to read twice, call this with its first slice
    (``stack[:1]``) before the work and with each slice as the work reads it.

    Parameters
    ----------
    stack : np.ndarray
        (Z, Y, X) or (Z, Y, X, C), any dtype.
    channels : int
        The model's input channels.

    Returns
    -------
    np.ndarray
        (Z, Y, X, channels), a view of ``stack`` (nothing is copied or converted).

    Raises
    ------
    InputDataError
        When the image's channels are not those of the model, naming both.
    """
    shape = np.shape(stack)
    if len(shape) not in (3, 4):
        raise InputDataError(f"Expected a (Z, Y, X[, C]) stack, got shape {shape}.")
    view = stack[..., np.newaxis] if len(shape) == 3 else stack
    have = view.shape[-1]
    if have == 4 and channels in (1, 3):
        view = view[..., :3]
    if view.shape[-1] == channels:
        return view
    if channels == 1 and view.shape[-1] == 3 and _is_grey(view):
        return view[..., :1]
    raise InputDataError(_channel_mismatch(channels, have))


def image_channels(stack: np.ndarray) -> int:
    """The input channels of a model made for a ZYX or ZYXC stack.

    1 for grey images and for RGB(A) images whose colour channels are equal in every
    slice (grey saved as RGB), 3 for other RGB(A) images (alpha is not used), else the
    stack's channel count.  Slices are read one at a time.

    Parameters
    ----------
    stack : np.ndarray
        (Z, Y, X) or (Z, Y, X, C).

    Returns
    -------
    int
        What :func:`fit_channels` accepts the stack for without complaint.
    """
    shape = np.shape(stack)
    have = shape[-1] if len(shape) == 4 else 1
    if have not in (3, 4):
        return have
    return 1 if _is_grey(stack) else 3


def _is_grey(stack: np.ndarray) -> bool:
    """Whether the red, green and blue of every slice of a (Z, Y, X, C >= 3) stack agree."""
    for z in range(np.shape(stack)[0]):
        plane = np.asarray(stack[z])
        # NaN pixels are reported by the NaN check, not as colour.
        equal_nan = bool(np.issubdtype(plane.dtype, np.inexact))
        red = plane[..., 0]
        for c in (1, 2):
            if not np.array_equal(red, plane[..., c], equal_nan=equal_nan):
                return False
    return True


def _channel_mismatch(model: int, image: int) -> str:
    """The message for a model of ``model`` input channels given an image of ``image``."""
    kinds = {1: "grey images (1 channel)", 3: "colour images (3 channels, RGB)"}
    trained = kinds.get(model, f"images with {model} channels")
    has = {
        1: "the image is grey (1 channel)",
        3: "the image has 3 colour channels (RGB)",
        4: "the image has 3 colour channels and transparency (RGBA)",
    }.get(image, f"the image has {image} channels")
    if model == 1 and image in (3, 4):
        advice = (
            "Use a model trained on colour images, or convert the image to grey first "
            "(Fiji: Image > Type > 8-bit; napari: right-click the layer > Split RGB and keep "
            "one channel)."
        )
    elif model == 3 and image == 1:
        advice = "Use a model trained on grey images, or train one on these images."
    else:
        advice = f"Use a model trained on images like this one, or give it {trained}."
    return f"This model was trained on {trained} but {has}. {advice}"


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


def normalise_input(
    stack: np.ndarray,
    low: float,
    high: float,
    steps: Sequence[ProcessingStep] | None = None,
) -> np.ndarray:
    """Normalise a stack as a model wants it: by percentiles, or by a package's own steps.

    Parameters
    ----------
    stack : np.ndarray
        (Z, Y, X, C), any real dtype.
    low, high : float
        Percentiles of :func:`normalise_percentile`, used when ``steps`` is None.
    steps : sequence of ProcessingStep, optional
        The pre-processing of a model imported from a bioimage.io package (see
        :mod:`napari_dlbio.core.bioimage_processing`), applied slice by slice instead.

    Returns
    -------
    np.ndarray
        float32 array of the same shape.
    """
    if steps is None:
        return normalise_percentile(stack, low, high)
    shape = np.shape(stack)
    if len(shape) != 4:
        raise InputDataError(f"Expected a (Z, Y, X, C) stack, got shape {shape}.")
    out = np.empty(shape, dtype=np.float32)
    for z in range(shape[0]):
        plane = np.asarray(stack[z : z + 1])
        _check_plane(plane, "image", f"slice {z}")
        out[z : z + 1] = apply_steps(plane, steps)
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
