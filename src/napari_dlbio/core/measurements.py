"""The features table of objects: one row per object, columns as numpy arrays.

Sizes are in physical units from the pixel size (``scale``), as napari layers carry it.
Per-slice objects are 2D regions measured within their slice; objects labelled through the
stack are measured as volumes.  Two measures have no plain meaning in some cases and are NaN
there rather than approximate:

- ``perimeter`` when the pixel is not square (y size != x size): scikit-image's estimate
  counts boundary pixels with weights made for square pixels, and scaling that count by any
  single size is off by up to the ratio of the sizes for elongated objects.  Resample the
  image to square pixels to measure it.
- ``perimeter`` and ``eccentricity`` of volumes: they are defined for 2D regions only.

``equivalent_diameter`` is the diameter of the disk (volumes: sphere) of the object's
physical area (volume).  ``solidity`` is the object's area over that of its convex hull, the
same in pixels and in physical units (volumes: voxels taken as cubes, see
:func:`_volume_solidity`).  ``mean_intensity`` is the mean grey value of the object's pixels,
the mean over channels for colour images.

Tables are built slice by slice and written as CSV in pieces (:func:`write_csv` with
``header=False`` after the first), so a stack never needs to be measured in one go.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import TextIO

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull
from skimage.measure import regionprops_table

from napari_dlbio.core.errors import InputDataError

FEATURE_COLUMNS = (
    "label",
    "class",
    "slice",
    "area_pixels",
    "area",
    "perimeter",
    "equivalent_diameter",
    "eccentricity",
    "solidity",
    "mean_intensity",
)

_CUBE_CORNERS = np.array([[z, y, x] for z in (0, 1) for y in (0, 1) for x in (0, 1)])
_INTEGER_COLUMNS = frozenset({"label", "slice", "area_pixels"})
_TEXT_COLUMNS = frozenset({"class"})
# Column name in the table -> property name in scikit-image's regionprops_table.
_PROPERTIES = {
    "label": "label",
    "area_pixels": "num_pixels",
    "area": "area",
    "equivalent_diameter": "equivalent_diameter_area",
    "solidity": "solidity",
    "mean_intensity": "intensity_mean",
}


def measure_objects(
    labels: np.ndarray,
    image: np.ndarray,
    class_name: str,
    scale: Sequence[float] = (1.0, 1.0),
    first_slice: int = 0,
    volumetric: bool = False,
) -> dict[str, np.ndarray]:
    """Measure every object of one class.

    Parameters
    ----------
    labels
        (Y, X) or (Z, Y, X) instance labels, 0 = no object.
    image
        The image the objects come from: the spatial shape of ``labels`` (grey) or that
        shape followed by channels (colour; the intensity is the mean over channels).
    class_name
        Written in the ``class`` column of every row.
    scale
        Pixel size, (y, x) or (z, y, x), in any physical unit; axes left out have size 1.
    first_slice
        Index of ``labels``' first slice in the whole stack (for slice-by-slice work).
    volumetric
        False: one row per object and slice it appears in, measured in 2D.  True: (Z, Y, X)
        labels are objects through the stack, one row each: ``slice`` is the first slice it
        appears in, ``area_pixels`` counts voxels, ``area`` is the volume and
        ``equivalent_diameter`` that of the sphere; ``perimeter`` and ``eccentricity`` NaN.

    Returns
    -------
    dict[str, np.ndarray]
        The :data:`FEATURE_COLUMNS`, each an array with one entry per row (int64 for
        ``label``, ``slice`` and ``area_pixels``, str for ``class``, float64 otherwise).
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputDataError(f"Labels must be (Y, X) or (Z, Y, X), got shape {labels.shape}.")
    if volumetric and labels.ndim != 3:
        raise InputDataError(
            f"Objects through the stack need (Z, Y, X) labels, got shape {labels.shape}."
        )
    grey = _grey(image, labels.shape)
    size = _pixel_size(scale, labels.ndim)
    if volumetric or labels.ndim == 2:
        pieces = [_measure(labels, grey, size, first_slice)]
    else:
        pieces = [
            _measure(labels[z], grey[z], size[1:], first_slice + z) for z in range(labels.shape[0])
        ]
    table = {
        name: np.concatenate([piece[name] for piece in pieces]).astype(_dtype(name))
        for name in FEATURE_COLUMNS
        if name != "class"
    }
    table["class"] = np.full(table["label"].shape, class_name)
    return {name: table[name] for name in FEATURE_COLUMNS}


