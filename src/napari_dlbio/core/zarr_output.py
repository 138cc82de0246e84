"""Write a stack as an OME-Zarr image slice by slice, complete or not at all.

The store is OME-Zarr 0.4 (zarr v2), the version every OME-Zarr viewer reads today
(napari-ome-zarr, Fiji/BigDataViewer, QuPath, neuroglancer, webKnossos); 0.5 needs zarr v3
readers that many of them lack.  The metadata is written by ome-zarr-py.

Layout and why:

- Each chunk holds (part of) one slice, so writing slice ``z`` touches only the chunks of
  slice ``z``: slices may be written from several threads, in any order, without two
  writers ever sharing a chunk.  A viewer showing one slice reads only that slice.
- Slices are cut into chunks of at most :data:`MAX_CHUNK_SIDE` pixels a side (1 MiB of
  ``uint8``, 4 MiB of ``float32``), so a zoomed-in view of a huge slice reads a few
  chunks, not the whole slice.
- Slices wider or taller than :data:`MAX_CHUNK_SIDE` also get coarser levels (every 2nd,
  4th ... pixel in Y and X, written with the slice), so napari shows them as a
  multiscale layer that opens fast when zoomed out.  Sampling every n-th pixel keeps
  label values real and places a coarse pixel exactly on a full-resolution one.
- Channels (class probabilities) come first (axes ``czyx``, as NGFF orders them), with a
  chunk per channel: napari shows one layer per channel.

The store is written under a hidden sibling name and renamed to its path only once every
slice is written, so a failed or stopped run leaves nothing (and an existing output
untouched).
"""

from __future__ import annotations

import math
import os
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlbio.core.errors import DlbioError
from napari_dlbio.core.io import OutputExistsError, WriteError, partial_path, write_failed
from napari_dlbio.core.zarr_images import DLBIO_ATTRIBUTES

if TYPE_CHECKING:
    import zarr
    from numpy.typing import DTypeLike

#: Largest side of a chunk (and of the coarsest level's slices), in pixels.
MAX_CHUNK_SIDE = 1024


class ZarrSliceWriter:
    """Writes whole slices into an open OME-Zarr store; safe across threads.

    Made by :func:`open_zarr_output`, not directly.
    """

    def __init__(
        self, levels: Sequence[zarr.Array], shape: tuple[int, int, int], channels: int | None
    ) -> None:
        self._levels = tuple(levels)
        self._shape = shape
        self._channels = channels
        self._lock = threading.Lock()
        self._done: set[int] = set()

    @property
    def written(self) -> int:
        """How many different slices have been written."""
        with self._lock:
            return len(self._done)

    def write(self, z: int, plane: np.ndarray) -> None:
        """Write slice ``z`` (at every level); writing a slice again replaces it.

        Parameters
        ----------
        z : int
            The slice index, from 0.
        plane : numpy.ndarray
            ``(Y, X)``, or ``(Y, X, C)`` for a store with channels; its values must fit
            the store's dtype (same kind, e.g. integers into an integer store).

        Raises
        ------
        ValueError
            ``z`` is out of range, or ``plane`` has the wrong shape or kind of values.
        """
        depth, height, width = self._shape
        expected = (height, width) if self._channels is None else (height, width, self._channels)
        data = np.asarray(plane)
        if not 0 <= z < depth:
            raise ValueError(f"slice {z} is outside the stack of {depth} slices")
        if data.shape != expected:
            raise ValueError(f"slice {z} has shape {data.shape}, expected {expected}")
        dtype = self._levels[0].dtype
        if not np.can_cast(data.dtype, dtype, casting="same_kind"):
            raise ValueError(f"slice {z} holds {data.dtype} values; the store holds {dtype}")
        if self._channels is not None:
            data = np.moveaxis(data, -1, 0)
        for level, array in enumerate(self._levels):
            step = 2**level
            part = data[..., ::step, ::step].astype(dtype, copy=False)
            if self._channels is None:
                array[z] = part
            else:
                array[:, z] = part
        with self._lock:
            self._done.add(z)


