"""Where ``dlbio predict`` writes a segmentation: TIFF files or OME-Zarr stores, by suffix.

A path ending in ``.zarr`` becomes an OME-Zarr store written slice by slice (with the
voxel size of the input); any other path a TIFF, as before.  Either way an output is
complete or absent: it is written under a hidden name and renamed at the end, and an
existing one is replaced only with ``--overwrite``, and only then.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import tifffile

from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.io import OutputExistsError, atomic_file, write_labels_tiff_pages
from napari_dlbio.core.zarr_images import is_zarr, open_zarr_image
from napari_dlbio.core.zarr_output import open_zarr_output

#: Writes slice ``z`` of an output (slices arrive in order).
SliceWrite = Callable[[int, np.ndarray], None]

Scale = tuple[tuple[float, float, float], tuple[str, str, str]]


def refuse_existing_outputs(
    outputs: Iterable[Path | None], images: Sequence[str], *, overwrite: bool
) -> None:
    """Before any work: refuse an output that exists (unless ``overwrite``) or is an input.

    Raises
    ------
    OutputExistsError
        An output exists and ``overwrite`` is false.
    InputDataError
        An output is one of the ``--images`` (it would be replaced while it is read).
    """
    inputs = {Path(image).resolve() for image in images}
    for path in outputs:
        if path is None:
            continue
        if path.resolve() in inputs:
            raise InputDataError(
                f"{path} is one of the --images; write the results under another name."
            )
        if (path.exists() or path.is_symlink()) and not overwrite:
            raise OutputExistsError(
                f"{path} already exists and was left as it is. Choose another name, or "
                "give --overwrite to replace it."
            )


def output_scale(images: Sequence[str], pixel_size: tuple[float, ...]) -> Scale:
    """Voxel size and units of the outputs: a zarr input's, else ``--pixel-size``'s.

    Parameters
    ----------
    images : sequence of str
        The ``--images`` paths; only a single zarr store has a voxel size to pass on.
    pixel_size : tuple of float
        ``(Z, Y, X)`` from ``--pixel-size`` (1 where not given).

    Returns
    -------
    tuple
        ``((z, y, x), (z_unit, y_unit, x_unit))``; units are ``""`` where unknown.
    """
    if len(images) == 1 and is_zarr(images[0]):
        image = open_zarr_image(images[0])  # metadata only
        if any(image.units) or image.scale != (1.0, 1.0, 1.0):
            return image.scale, image.units
    z, y, x = (float(size) for size in pixel_size)
    return (z, y, x), ("", "", "")


def write_mask(
    path: Path,
    masks: Iterable[np.ndarray],
    *,
    shape: tuple[int, int, int],
    class_names: tuple[str, ...],
    scale: Scale,
    overwrite: bool,
) -> None:
    """Write the ``uint8`` mask slices (in slice order) as a TIFF or an OME-Zarr store.

    Both reopen in napari-dlbio as a Labels layer with the class names.
    """
    if not _is_zarr_path(path):
        write_labels_tiff_pages(path, masks, shape, class_names=class_names, overwrite=overwrite)
        return
    labels = {"layer_type": "labels", "class_names": list(class_names)}
    with open_zarr_output(
        path,
        shape=shape,
        dtype=np.uint8,
        scale=scale[0],
        units=scale[1],
        metadata=labels,
        overwrite=overwrite,
    ) as store:
        for z, mask in enumerate(masks):
            store.write(z, mask)


@contextmanager
def open_probabilities(
    path: Path,
    *,
    shape: tuple[int, int, int],
    class_names: tuple[str, ...],
    scale: Scale,
    overwrite: bool,
) -> Iterator[SliceWrite]:
    """Open the class probabilities output; yield the function that writes a slice.

    A slice is ``(Y, X, classes)`` float32. A TIFF holds them with axes Z, C, Y, X (napari
    opens one channel per class, Fiji a stack of Z x C planes); an OME-Zarr store with axes
    c, z, y, x and the class names as channel names.
    """
    if _is_zarr_path(path):
        with open_zarr_output(
            path,
            shape=shape,
            dtype=np.float32,
            channels=len(class_names),
            scale=scale[0],
            units=scale[1],
            channel_names=class_names,
            overwrite=overwrite,
        ) as store:
            yield store.write
        return
    with atomic_file(path, overwrite=overwrite) as partial, tifffile.TiffWriter(partial) as tiff:
        yield functools.partial(_write_tiff_probabilities, tiff)


def _write_tiff_probabilities(tiff: tifffile.TiffWriter, z: int, probabilities: np.ndarray) -> None:
    del z  # TIFF pages follow one another: slices arrive in order
    tiff.write(
        np.moveaxis(probabilities, -1, 0),
        contiguous=True,
        photometric="minisblack",
        metadata={"axes": "ZCYX"},
    )


def _is_zarr_path(path: Path) -> bool:
    return path.suffix.lower() == ".zarr"