def write_csv(table: Mapping[str, np.ndarray], file: TextIO, header: bool = True) -> None:
    """Write a table's rows as CSV to an open text file, in the table's column order.

    Call with ``header=False`` to append the rows of further slices.  Floats are written
    with 6 significant digits, NaN as an empty field.  Open the file with ``newline=""``.
    """
    names = list(table)
    columns = [[_text(value) for value in np.asarray(table[name]).tolist()] for name in names]
    if len({len(column) for column in columns}) > 1:
        lengths = ", ".join(f"{name} {len(c)}" for name, c in zip(names, columns, strict=True))
        raise InputDataError(f"The table's columns differ in length ({lengths}).")
    writer = csv.writer(file, lineterminator="\n")
    if header:
        writer.writerow(names)
    writer.writerows(zip(*columns, strict=True))


def csv_text(table: Mapping[str, np.ndarray], header: bool = True) -> str:
    """The CSV text :func:`write_csv` writes."""
    buffer = io.StringIO()
    write_csv(table, buffer, header)
    return buffer.getvalue()


def _measure(
    labels: np.ndarray, grey: np.ndarray, size: tuple[float, ...], first_slice: int
) -> dict[str, np.ndarray]:
    """Columns of one labelled plane (measured in 2D) or volume (measured in 3D)."""
    if not labels.any():
        return {name: np.empty(0) for name in FEATURE_COLUMNS}
    properties = dict(_PROPERTIES)
    extra = ()
    if labels.ndim == 2:
        properties["eccentricity"] = "eccentricity"
        if size[0] == size[1]:
            properties["perimeter"] = "perimeter"
    else:
        properties["solidity"] = "_volume_solidity"
        extra = (_volume_solidity,)
    props = regionprops_table(
        labels,
        grey,
        properties=(*properties.values(), "bbox"),
        spacing=size,
        extra_properties=extra,
    )
    count = props["label"].size
    columns = {name: props[prop] for name, prop in properties.items()}
    for name in ("perimeter", "eccentricity"):
        columns.setdefault(name, np.full(count, np.nan))
    # A plane is one slice; a volume's objects start at their first slice.
    start = props["bbox-0"] if labels.ndim == 3 else np.zeros(count, dtype=np.int64)
    columns["slice"] = start + first_slice
    return columns


def _volume_solidity(region: np.ndarray) -> float:
    """Volume of a 3D region over the volume of its convex hull, voxels taken as cubes.

    scikit-image's solidity takes the hull of voxel centres, which is flat (and fails) for
    objects in one slice, the common case through an EM stack; the hull of the voxels'
    corners never is.  A ratio of volumes, it is the same in voxels and physical units.
    """
    surface = region & ~ndi.binary_erosion(region)
    corners = (np.argwhere(surface)[:, None, :] + _CUBE_CORNERS[None]).reshape(-1, 3)
    return float(region.sum() / ConvexHull(corners).volume)


def _grey(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The image as float64 grey values of ``shape`` (the mean over channels for colour)."""
    image = np.asarray(image)
    if image.shape == shape:
        return image.astype(np.float64)
    if image.ndim == len(shape) + 1 and image.shape[:-1] == shape:
        return image.mean(axis=-1, dtype=np.float64)
    raise InputDataError(
        f"The image has shape {image.shape}; the labels, {shape}, need an image of that "
        "shape (grey) or that shape followed by channels (colour)."
    )


def _pixel_size(scale: Sequence[float], ndim: int) -> tuple[float, ...]:
    """Pixel size for the last ``ndim`` axes; axes ``scale`` leaves out have size 1."""
    values = [float(value) for value in scale]
    if not 2 <= len(values) <= 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise InputDataError(
            f"The pixel size must be 2 or 3 positive numbers, (y, x) or (z, y, x), not {scale}."
        )
    values = [1.0] * (ndim - len(values)) + values
    return tuple(values[-ndim:])


def _dtype(name: str) -> type:
    if name in _INTEGER_COLUMNS:
        return np.int64
    if name in _TEXT_COLUMNS:
        return str
    return np.float64


def _text(value: object) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.6g}"
    return str(value)