@contextmanager
def open_zarr_output(
    path: str | Path,
    *,
    shape: tuple[int, int, int],
    dtype: DTypeLike,
    channels: int | None = None,
    scale: Sequence[float] | None = None,
    units: Sequence[str] | None = None,
    channel_names: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Iterator[ZarrSliceWriter]:
    """Create an OME-Zarr store to fill slice by slice; keep it only if it is complete.

    Parameters
    ----------
    path : str or pathlib.Path
        The store to create (a folder, usually named ``*.zarr``).
    shape : tuple of int
        ``(Z, Y, X)`` of the stack.
    dtype : numpy dtype
        The pixel type (``uint8`` for a mask, ``float32`` for probabilities).
    channels : int, optional
        Number of channels per pixel (e.g. classes); the store's axes are then ``czyx``.
    scale : sequence of float, optional
        Physical size of a voxel along Z, Y and X (default 1).
    units : sequence of str, optional
        Units of ``scale`` along Z, Y and X, as NGFF names them (``"nanometer"``,
        ``"micrometer"`` ...); ``""`` or None for unknown.
    channel_names : sequence of str, optional
        A name per channel (e.g. class names), shown by OME-Zarr viewers.
    metadata : mapping, optional
        napari-dlbio's own attributes, stored under ``"napari-dlbio"`` (e.g.
        ``{"layer_type": "labels", "class_names": [...]}`` to reopen a mask as Labels). A
        labels store also gets NGFF ``image-label`` metadata naming each value's class.
    overwrite : bool, optional
        Replace an existing ``path`` (only once the new store is complete).

    Yields
    ------
    ZarrSliceWriter
        Call ``write(z, plane)`` once per slice, from any thread.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false (checked at the start and again
        before the store is moved into place).
    WriteError
        Not every slice was written, or the disk refused (no space, no permission): the
        partial store is removed and nothing is kept.
    ValueError
        Impossible arguments (shape, channels, scale, units or channel names).
    """
    path = Path(path)
    _check_arguments(shape, channels, scale, units, channel_names)
    if path.exists() and not overwrite:
        raise _exists_error(path)
    partial = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        levels = _create_store(
            partial,
            name=path.name.removesuffix(".zarr"),
            shape=shape,
            dtype=np.dtype(dtype),
            channels=channels,
            scale=tuple(scale) if scale is not None else (1.0, 1.0, 1.0),
            units=tuple(units) if units is not None else ("", "", ""),
            channel_names=tuple(channel_names),
            metadata=dict(metadata or {}),
        )
        writer = ZarrSliceWriter(levels, shape, channels)
        yield writer
        if writer.written != shape[0]:
            raise WriteError(
                f"Could not write {path}: only {writer.written} of {shape[0]} slices were "
                "written; nothing was kept."
            )
        _move_into_place(partial, path, overwrite=overwrite)
    except DlbioError:
        raise
    except OSError as error:
        raise write_failed(path, error) from error
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _check_arguments(
    shape: tuple[int, int, int],
    channels: int | None,
    scale: Sequence[float] | None,
    units: Sequence[str] | None,
    channel_names: Sequence[str],
) -> None:
    if len(shape) != 3 or not all(int(n) > 0 for n in shape):
        raise ValueError(f"shape must be (Z, Y, X) of sizes above 0, not {shape}")
    if channels is not None and channels < 1:
        raise ValueError(f"channels must be at least 1, not {channels}")
    if scale is not None and (
        len(scale) != 3 or not all(math.isfinite(s) and s > 0 for s in scale)
    ):
        raise ValueError(f"scale must be 3 sizes (Z, Y, X) above 0, not {scale}")
    if units is not None and len(units) != 3:
        raise ValueError(f"units must be 3 names (Z, Y, X), not {units}")
    if channel_names and len(channel_names) != (channels or 0):
        raise ValueError(f"{len(channel_names)} channel names for {channels} channels")


def _create_store(
    folder: Path,
    *,
    name: str,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    channels: int | None,
    scale: tuple[float, ...],
    units: tuple[str | None, ...],
    channel_names: tuple[str, ...],
    metadata: dict[str, Any],
) -> list[zarr.Array]:
    """An empty OME-Zarr image at ``folder``: its levels, with their metadata written."""
    import zarr
    from numcodecs import Blosc
    from ome_zarr.format import FormatV04
    from ome_zarr.writer import add_metadata, write_multiscales_metadata

    fmt = FormatV04()
    group = zarr.open_group(str(folder), mode="w-", zarr_format=fmt.zarr_format)
    lead = () if channels is None else (channels,)
    levels, datasets = [], []
    for level, (height, width) in enumerate(_level_sizes(shape[1], shape[2])):
        tile = (min(height, MAX_CHUNK_SIDE), min(width, MAX_CHUNK_SIDE))
        levels.append(
            group.create_array(
                str(level),
                shape=(*lead, shape[0], height, width),
                chunks=(*(1 for _ in lead), 1, *tile),  # one channel, one slice, one tile
                dtype=dtype,
                fill_value=0,
                # As ome-zarr-py writes: Blosc/zstd, and "/" between chunk indices (NGFF 0.4).
                compressors=Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE),
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
        )
        factor = 2.0**level
        level_scale = [*(1.0 for _ in lead), scale[0], scale[1] * factor, scale[2] * factor]
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": level_scale}],
            }
        )
    axes = [{"name": "c", "type": "channel"}] if channels is not None else []
    for axis, unit in zip("zyx", units, strict=True):
        axes.append({"name": axis, "type": "space", **({"unit": unit} if unit else {})})
    extra: dict[str, Any] = {}
    if channel_names:
        extra["metadata"] = {"omero": {"channels": [{"label": n} for n in channel_names]}}
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=axes, name=name, **extra)
    if metadata.get("layer_type") == "labels":
        names = metadata.get("class_names", [])
        properties = [{"label-value": value, "class": n} for value, n in enumerate(names)]
        add_metadata(
            group, {"image-label": {"version": fmt.version, "properties": properties}}, fmt=fmt
        )
    if metadata:
        group.attrs[DLBIO_ATTRIBUTES] = metadata
    return levels


def _level_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Slice size of each level: halved until it fits :data:`MAX_CHUNK_SIDE`."""
    sizes = [(height, width)]
    while max(sizes[-1]) > MAX_CHUNK_SIDE:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def _move_into_place(partial: Path, path: Path, *, overwrite: bool) -> None:
    """Rename the finished store to ``path``; an old ``path`` goes only once that worked."""
    if not path.exists() and not path.is_symlink():
        os.rename(partial, path)
        return
    if not overwrite:
        raise _exists_error(path)  # it appeared while the store was written
    old = partial_path(path)
    os.rename(path, old)
    try:
        os.rename(partial, path)
    except OSError:
        os.rename(old, path)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _exists_error(path: Path) -> OutputExistsError:
    return OutputExistsError(
        f"{path} already exists and was left as it is. Choose another name, or give "
        "--overwrite to replace it."
    )
