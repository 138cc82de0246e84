"""npe2 reader: TIFF stacks, slice folders, zarr stores and class folders -> napari layers.

The reader claims only what it can read: TIFF files, folders of PNG/TIFF slices, OME-Zarr
images and zarr arrays (opened lazily), folders with one sub-folder of images per class,
and empty folders (so that the user hears why nothing opened). Single PNG/JPEG files and
unrelated folders are left to other readers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_dlbio.core.io import (
    TIFF_SUFFIXES,
    is_class_folder,
    is_slice_folder,
    list_class_folder,
    read_class_images,
    read_stack,
)
from napari_dlbio.core.zarr_images import is_zarr, open_zarr_image

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[str | list[str]], list[LayerData]]


def get_reader(path: str | list[str]) -> ReaderFunction | None:
    """Return a reader for ``path`` when napari-dlbio can read it, else None.

    Parameters
    ----------
    path : str or list of str
        What the user opened; only a single path is handled.

    Returns
    -------
    callable or None
        :func:`read_class_folder` for a class folder, :func:`read_zarr_layer` for a zarr
        store, :func:`read_stack_layer` for a TIFF file or a folder of slices, None for
        anything else.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    candidate = Path(path)
    if is_zarr(candidate):
        return read_zarr_layer
    if candidate.is_dir():
        if is_class_folder(candidate):
            return read_class_folder
        if is_slice_folder(candidate) or _is_empty_folder(candidate):
            return read_stack_layer
        return None
    if candidate.suffix.lower() in TIFF_SUFFIXES:
        return read_stack_layer
    return None


def read_stack_layer(path: str | list[str]) -> list[LayerData]:
    """Read a TIFF stack or a folder of slices as one Image (or Labels) layer.

    A TIFF written by napari-dlbio's labels writer comes back as a Labels layer with its
    class names. What the user should know about how the file was read (a TIFF that stores
    its planes as the colour samples of one image) is issued as a warning, which napari
    shows as a notification.

    Parameters
    ----------
    path : str or list of str
        A TIFF file or a folder of PNG/TIFF slices.

    Returns
    -------
    list of LayerData
        One ``(data, kwargs, layer_type)`` tuple.

    Raises
    ------
    InputDataError
        The file or folder cannot be read as a stack (the message says why).
    """
    stack = read_stack(_single(path))
    for note in stack.notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    metadata: dict[str, Any] = {
        "source": str(stack.source),
        "axes": stack.axes,
        "slice_names": list(stack.names),
    }
    name = stack.source.stem if stack.source.is_file() else stack.source.name
    if stack.metadata.get("layer_type") == "labels" and stack.axes == "ZYX":
        metadata["class_names"] = list(stack.metadata.get("class_names", []))
        return [(stack.data, {"name": name, "metadata": metadata}, "labels")]
    colour = _colour_kwargs(stack.axes, stack.data.shape)
    return [(stack.data, {"name": name, "metadata": metadata, **colour}, "image")]


def read_zarr_layer(path: str | list[str]) -> list[LayerData]:
    """Read an OME-Zarr image or a zarr array lazily as one Image (or Labels) layer.

    A pyramid of several resolution levels becomes a multiscale layer; the layer's scale
    (and units, where napari knows them) come from the store's metadata. A mask written by
    ``dlbio predict --out mask.zarr`` comes back as a Labels layer with its class names.

    Parameters
    ----------
    path : str or list of str
        The zarr store.

    Returns
    -------
    list of LayerData
        One ``(data, kwargs, layer_type)`` tuple; ``data`` is a dask array, or a list of
        them (full resolution first) for a pyramid.

    Raises
    ------
    InputDataError
        The store holds no image napari-dlbio can take (the message says why).
    """
    image = open_zarr_image(_single(path))
    levels = list(image.levels)
    kwargs: dict[str, Any] = {
        "name": image.source.name.removesuffix(".zarr").removesuffix(".ome"),
        "scale": image.scale,
        "multiscale": len(levels) > 1,
        "metadata": {
            "source": str(image.source),
            "axes": image.axes,
            "slice_names": [],
            "units": list(image.units),
        },
        **_napari_units(image.units),
    }
    data = levels if len(levels) > 1 else levels[0]
    if image.metadata.get("layer_type") == "labels" and image.axes == "ZYX":
        kwargs["metadata"]["class_names"] = list(image.metadata.get("class_names", []))
        return [(data, kwargs, "labels")]
    # napari would take a last axis of 3 or 4 pixels for colour unless told otherwise.
    colour = _colour_kwargs(image.axes, levels[0].shape) or {"rgb": False}
    return [(data, {**kwargs, **colour}, "image")]


def read_class_folder(path: str | list[str]) -> list[LayerData]:
    """Read a folder with one sub-folder per class as an RGB image stack.

    Parameters
    ----------
    path : str or list of str
        The folder holding the class sub-folders.

    Returns
    -------
    list of LayerData
        One ``(N, H, W, 3)`` Image layer; its metadata holds ``class_names``,
        ``class_indices``, ``paths``, ``skipped`` and ``resized`` (see
        :meth:`napari_dlbio.core.io.ClassImages.as_metadata`).

    Raises
    ------
    InputDataError
        Fewer than two classes have readable images.
    """
    images = read_class_images(list_class_folder(_single(path)))
    kwargs = {"name": images.root.name, "rgb": True, "metadata": images.as_metadata()}
    return [(images.data, kwargs, "image")]


def _colour_kwargs(axes: str, shape: tuple[int, ...]) -> dict[str, Any]:
    if axes != "ZYXC":
        return {}
    if shape[-1] in (3, 4):
        return {"rgb": True}
    # napari shows other channel counts as one greyscale layer per channel.
    return {"channel_axis": 3}


def _napari_units(units: tuple[str, str, str]) -> dict[str, Any]:
    """``units`` for napari when it knows every one of them; nothing otherwise."""
    import pint  # napari's own units library

    if not all(units):
        return {}
    try:
        for unit in units:
            pint.get_application_registry().parse_units(unit)
    except (pint.errors.PintError, ValueError):
        return {}
    return {"units": units}


def _single(path: str | list[str]) -> str:
    return path[0] if isinstance(path, list) else path


def _is_empty_folder(folder: Path) -> bool:
    return not any(entry for entry in folder.iterdir() if not entry.name.startswith("."))
