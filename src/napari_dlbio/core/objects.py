"""From class probabilities to objects: one label per cell or mitochondrion.

A segmentation class has a role.  A *boundary* class (membranes) encloses the objects: cells
are the regions below the boundary, split by a seeded watershed on the smoothed boundary
probability, so that a gap in a membrane does not merge two cells.  An *object* class
(mitochondria) is the objects itself: its connected regions, with touching ones split where
the region narrows.

Measured on ISBI 2012 slices 25-29 (579 cells, 33 mitochondria) with the held-out
built-in models; cells F1 at IoU 0.5 / foreground-restricted V_rand, mitochondria F1:

- Cells, smoothing 2 px and seed threshold 0.15: 0.879 / 0.9815 (em-membranes) and
  0.876 / 0.9773 (em-membranes-mitochondria).  F1 stays at 0.85-0.88 for smoothing 0-3 and
  thresholds 0.05-0.3; V_rand is what moves: 0.975-0.983 around the default (smoothing 1-3,
  thresholds 0.1-0.2), but 0.955 at threshold 0.2 with smoothing 0-1 and 0.88-0.97 at 0.3
  (faint membranes no longer separate seeds: large cells merge), and 0.960-0.971 at 0.05
  with the second model (large cells split).  F1 is capped by the probabilities, not the
  watershed: only about 490 true cells overlap any predicted region at IoU > 0.5 (36 true
  cells are specks under 50 px); the true membranes blurred (sigma 1 px) give 0.96.
- Seeds under :data:`_MIN_SEED_PIXELS` are noise inside one cell: dropping them raises F1
  from 0.841 to 0.879, V_rand unchanged; 50-200 px give 0.879-0.881.
- Regions below the boundary that no seed reaches are cells of their own (a watershed over
  the whole image hands them to a neighbour instead: F1 0.828); regions under
  :data:`_MIN_CELL_PIXELS` are specks in membranes (F1 0.80 keeping them, 0.87-0.88 dropping
  those under 15-60 px).
- Through the stack, ISBI's cells (4 nm pixels, 50 nm sections) overlap other cells of the
  next section: the 5 slices give 22 labels.  ``through_stack`` is for near-isotropic stacks.
- Mitochondria: the predicted mask's specks under :data:`_MIN_OBJECT_PIXELS` are not objects
  (F1 0.436 keeping them, 0.784 dropping those under 100 px, 0.817 at 150-300 px, 0.783 at
  400 px, which loses true mitochondria).  Splitting at necks narrower than
  1/:data:`_NECK_RATIO` of the thinner part gives the same 0.817 as no splitting for ratios
  2.5-4 and keeps all 127 true mitochondria of the 30 ISBI slices whole; ratio 2 cuts one
  bent mitochondrion (0.806), 1.5 three.  An absolute depth of the distance maxima (2-4 px)
  cuts irregular regions (0.795); scikit-image's ``h_maxima`` labelled as markers cuts
  ellipses whose distance ridge has two equal peaks (its output is the peak pixels, not
  their connected plateau), hence :func:`_split_regions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import local_maxima, reconstruction
from skimage.segmentation import expand_labels, watershed

from napari_dlbio.core.errors import ConfigError, InputDataError
from napari_dlbio.core.object_settings import BOUNDARY, OBJECT, ROLES, ObjectSettings

#: A pixel whose boundary probability is at least this is boundary, never part of a cell.
_BOUNDARY_LEVEL = 0.5
#: Seeds with fewer pixels (voxels through the stack) are dropped (module docstring).
_MIN_SEED_PIXELS = 50
#: Cells with fewer pixels are dropped: specks of low probability inside membranes.
_MIN_CELL_PIXELS = 30
#: Objects with fewer pixels are dropped: specks of the predicted mask.
_MIN_OBJECT_PIXELS = 200
#: Two parts of a region are split where the neck is narrower than 1/ratio of the thinner.
_NECK_RATIO = 3.0
_MAX_LABEL = int(np.iinfo(np.uint32).max)


def cells_from_boundary(
    probability: np.ndarray, settings: ObjectSettings, first_label: int = 1
) -> np.ndarray:
    """Cells enclosed by a boundary class: a seeded watershed on its smoothed probability.

    Parameters
    ----------
    probability
        (Y, X) or (Z, Y, X) boundary probability in [0, 1].
    settings
        Smoothing, seed threshold, and whether a stack is cut per slice or through it.
    first_label
        Label of the first cell; per slice, each slice's labels follow the previous one's.
        To stream a stack slice by slice, pass :func:`next_first_label` of the last result.

    Returns
    -------
    np.ndarray
        uint32 labels of the input's shape, consecutive from ``first_label``; 0 where the
        boundary probability is 0.5 or more (a cell is its interior) and in dropped specks.
    """
    probability = np.asarray(probability, dtype=np.float32)
    _check_spatial(probability, "A boundary probability")
    return _label_stack(lambda part: _cells(part, settings), probability, settings, first_label)


def objects_from_mask(
    mask: np.ndarray, settings: ObjectSettings, first_label: int = 1
) -> np.ndarray:
    """Objects of an object class: its connected regions, touching ones split at necks.

    Parameters
    ----------
    mask
        (Y, X) or (Z, Y, X), True on the pixels of the class.
    settings
        Only ``through_stack`` applies: per slice or 3D objects.
    first_label
        As in :func:`cells_from_boundary`.

    Returns
    -------
    np.ndarray
        uint32 labels of the input's shape, consecutive from ``first_label``; 0 outside the
        mask and in specks under 200 pixels.
    """
    mask = np.asarray(mask, dtype=bool)
    _check_spatial(mask, "An object mask")
    return _label_stack(_split_regions, mask, settings, first_label)


def next_first_label(labels: np.ndarray, first_label: int = 1) -> int:
    """The ``first_label`` that makes the next slice's labels follow ``labels``."""
    return max(int(first_label), int(np.max(labels, initial=0)) + 1)


