"""The cover image of a bioimage.io package: the test input beside what the model made of it.

A segmentation model's cover shows the normalised test image and its mask on top; a
classifier's shows the test photo and its class activation map on top.  Pure numpy; the PNG
is written with imageio.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# Each view of the cover is subsampled to at most this many pixels a side.
COVER_SIDE = 256
_OVERLAY = np.array(
    [(255, 0, 255), (0, 255, 255), (255, 255, 0), (0, 255, 0), (255, 128, 0), (0, 128, 255)],
    dtype=np.float32,
)


def display_image(normalised: np.ndarray) -> np.ndarray:
    """A normalised (Y, X, C) image as (Y, X, 3) uint8 for the eye."""
    grey = np.clip(normalised, 0.0, 1.0) * 255
    rgb = np.repeat(grey, 3, axis=-1) if grey.shape[-1] == 1 else grey[..., :3]
    return rgb.astype(np.uint8)


def mask_overlay(normalised: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A normalised (Y, X, C) image with each class of ``mask`` (0 = none) tinted on top."""
    shown = display_image(normalised).astype(np.float32)
    for value in np.unique(mask):
        if value == 0:
            continue
        where = mask == value
        colour = _OVERLAY[(int(value) - 1) % len(_OVERLAY)]
        shown[where] = 0.5 * shown[where] + 0.5 * colour
    return shown.astype(np.uint8)


def heat_overlay(photo: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A photo with its class map on top, black -> red -> yellow as the map rises."""
    cam = np.clip(cam, 0.0, 1.0)[..., np.newaxis]
    heat = np.concatenate(
        [np.minimum(1.0, 2 * cam), np.clip(2 * cam - 1, 0.0, 1.0), np.zeros_like(cam)], -1
    )
    blend = 0.6 * cam
    mixed = (1 - blend) * photo.astype(np.float32) + blend * 255 * heat
    return np.clip(mixed, 0, 255).astype(np.uint8)


def write_cover(path: Path, left: np.ndarray, right: np.ndarray) -> None:
    """Write two RGB views side by side (the 2:1 cover bioimage.io asks for), at most
    :data:`COVER_SIDE` high, as a PNG."""
    import imageio.v3 as iio

    step = max(1, math.ceil(max(left.shape[:2]) / COVER_SIDE))
    cover = np.concatenate([left[::step, ::step], right[::step, ::step]], axis=1)
    iio.imwrite(path, cover, plugin="pillow", extension=".png")
