"""Read image stacks, single images and class folders; write label masks safely.

Pure numpy / tifffile / imageio: this module is shared by the napari reader and writer,
the CLI and the engines. Every problem with a user's file becomes an
:class:`~napari_dlbio.core.errors.InputDataError` (or :class:`OutputExistsError` /
:class:`WriteError` when writing) whose message names the file, says what is wrong and
what to do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imageio.v3 as iio
import numpy as np
import tifffile

from napari_dlbio.core.errors import DlbioError, InputDataError
from napari_dlbio.core.photo import convert_photo, resize_to
from napari_dlbio.core.zarr_images import is_zarr, open_zarr_image

if TYPE_CHECKING:
    import dask.array as da

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
SLICE_SUFFIXES = frozenset({".png", *TIFF_SUFFIXES})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".bmp", *SLICE_SUFFIXES})

#: Uncompressed TIFFs bigger than this are memory-mapped instead of read into memory.
MEMMAP_THRESHOLD_BYTES = 64 * 2**20

#: Marker written into the ImageDescription of label TIFFs so the reader can reopen them
#: as a Labels layer.
LABELS_MARKER = "napari-dlbio labels"

# Decoders report broken files through many exception types (Pillow even raises
# SyntaxError for a broken PNG); all of them mean "this file cannot be decoded".
_DECODE_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    IndexError,
    RuntimeError,
    SyntaxError,
    MemoryError,
    struct.error,
    zlib.error,
)

# Substrings of tifffile's logged errors that mean pages or pixel data are missing.
_TIFF_DAMAGE_MARKERS = (
    "invalid page offset",
    "invalid next page",
    "failed to reshape",
    "missing data offset",
    "missing data ByteCounts",
    "missing ByteCounts",
)

_SUPPORTED_LAYOUT = (
    "napari-dlbio reads 2D images and 3D stacks (Z, Y, X), optionally with colour "
    "channels last; save each time point or channel as its own stack"
)

_SAVE_AS_SLICES = (
    "in Python tifffile.imwrite(path, stack, photometric='minisblack'); in Fiji "
    "Image > Type > RGB Stack (8-bit colour) or Image > Hyperstacks > Re-order Hyperstack "
    "(channels to slices), then File > Save As > Tiff"
)


class OutputExistsError(DlbioError, FileExistsError):
    """Writing would replace an existing file or a non-empty folder."""


class WriteError(DlbioError, OSError):
    """Writing failed (no space, no permission ...); nothing was left behind."""


@dataclass(frozen=True)
class ImageStack:
    """A stack of 2D slices read from a TIFF file, a folder of slices or a zarr store.

    Attributes
    ----------
    data : numpy.ndarray or dask.array.Array
        ``(Z, Y, X)`` or ``(Z, Y, X, C)`` in the file's dtype; may be a read-only
        ``numpy.memmap`` for big uncompressed TIFFs, and is a lazy dask array (the full
        resolution) for a zarr store.
    axes : str
        ``"ZYX"`` or ``"ZYXC"``.
    source : pathlib.Path
        The file or folder that was read.
    names : tuple of str
        Slice file names, in stack order, for a folder; ``()`` for a single file.
    metadata : mapping
        What napari-dlbio stored in the file when it wrote it (for example
        ``{"layer_type": "labels", "class_names": [...]}``); empty otherwise.
    colour_planes : int
        3 or 4 when the file is a TIFF whose only page stores that many planes as the
        colour samples of one image, one plane after the other (planar configuration):
        how tifffile saves a ``(3, Y, X)`` or ``(4, Y, X)`` array unless told otherwise, so
        the planes may really be slices. 0 otherwise.
    notes : tuple of str
        What the user should know about how the file was read (for example that such
        planes were read as colour, and how to save them as slices instead).
    """

    data: np.ndarray | da.Array
    axes: str
    source: Path
    names: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    colour_planes: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClassFolder:
    """The image files of a folder with one sub-folder per class (listing, no decoding).

    Attributes
    ----------
    root : pathlib.Path
        The folder that holds the class sub-folders.
    class_names : tuple of str
        Names of the non-empty class sub-folders, sorted alphabetically; the position
        is the class index (the order Keras ``image_dataset_from_directory`` uses).
    paths : tuple of pathlib.Path
        Every image file, grouped by class and naturally sorted within a class.
    class_indices : numpy.ndarray
        ``int64`` class index of each path.
    skipped : tuple of (pathlib.Path, str)
        Files and folders that were left out, each with the reason.
    """

    root: Path
    class_names: tuple[str, ...]
    paths: tuple[Path, ...]
    class_indices: np.ndarray
    skipped: tuple[tuple[Path, str], ...]


@dataclass(frozen=True)
class ClassImages:
    """Decoded images of a class folder as one RGB stack.

    Attributes
    ----------
    data : numpy.ndarray
        ``(N, H, W, 3)`` ``uint8``.
    class_names : tuple of str
        Class names; the position is the class index.
    class_indices : numpy.ndarray
        ``int64`` class index of each image.
    paths : tuple of pathlib.Path
        The file of each image.
    skipped : tuple of (pathlib.Path, str)
        Files left out while listing or decoding, each with the reason.
    resized : tuple of (pathlib.Path, (int, int))
        Images resized to the common size, each with its original ``(H, W)``.
    root : pathlib.Path
        The class folder.
    """

    data: np.ndarray
    class_names: tuple[str, ...]
    class_indices: np.ndarray
    paths: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]
    resized: tuple[tuple[Path, tuple[int, int]], ...]
    root: Path

    def as_metadata(self) -> dict[str, Any]:
        """JSON-friendly description for a napari layer's ``metadata``.

        Returns
        -------
        dict
            ``class_names``, ``class_indices``, ``paths``, ``skipped`` (``[path, reason]``
            pairs), ``resized`` (``[path, [H, W]]`` pairs of the original sizes),
            ``image_size`` and ``source``.
        """
        return {
            "source": str(self.root),
            "class_names": list(self.class_names),
            "class_indices": [int(i) for i in self.class_indices],
            "paths": [str(p) for p in self.paths],
            "skipped": [[str(p), reason] for p, reason in self.skipped],
            "resized": [[str(p), list(size)] for p, size in self.resized],
            "image_size": list(self.data.shape[1:3]),
        }


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value, so ``2.png`` comes before ``10.png``.

    Parameters
    ----------
    name : str
        A file name.

    Returns
    -------
    list
        Alternating lower-case text and integer parts.
    """
    # re.split with a capture group alternates text, number, text ..., so parts at the
    # same position always have the same type and compare without TypeError.
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(re.split(r"(\d+)", name))]