def fill_boundaries(labels: np.ndarray) -> np.ndarray:
    """Give every 0 pixel the label of its nearest object, slice by slice.

    This is the full partition that foreground-restricted Rand scores compare (the ISBI 2012
    challenge thinned its borders the same way).  Slices without objects stay 0.
    """
    labels = np.asarray(labels)
    _check_spatial(labels, "Labels")
    if labels.size == 0:
        return labels.copy()
    planes = labels[np.newaxis] if labels.ndim == 2 else labels
    distance = float(sum(labels.shape[-2:]))
    filled = np.stack([expand_labels(plane, distance) for plane in planes])
    return filled.reshape(labels.shape)


def instances(
    probabilities: np.ndarray, roles: Mapping[int, str], settings: ObjectSettings
) -> dict[int, np.ndarray]:
    """Objects of every class that has a role.

    Parameters
    ----------
    probabilities
        (Y, X, K) or (Z, Y, X, K) class probabilities, background first.
    roles
        Class index (1..K-1) to :data:`BOUNDARY` or :data:`OBJECT`; classes left out get
        no objects.
    settings
        As in :func:`cells_from_boundary`.

    Returns
    -------
    dict[int, np.ndarray]
        Class index to uint32 labels of shape (Y, X) or (Z, Y, X).  A boundary class is cut
        from its probability, an object class from the mask the user sees (the most probable
        class is k).
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim not in (3, 4):
        raise InputDataError(
            "Class probabilities must be (Y, X, classes) or (Z, Y, X, classes), "
            f"got shape {probabilities.shape}."
        )
    n_classes = probabilities.shape[-1]
    for index, role in roles.items():
        if role not in ROLES:
            raise ConfigError(
                f"Class {index} has the role {role!r}; a role is {BOUNDARY!r} or {OBJECT!r}."
            )
        if not 1 <= index < n_classes:
            raise InputDataError(
                f"Class {index} has a role, but the probabilities have classes 1 to "
                f"{n_classes - 1} besides background (0)."
            )
    predicted = None
    result: dict[int, np.ndarray] = {}
    for index, role in roles.items():
        if role == BOUNDARY:
            result[index] = cells_from_boundary(probabilities[..., index], settings)
        else:
            if predicted is None:
                predicted = np.argmax(probabilities, axis=-1)
            result[index] = objects_from_mask(predicted == index, settings)
    return result


def _check_spatial(array: np.ndarray, what: str) -> None:
    if array.ndim not in (2, 3):
        raise InputDataError(f"{what} must be (Y, X) or (Z, Y, X), got shape {array.shape}.")


def _label_stack(
    cut: Callable[[np.ndarray], np.ndarray],
    array: np.ndarray,
    settings: ObjectSettings,
    first_label: int,
) -> np.ndarray:
    """Run ``cut`` (labels from 1) on the whole array or per slice; offset to ``first_label``."""
    if first_label < 1:
        raise InputDataError(f"The first label must be 1 or more, not {first_label}.")
    if array.size == 0:
        return np.zeros(array.shape, dtype=np.uint32)
    if array.ndim == 2 or settings.through_stack:
        return _offset(cut(array), first_label)
    labels = np.zeros(array.shape, dtype=np.uint32)
    for z, plane in enumerate(array):
        labels[z] = _offset(cut(plane), first_label)
        first_label = next_first_label(labels[z], first_label)
    return labels


def _offset(labels: np.ndarray, first_label: int) -> np.ndarray:
    count = int(labels.max(initial=0))
    if first_label - 1 + count > _MAX_LABEL:
        raise InputDataError(
            f"Labels from {first_label} would pass {_MAX_LABEL}, the largest uint32 label."
        )
    labels = labels.astype(np.uint32)
    labels[labels > 0] += np.uint32(first_label - 1)
    return labels


def _cells(probability: np.ndarray, settings: ObjectSettings) -> np.ndarray:
    """Cells from 1 of one slice, or of a stack cut through (smoothing in-plane only)."""
    smoothed = probability
    if settings.smoothing > 0:
        sigma = [0.0] * (probability.ndim - 2) + [settings.smoothing] * 2
        smoothed = ndi.gaussian_filter(probability, sigma)
    inside = probability < _BOUNDARY_LEVEL
    seeds, _ = ndi.label(inside & (smoothed < settings.seed_threshold))
    seeds = _drop_small(seeds, _MIN_SEED_PIXELS)
    labels = watershed(smoothed, seeds, mask=inside)
    unseeded, _ = ndi.label(inside & (labels == 0))
    labels[unseeded > 0] = unseeded[unseeded > 0] + labels.max(initial=0)
    return _consecutive(_drop_small(labels, _MIN_CELL_PIXELS))


def _split_regions(mask: np.ndarray) -> np.ndarray:
    """Connected regions from 1, split where they narrow to a neck (module docstring).

    The distance to the region's edge is measured within each slice, the image border
    counting as edge, so a region cut by the border is split as it is seen.  A maximum of
    that distance seeds its own object when every path to a higher maximum passes a neck
    under 1/:data:`_NECK_RATIO` of its own width: on the log of the distance, that is a
    maximum of dynamic ``log(ratio)``, found as the plateaus of the h-maxima transform.
    """
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
    distance = np.stack(
        [ndi.distance_transform_edt(plane) for plane in padded.reshape(-1, *padded.shape[-2:])]
    ).reshape(padded.shape)[..., 1:-1, 1:-1]
    height = np.where(mask, np.log(np.maximum(distance, 1.0)), -1.0)
    flattened = reconstruction(height - np.log(_NECK_RATIO), height, method="dilation")
    peaks = local_maxima(flattened, allow_borders=True) & mask
    regions, n_regions = ndi.label(mask)
    # Plateaus join diagonally (distance ridges run diagonally); keep each within a region.
    plateaus, _ = ndi.label(peaks, structure=np.ones((3,) * mask.ndim))
    key = np.where(peaks, plateaus.astype(np.int64) * (n_regions + 1) + regions, 0)
    markers = np.unique(key, return_inverse=True)[1].reshape(mask.shape)
    unmarked = np.ones(n_regions + 1, dtype=bool)
    unmarked[regions[peaks]] = False
    unmarked[0] = False
    extra = unmarked[regions]
    markers[extra] = regions[extra] + markers.max(initial=0)
    labels = watershed(-distance, markers, mask=mask)
    return _consecutive(_drop_small(labels, _MIN_OBJECT_PIXELS))


def _drop_small(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Set labels with fewer than ``min_pixels`` pixels to 0 (in place)."""
    sizes = np.bincount(labels.ravel(), minlength=1)
    small = sizes < min_pixels
    small[0] = False
    labels[small[labels]] = 0
    return labels


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 1..n in the order of their values (0 stays 0)."""
    present = np.unique(labels)
    present = present[present > 0]
    lookup = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.uint32)
    lookup[present] = np.arange(1, present.size + 1, dtype=np.uint32)
    return lookup[labels]
