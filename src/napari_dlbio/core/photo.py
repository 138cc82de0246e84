"""One conversion of photos to 8-bit grey or RGB arrays, for every path that reads them.

The napari reader (a class folder as one RGB layer), training and prediction from napari, and
``dlbio train|predict`` all convert pixels with these functions, in the same order: to
``uint8`` first, then to the wanted channels, then resized.  A classifier therefore sees the
same pixels whichever way its images arrived.
"""

from __future__ import annotations

import numpy as np

from napari_dlbio.core.errors import InputDataError

#: ITU-R BT.709 luminance weights of red, green and blue (as scikit-image's ``rgb2gray``).
LUMINANCE = np.array([0.2125, 0.7154, 0.0721])

# Converting works on float64 copies of a whole RGB image: 3 channels x 8 bytes per pixel.
_BYTES_PER_PIXEL = 24


def convert_photo(
    image: np.ndarray, channels: int, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Bring one image to ``uint8`` (:func:`to_uint8`), ``channels`` and optionally a size.

    Parameters
    ----------
    image : numpy.ndarray
        Grey ``(Y, X)``, grey + alpha ``(Y, X, 2)``, RGB ``(Y, X, 3)`` or RGBA
        ``(Y, X, 4)`` of any numeric type.
    channels : int
        1 (grey) or 3 (RGB).
    shape : tuple of int, optional
        ``(height, width)`` to resize to (see :func:`resize_to`); the size is kept when
        None.

    Returns
    -------
    numpy.ndarray
        ``(Y, X, channels)`` ``uint8``.

    Raises
    ------
    InputDataError
        Non-numeric pixels, NaN or infinite values, an unknown layout, or an image too
        large to convert in this computer's memory.
    """
    from napari_dlbio.core.io import physical_memory_bytes  # io imports this module

    image = np.asarray(image)
    memory = physical_memory_bytes()
    pixels = image.shape[0] * image.shape[1] if image.ndim >= 2 else image.size
    if memory is not None and pixels * _BYTES_PER_PIXEL > memory:
        raise _too_large(image.shape)
    try:
        photo = to_channels(to_uint8(image), channels)
        if shape is not None and photo.shape[:2] != tuple(shape):
            photo = resize_to(photo, shape)
    except MemoryError:
        raise _too_large(image.shape) from None
    return photo


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Pixel values as ``uint8`` (0-255), by one rule for every pixel type.

    - ``uint8``: unchanged.
    - ``bool``: False -> 0, True -> 255.
    - ``uint16``: the full 16-bit range maps to 0-255, ``rint(v * 255 / 65535)``.
    - float whose maximum is at most 1 (the usual [0, 1] range): ``rint(v * 255)``,
      negative values become 0.
    - everything else (other integer types such as ``int32``, floats above 1): negative
      values become 0; values are kept (rounded) when the image's maximum is at most 255,
      otherwise scaled so that the maximum becomes 255, ``rint(v * 255 / max)``.

    Parameters
    ----------
    image : numpy.ndarray
        Any shape; integer, boolean or floating-point pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8`` of the same shape (``image`` itself when it already is ``uint8``).

    Raises
    ------
    InputDataError
        Non-numeric pixels, or NaN / infinite values.
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * np.uint8(255)
    if image.dtype.kind not in "uif":
        raise InputDataError(
            f"An image of type {image.dtype} cannot be used; use greyscale or colour images "
            "with integer or floating-point pixels."
        )
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InputDataError(
            "The image holds NaN or infinite values; replace them (e.g. with 0) or "
            "re-export the image without them."
        )
    values = image.astype(np.float64)
    if image.dtype == np.uint16:
        values *= 255.0 / 65535.0
    else:
        np.maximum(values, 0.0, out=values)
        top = float(values.max(initial=0.0))
        if image.dtype.kind == "f" and top <= 1.0:
            values *= 255.0
        elif top > 255.0:
            values *= 255.0 / top
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A ``uint8`` image as ``(Y, X, channels)``: grey (1) or RGB (3).

    Grey is repeated into RGB; the alpha channel of grey + alpha and RGBA images is dropped
    (it carries no class signal in leaf photos or microscopy snapshots); RGB becomes grey by
    its luminance ``0.2125 R + 0.7154 G + 0.0721 B``, rounded.

    Parameters
    ----------
    image : numpy.ndarray
        ``uint8`` (see :func:`to_uint8`): ``(Y, X)``, ``(Y, X, 1)``, ``(Y, X, 2)``,
        ``(Y, X, 3)`` or ``(Y, X, 4)``.
    channels : int
        1 or 3.

    Returns
    -------
    numpy.ndarray
        ``(Y, X, channels)`` ``uint8``.

    Raises
    ------
    InputDataError
        For any other layout.
    """
    if image.ndim == 3 and image.shape[-1] in (1, 2):
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.ndim == 2:
        return np.repeat(image[..., np.newaxis], channels, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise InputDataError(
            f"An image of shape {image.shape} is neither grey (Y, X), RGB (Y, X, 3) "
            "nor RGBA (Y, X, 4); convert it to one of those."
        )
    if channels == 1:
        grey = np.rint(image.astype(np.float64) @ LUMINANCE)
        return np.clip(grey, 0, 255).astype(np.uint8)[..., np.newaxis]
    return image


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a ``(Y, X, C)`` ``uint8`` image to ``shape`` with anti-aliasing.

    Aspect ratios are not kept.  A photo at least four times the target size on both sides
    is first block-averaged by a whole factor, which keeps anti-aliased resizing of very
    large photos fast.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X, C)`` ``uint8``.
    shape : tuple of int
        ``(height, width)`` of the result.

    Returns
    -------
    numpy.ndarray
        ``(height, width, C)`` ``uint8``.
    """
    # scikit-image takes a third of a second to import: only when something is resized.
    from skimage.transform import downscale_local_mean, resize

    height, width = shape
    factor = min(image.shape[0] // (2 * height), image.shape[1] // (2 * width))
    values = downscale_local_mean(image, (factor, factor, 1)) if factor >= 2 else image
    resized = resize(values, (height, width), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


def _too_large(shape: tuple[int, ...]) -> InputDataError:
    return InputDataError(
        f"An image of shape {shape} is too large to convert in memory; crop or downscale it first."
    )