def is_slice_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder of PNG/TIFF slices (and not a class folder).

    Parameters
    ----------
    path : str or pathlib.Path
        Any path.

    Returns
    -------
    bool
        True for a folder that directly holds at least one PNG or TIFF file and does not
        look like a class folder.
    """
    folder = Path(path)
    if not folder.is_dir() or is_class_folder(folder):
        return False
    return any(_visible_files(folder, SLICE_SUFFIXES))


def is_class_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with at least two sub-folders that hold images.

    Parameters
    ----------
    path : str or pathlib.Path
        Any path.

    Returns
    -------
    bool
        True when at least two visible sub-folders directly contain an image file.
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    with_images = 0
    for sub in _visible_entries(folder):
        if sub.is_dir() and any(_visible_files(sub, IMAGE_SUFFIXES)):
            with_images += 1
            if with_images == 2:
                return True
    return False


def read_image(path: str | Path) -> np.ndarray:
    """Read one 2D image file.

    Parameters
    ----------
    path : str or pathlib.Path
        A PNG, JPEG, BMP or single-page TIFF file.

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` greyscale, ``(Y, X, 2)`` greyscale + alpha, ``(Y, X, 3)`` RGB or
        ``(Y, X, 4)`` RGBA, in the file's dtype.

    Raises
    ------
    InputDataError
        The file is missing, empty, not an image, corrupt, or holds more than one 2D image.
    """
    path = Path(path)
    _check_readable_file(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputDataError(
            f"{path} is not an image file napari-dlbio can read (supported: "
            f"{_suffix_list(IMAGE_SUFFIXES)})."
        )
    if path.suffix.lower() in TIFF_SUFFIXES:
        stack = _read_tiff_stack(path)
        if len(stack.data) > 1:
            raise InputDataError(
                f"{path} holds {len(stack.data)} images (a stack), not a single 2D image. "
                "Open it as a stack instead."
            )
        image = np.asarray(stack.data[0])
    else:
        try:
            # Pillow decodes every non-TIFF format we accept; naming it stops imageio from
            # trying unrelated plugins (DICOM, FFmpeg ...) on a broken file.
            image = np.asarray(iio.imread(path, index=0, plugin="pillow"))
        except _DECODE_ERRORS as error:
            raise InputDataError(
                f"Cannot read {path}: the file is damaged or not a valid "
                f"{path.suffix.lstrip('.').upper()} image ({error}). Re-export or replace it."
            ) from error
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (2, 3, 4)):
        return image
    raise InputDataError(
        f"{path} holds an array of shape {image.shape}; napari-dlbio reads greyscale, RGB "
        "and RGBA images."
    )


def read_stack(path: str | Path) -> ImageStack:
    """Read a TIFF stack, a folder of 2D slices, one 2D image or a zarr store as a stack.

    Parameters
    ----------
    path : str or pathlib.Path
        A (multi-page) TIFF file, a single 2D image file, a folder of PNG/TIFF slices
        (sorted naturally: ``2.png`` before ``10.png``), or an OME-Zarr image / zarr
        array (opened lazily: see :func:`~napari_dlbio.core.zarr_images.open_zarr_image`).

    Returns
    -------
    ImageStack
        ``(Z, Y, X)`` or ``(Z, Y, X, C)`` data in the file's dtype. A TIFF whose only page
        stores 3 or 4 planes as colour samples is one RGB(A) image (a photo may be saved
        so); its ``notes`` say how to save the planes as slices if they are slices.

    Raises
    ------
    InputDataError
        Missing, empty, corrupt or non-image input; an empty folder; slices of different
        sizes; or data with more dimensions than ``Z, Y, X, C``.
    """
    path = Path(path)
    if is_zarr(path):
        image = open_zarr_image(path)
        return ImageStack(image.levels[0], image.axes, path, (), image.metadata)
    if path.is_dir():
        return _read_slice_folder(path)
    _check_readable_file(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        return _read_tiff_stack(path)
    image = read_image(path)
    axes = "ZYXC" if image.ndim == 3 else "ZYX"
    return ImageStack(image[np.newaxis], axes, path, ())


def read_label_stack(path: str | Path) -> ImageStack:
    """Read labels (one class value per pixel) as a ``(Z, Y, X)`` stack.

    Labels are never colour, so a TIFF whose only page stores 3 or 4 planes as colour
    samples (how tifffile saves a 3- or 4-slice array unless told otherwise) is read as 3
    or 4 slices; its ``notes`` say so and how to save the file as slices.

    Parameters
    ----------
    path : str or pathlib.Path
        As for :func:`read_stack`.

    Returns
    -------
    ImageStack
        ``(Z, Y, X)`` data in the file's dtype, axes ``"ZYX"``.

    Raises
    ------
    InputDataError
        As :func:`read_stack`, and for labels with colour channels.
    """
    stack = read_stack(path)
    if stack.colour_planes:
        planes = stack.colour_planes
        note = (
            f"{stack.source} stores its {planes} planes as the colour samples of one image; "
            f"labels are never colour, so they are read as {planes} slices. To save them "
            f"as {planes} slices: {_SAVE_AS_SLICES}."
        )
        data = np.moveaxis(stack.data[0], -1, 0)
        return replace(stack, data=data, axes="ZYX", notes=(note,))
    if stack.axes != "ZYX":
        raise InputDataError(
            f"{stack.source} has colour channels; labels must be single-channel images "
            "(one class value per pixel)."
        )
    return stack


def list_class_folder(path: str | Path) -> ClassFolder:
    """List the image files of a folder with one sub-folder per class.

    Image files are found by extension (PNG, JPEG, TIFF, BMP; any case), also in nested
    folders of a class. Non-image files in class folders, images outside any class
    sub-folder and class folders without images are listed in ``skipped``; hidden entries
    and other top-level files (a README, a manifest) are ignored.

    Parameters
    ----------
    path : str or pathlib.Path
        The folder that holds the class sub-folders.

    Returns
    -------
    ClassFolder
        The listing; nothing is decoded.

    Raises
    ------
    InputDataError
        ``path`` is not a folder, or fewer than two class sub-folders hold images.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputDataError(
            f"{root} is not a folder. Choose the folder that holds one sub-folder per class."
        )
    skipped: list[tuple[Path, str]] = []
    class_names: list[str] = []
    paths: list[Path] = []
    indices: list[int] = []
    for entry in sorted(_visible_entries(root), key=lambda p: p.name):
        if entry.is_file():
            if entry.suffix.lower() in IMAGE_SUFFIXES:
                skipped.append((entry, "image is not inside a class sub-folder"))
            continue
        if not entry.is_dir():
            continue
        images: list[Path] = []
        for file in _walk_files(entry):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                images.append(file)
            else:
                skipped.append((file, f"not an image file (extension '{file.suffix}')"))
        if not images:
            skipped.append((entry, "class folder contains no images"))
            continue
        indices.extend([len(class_names)] * len(images))
        class_names.append(entry.name)
        paths.extend(images)
    if len(class_names) < 2:
        raise InputDataError(
            f"{root} needs at least two classes: found {len(class_names)} sub-folder(s) "
            f"with images ({', '.join(class_names) or 'none'}). Put the images of each "
            "class into its own sub-folder."
        )
    return ClassFolder(
        root, tuple(class_names), tuple(paths), np.asarray(indices, np.int64), tuple(skipped)
    )


def read_class_images(folder: ClassFolder) -> ClassImages:
    """Decode the images of a class folder into one RGB ``uint8`` stack.

    Files that cannot be decoded are skipped (with the reason). Pixels are converted as
    for the classifier (:func:`napari_dlbio.core.photo.convert_photo`: to ``uint8``, grey
    to RGB, alpha dropped), and images whose size differs from the most common size are
    resized to it, since these are photographs and one napari layer holds one size (see
    :func:`reread_resized_photos` for giving them to a network).

    Parameters
    ----------
    folder : ClassFolder
        A listing from :func:`list_class_folder`.

    Returns
    -------
    ClassImages
        The stack with its class indices, paths, skipped and resized files.

    Raises
    ------
    InputDataError
        Fewer than two classes still have an image after decoding.
    """
    skipped = list(folder.skipped)
    images: list[np.ndarray] = []
    kept_paths: list[Path] = []
    kept_indices: list[int] = []
    for file, index in zip(folder.paths, folder.class_indices, strict=True):
        try:
            images.append(convert_photo(read_image(file), 3))
        except InputDataError as error:
            skipped.append((file, str(error)))
            continue
        kept_paths.append(file)
        kept_indices.append(int(index))
    if len(set(kept_indices)) < 2:
        raise InputDataError(
            f"{folder.root} needs at least two classes with readable images; "
            f"{len(skipped)} file(s) could not be used (see the skipped list)."
        )
    size = Counter(image.shape[:2] for image in images).most_common(1)[0][0]
    resized: list[tuple[Path, tuple[int, int]]] = []
    for i, image in enumerate(images):
        if image.shape[:2] != size:
            resized.append((kept_paths[i], (image.shape[0], image.shape[1])))
            images[i] = resize_to(image, size)
    return ClassImages(
        data=np.stack(images),
        class_names=folder.class_names,
        class_indices=np.asarray(kept_indices, np.int64),
        paths=tuple(kept_paths),
        skipped=tuple(skipped),
        resized=tuple(resized),
        root=folder.root,
    )


def reread_resized_photos(
    images: np.ndarray, metadata: Mapping[str, Any], first: int = 0
) -> np.ndarray | list[np.ndarray]:
    """Images of a class stack, with every photo the reader resized read again from its file.

    :func:`read_class_images` resizes photos whose size differs from the folder's most
    common size so that all fit in one napari layer. A network must see each photo resized
    once, from its own pixels, as ``dlbio train|predict`` give it
    (:func:`~napari_dlbio.core.class_dataset.load_images`): this replaces each resized photo
    by its file, converted as the reader converts it but at its own size. It reads files, so
    call it from a worker, not from napari's GUI thread.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, H, W, 3)`` images of the stack, starting at stack index ``first``.
    metadata : mapping
        The stack's layer metadata (:meth:`ClassImages.as_metadata`). For any other image
        layer (no ``resized`` list) ``images`` is returned as it is.
    first : int, optional
        Stack index of ``images[0]``, when ``images`` is a part of the stack.

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray
        ``images`` itself when none of them was resized; otherwise a list of the images in
        which each resized photo is its file's ``(H0, W0, 3)`` ``uint8`` pixels.

    Raises
    ------
    InputDataError
        A resized photo's file cannot be read any more, or its size has changed since the
        folder was opened.
    """
    originals = {Path(path): tuple(size) for path, size in metadata.get("resized", ())}
    paths = [Path(path) for path in metadata.get("paths", ())][first : first + len(images)]
    positions = [i for i, path in enumerate(paths) if path in originals]
    if not positions:
        return images
    photos = list(images)
    for i in positions:
        photos[i] = _reread_photo(paths[i], originals[paths[i]])
    return photos


def _reread_photo(path: Path, size: tuple[int, ...]) -> np.ndarray:
    try:
        photo = convert_photo(read_image(path), 3)
    except InputDataError as error:
        raise InputDataError(
            f"{path} was resized to fit the stack when its folder was opened, and its own "
            f"pixels cannot be read again ({error}). Put the file back or reopen the folder."
        ) from error
    if photo.shape[:2] != size:
        raise InputDataError(
            f"{path} has changed since its folder was opened (it was {size[1]}x{size[0]} "
            f"pixels, now {photo.shape[1]}x{photo.shape[0]}). Reopen the folder."
        )
    return photo


def write_labels_tiff(
    path: str | Path, labels: np.ndarray, *, class_names: tuple[str, ...] = ()
) -> Path:
    """Write a label mask as a zlib-compressed TIFF (one page per slice), never overwriting.

    The file is written under a temporary name in the same folder and renamed at the
    end, so a failed write leaves nothing behind.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.tif`` / ``.tiff`` file to create.
    labels : numpy.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` non-negative integer labels.
    class_names : tuple of str, optional
        Stored in the file so napari-dlbio can show them when it reopens the mask.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    OutputExistsError
        ``path`` already exists.
    InputDataError
        ``labels`` is not a 2D/3D array of non-negative integers.
    """
    path = Path(path)
    data = _labels_for_writing(labels, max_dtype=np.uint32, target=path)
    return _write_labels(path, data, class_names=class_names)


def write_labels_tiff_pages(
    path: str | Path,
    pages: Iterable[np.ndarray],
    shape: tuple[int, int, int],
    *,
    class_names: tuple[str, ...] = (),
    overwrite: bool = False,
) -> Path:
    """Write uint8 label slices one at a time, as :func:`write_labels_tiff` writes a stack.

    Only one slice is in memory at a time, so masks of volumes larger than memory can be
    written while they are predicted.  An error raised by ``pages`` leaves nothing behind.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.tif`` / ``.tiff`` file to create.
    pages : iterable of numpy.ndarray
        ``shape[0]`` uint8 arrays of ``shape[1:]``.
    shape : tuple of int
        ``(Z, Y, X)`` of the whole mask.
    class_names : tuple of str, optional
        Stored in the file so napari-dlbio can show them when it reopens the mask.
    overwrite : bool, optional
        Replace an existing ``path`` (once the new file is complete) instead of refusing.
    """
    return _write_labels(
        Path(path), pages, shape=shape, class_names=class_names, overwrite=overwrite
    )


def _write_labels(
    path: Path,
    data: np.ndarray | Iterable[np.ndarray],
    *,
    class_names: tuple[str, ...],
    shape: tuple[int, ...] | None = None,
    overwrite: bool = False,
) -> Path:
    if not overwrite:
        refuse_existing_file(path)
    description = json.dumps({"layer_type": LABELS_MARKER, "class_names": list(class_names)})
    with atomic_file(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(
            tmp,
            data,
            shape=shape,
            dtype=None if shape is None else np.uint8,
            compression="zlib",
            photometric="minisblack",
            description=description,
            metadata=None,
        )
    return path


def write_labels_pngs(folder: str | Path, labels: np.ndarray) -> list[Path]:
    """Write a label mask as one lossless PNG per slice into a new folder.

    Slices are named ``<folder name>_0000.png``, ``<folder name>_0001.png`` ... The
    slices are written into a temporary folder that is renamed at the end, so a failed
    write leaves nothing behind.

    Parameters
    ----------
    folder : str or pathlib.Path
        The folder to create; it may exist only if it is empty.
    labels : numpy.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` integer labels from 0 to 65535.

    Returns
    -------
    list of pathlib.Path
        The written slice files, in slice order.

    Raises
    ------
    OutputExistsError
        ``folder`` is a file or a folder that is not empty.
    InputDataError
        ``labels`` is not a 2D/3D array of integers from 0 to 65535.
    """
    folder = Path(folder)
    data = _labels_for_writing(labels, max_dtype=np.uint16, target=folder)
    if data.ndim == 2:
        data = data[np.newaxis]
    refuse_occupied_folder(folder, "the PNG slices")
    width = max(4, len(str(len(data) - 1)))
    names = [f"{folder.name}_{z:0{width}d}.png" for z in range(len(data))]
    tmp = partial_path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        for name, plane in zip(names, data, strict=True):
            iio.imwrite(tmp / name, plane, plugin="pillow", extension=".png")
        if folder.is_dir():
            folder.rmdir()  # empty (checked above); a rename cannot replace it everywhere
        os.rename(tmp, folder)
    except DlbioError:
        raise
    except OSError as error:
        raise write_failed(folder, error) from error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [folder / name for name in names]


def _read_tiff_stack(path: Path) -> ImageStack:
    tiff = _load_tiff(path, allow_memmap=True)
    data, axes = _squeeze(tiff.data, tiff.axes)
    data, axes = _to_stack_axes(data, axes, path)
    notes: tuple[str, ...] = ()
    if tiff.colour_planes:
        planes = tiff.colour_planes
        notes = (
            f"{path} stores its {planes} planes as the colour samples of one image, so it "
            f"is read as one {'RGB' if planes == 3 else 'RGBA'} image. If the planes are "
            f"slices of a stack, save them as {planes} slices instead: {_SAVE_AS_SLICES}.",
        )
    metadata = _dlbio_metadata(tiff.description)
    return ImageStack(data, axes, path, (), metadata, tiff.colour_planes, notes)


@dataclass(frozen=True)
class _Tiff:
    """The first series of a TIFF file."""

    data: np.ndarray
    axes: str  # tifffile's axes
    description: str  # of the first page
    colour_planes: int  # see ImageStack.colour_planes


def _load_tiff(path: Path, *, allow_memmap: bool) -> _Tiff:
    try:
        with _tifffile_errors() as problems, tifffile.TiffFile(path) as tif:
            _check_complete(tif, path)
            if not tif.series:
                raise ValueError("no image pages found")
            series = tif.series[0]
            page = tif.pages.first
            data = _memmap_or_none(path, series) if allow_memmap else None
            if data is None:
                _check_fits_in_memory(series, path)
                data = series.asarray()
            if problems:
                raise ValueError(problems[0])
            planar = (
                len(tif.pages) == 1
                and page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
                and page.samplesperpixel in (3, 4)
            )
            planes = page.samplesperpixel if planar else 0
            return _Tiff(data, series.axes, page.description, planes)
    except InputDataError:
        raise
    except _DECODE_ERRORS as error:
        raise InputDataError(
            f"Cannot read {path}: the file is damaged or not a valid TIFF ({error}). "
            "Re-export it from the acquisition software or Fiji."
        ) from error


@contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    """Collect the structural errors tifffile logs instead of raising.

    tifffile recovers from a truncated file by returning fewer pages; for a user that is a
    silently wrong stack, so such a logged error is treated as a damaged file. Errors about
    vendor metadata (OME, Philips ...) are not: tifffile falls back to plain pages then.
    """
    problems: list[str] = []
    handler = _ListHandler(problems)
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield problems
    finally:
        logger.removeHandler(handler)


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(level=logging.ERROR)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if any(marker in message for marker in _TIFF_DAMAGE_MARKERS):
            self._sink.append(message)


def _check_complete(tif: tifffile.TiffFile, path: Path) -> None:
    size = path.stat().st_size
    for page in tif.pages:
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            if offset + count > size:
                raise ValueError(f"the file ends before the data of page {page.index}")


def _check_fits_in_memory(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Refuse a series that cannot be decoded into memory, before allocating it.

    A damaged or hostile header can claim terabytes of pixels in a file of a few bytes;
    numpy would then fail with a bare MemoryError, or worse, start filling the memory.
    """
    needed = int(series.size) * np.dtype(series.dtype).itemsize
    available = physical_memory_bytes()
    if available is not None and needed > available:
        shape = " x ".join(str(n) for n in series.shape)
        raise InputDataError(
            f"{path} holds {shape} pixels of {np.dtype(series.dtype)} "
            f"({_byte_text(needed)}), more than this computer's memory "
            f"({_byte_text(available)}). If the file is real, save it uncompressed (it is then "
            "read from disk as needed) or crop it; otherwise its header is damaged."
        )


def physical_memory_bytes() -> int | None:
    """The computer's memory in bytes, or None where the system does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not available on this platform
        return None


def _byte_text(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    size = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _memmap_or_none(path: Path, series: tifffile.TiffPageSeries) -> np.ndarray | None:
    if path.stat().st_size < MEMMAP_THRESHOLD_BYTES or series.dataoffset is None:
        return None
    # dataoffset is only set when the series is uncompressed and contiguous on disk.
    return np.memmap(
        path, dtype=series.dtype, mode="r", offset=series.dataoffset, shape=series.shape
    )


def _read_slice_folder(folder: Path) -> ImageStack:
    files = sorted(_visible_files(folder, SLICE_SUFFIXES), key=lambda p: natural_key(p.name))
    if not files:
        raise InputDataError(
            f"{folder} contains no PNG or TIFF slices. Choose a folder with one image "
            "file per slice (for example 0.png, 1.png, ...)."
        )
    slices = []
    for file in files:
        image = read_image(file)
        if slices and image.shape != slices[0].shape:
            raise InputDataError(
                f"{file} is {_shape_text(image.shape)} but {files[0].name} is "
                f"{_shape_text(slices[0].shape)}: all slices of a stack in {folder} must "
                "have the same size and channels. Crop or re-export the odd slices."
            )
        slices.append(image)
    data = np.stack(slices)
    axes = "ZYXC" if data.ndim == 4 else "ZYX"
    return ImageStack(data, axes, folder, tuple(f.name for f in files))


def _squeeze(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Drop length-1 axes except Y and X."""
    keep = [
        i for i, (ax, n) in enumerate(zip(axes, data.shape, strict=True)) if n > 1 or ax in "YX"
    ]
    shape = tuple(data.shape[i] for i in keep)
    return data.reshape(shape), "".join(axes[i] for i in keep)


def _to_stack_axes(data: np.ndarray, axes: str, path: Path) -> tuple[np.ndarray, str]:
    """Bring tifffile axes to ``ZYX`` / ``ZYXC``; reject anything with more dimensions."""
    if data.dtype.kind not in "uifb":
        raise InputDataError(
            f"{path} holds {data.dtype} pixels; napari-dlbio reads integer or float images."
        )
    # tifffile calls interleaved colour samples "S" and ImageJ/OME channels "C".
    channel = next((i for i, ax in enumerate(axes) if ax in "SC"), None)
    if channel is not None:
        data = np.moveaxis(data, channel, -1)
        axes = axes[:channel] + axes[channel + 1 :] + "C"
    spatial = axes.removesuffix("C")
    if not spatial.endswith("YX") or len(spatial) > 3 or axes.count("C") > 1:
        raise InputDataError(
            f"{path} has {data.ndim} dimensions (axes {axes}, shape {data.shape}): "
            f"{_SUPPORTED_LAYOUT}."
        )
    if len(spatial) == 2:
        data = data[np.newaxis]
    return data, "ZYX" + axes[len(spatial) :]


def _dlbio_metadata(description: str) -> dict[str, Any]:
    try:
        meta = json.loads(description)
    except ValueError:
        return {}
    if isinstance(meta, dict) and meta.get("layer_type") == LABELS_MARKER:
        names = meta.get("class_names", [])
        # The description is text anyone can edit: keep the names only if they are names.
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            names = []
        return {"layer_type": "labels", "class_names": names}
    return {}


def _labels_for_writing(labels: np.ndarray, *, max_dtype: type, target: Path) -> np.ndarray:
    data = np.asarray(labels)
    if data.ndim not in (2, 3):
        raise InputDataError(
            f"Cannot write {target}: labels have shape {data.shape}; only 2D (Y, X) or "
            "3D (Z, Y, X) labels can be saved."
        )
    if data.dtype == bool:
        return data.astype(np.uint8)
    if data.dtype.kind not in "ui":
        raise InputDataError(
            f"Cannot write {target}: labels must be integers, not {data.dtype}. "
            "Convert the layer to Labels first."
        )
    if data.dtype.kind == "u" and data.dtype.itemsize <= np.dtype(max_dtype).itemsize:
        return data
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    limit = int(np.iinfo(max_dtype).max)
    if low < 0 or high > limit:
        raise InputDataError(
            f"Cannot write {target}: label values range from {low} to {high}, but this "
            f"format holds 0 to {limit}. Relabel the layer or save it as TIFF."
        )
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return data.astype(dtype)
    return data.astype(max_dtype)


def refuse_existing_file(path: Path) -> None:
    """Raise :class:`OutputExistsError` when ``path`` exists: nothing is overwritten."""
    if path.exists():
        raise OutputExistsError(
            f"{path} already exists; napari-dlbio does not overwrite files. Choose a new "
            "name or move the old file away."
        )


def refuse_occupied_folder(path: Path, what: str) -> None:
    """Raise :class:`OutputExistsError` when ``path`` is a file or a non-empty folder.

    An empty folder (one just made in a folder dialog) may be written into.

    Parameters
    ----------
    path : pathlib.Path
        The folder to write.
    what : str
        What would be written, for the message (e.g. ``"the PNG slices"``).
    """
    if path.exists() and not path.is_dir():
        raise OutputExistsError(
            f"{path} is a file, and {what} are written into a folder of their own: choose "
            "a new folder name (the file is left as it is)."
        )
    if path.is_dir() and any(path.iterdir()):
        raise OutputExistsError(
            f"{path} already exists and is not empty; napari-dlbio does not overwrite it. "
            "Choose a new folder name or move the old one away."
        )


@contextmanager
def atomic_file(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    With ``overwrite`` an existing ``path`` is replaced, only then.

    Raises
    ------
    OutputExistsError
        ``path`` appeared while the block ran (unless ``overwrite``).
    WriteError
        The folder cannot be created or written (no space, no permission, a file in the
        way); the temporary file is removed and ``path`` is not created.
    """
    tmp = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if not overwrite:
            # Checked again right before the rename: the write may have taken a while.
            refuse_existing_file(path)
        os.replace(tmp, path)
    except DlbioError:
        raise
    except OSError as error:
        raise write_failed(path, error) from error
    finally:
        with suppress(OSError):  # e.g. the folder itself could not be made
            tmp.unlink(missing_ok=True)


def write_failed(path: Path, error: OSError) -> WriteError:
    """The :class:`WriteError` to raise when writing ``path`` failed with ``error``."""
    reason = error.strerror or str(error) or type(error).__name__
    return WriteError(
        f"Could not write {path}: {reason}. Nothing was written; free some disk space, "
        "check that you may write there, or choose another place."
    )


def partial_path(path: Path) -> Path:
    """A hidden, unique sibling of ``path`` to write into before it is renamed to ``path``."""
    # A random hidden name rather than tempfile.mkstemp/mkdtemp: those create private
    # (0600/0700) entries, and the rename would keep the result unreadable to colleagues.
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise InputDataError(f"{path} does not exist. Check the path and try again.")
    if not path.is_file():
        raise InputDataError(f"{path} is not a file.")
    if path.stat().st_size == 0:
        raise InputDataError(f"{path} is empty (0 bytes); the copy or export failed.")
    if not os.access(path, os.R_OK):
        raise InputDataError(
            f"{path} cannot be read: permission denied. Ask the owner of the file for read "
            "access, or copy it somewhere you can read it."
        )


def _visible_entries(folder: Path) -> Iterator[Path]:
    for entry in folder.iterdir():
        if not entry.name.startswith("."):
            yield entry


def _visible_files(folder: Path, suffixes: frozenset[str]) -> Iterator[Path]:
    for entry in _visible_entries(folder):
        if entry.suffix.lower() in suffixes and entry.is_file():
            yield entry


def _walk_files(folder: Path) -> list[Path]:
    """Visible files under ``folder`` (nested folders included), naturally sorted."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    return sorted(found, key=lambda p: natural_key(str(p.relative_to(folder))))


def _shape_text(shape: tuple[int, ...]) -> str:
    text = f"{shape[1]}x{shape[0]} pixels"
    return text + (f" with {shape[2]} channels" if len(shape) == 3 else "")


def _suffix_list(suffixes: frozenset[str]) -> str:
    return ", ".join(sorted(s.lstrip(".").upper() for s in suffixes))
