"""Open OME-Zarr images and plain zarr arrays lazily, as stacks of slices.

An OME-Zarr image (NGFF 0.4 on zarr v2, 0.5 on zarr v3) is read through ome-zarr-py,
the reference implementation napari's own OME-Zarr plugin uses: ``parse_url`` finds the
store and its format, :class:`ome_zarr.axes.Axes` checks the axes, and every resolution
level becomes a dask array.  A plain zarr array (or a group that holds exactly one) is
opened with zarr directly; its axes come from its dimension names when it has them.
Only metadata is read here: pixels are read when (and where) the dask arrays are computed.

zarr, dask and ome-zarr-py are imported when a store is opened, not with this module,
so napari's reader can ask :func:`is_zarr` about every path cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlbio.core.errors import InputDataError

if TYPE_CHECKING:
    import dask.array as da
    import zarr

#: Files that mark a folder as a zarr store (v3, v2 group, v2 array, v2 attributes).
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zattrs")

#: Key of napari-dlbio's own attributes in a store it wrote (see core.zarr_output).
DLBIO_ATTRIBUTES = "napari-dlbio"

_TAKES = (
    "napari-dlbio takes images with axes Z, Y, X (Z optional) and an optional channel "
    "axis, at a single time point"
)

# What zarr and ome-zarr-py raise for metadata they cannot parse.
_METADATA_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError)


@dataclass(frozen=True)
class ZarrImage:
    """An image in a zarr store, as lazy stacks of slices (nothing read but metadata).

    Attributes
    ----------
    levels : tuple of dask.array.Array
        The resolution levels, full resolution first, each in ``axes`` order with the
        channel axis last. A plain zarr array has one level.
    axes : str
        ``"ZYX"`` or ``"ZYXC"``. A 2D image is a stack of one slice; a time axis of one
        point and a channel axis of one channel are dropped.
    scale : tuple of float
        Physical size of one full-resolution voxel along Z, Y and X (1.0 where the store
        does not say).
    units : tuple of str
        Units of ``scale`` along Z, Y and X (for example ``"nanometer"``); ``""`` where
        the store does not say.
    source : pathlib.Path
        The store that was opened.
    metadata : mapping
        napari-dlbio's own attributes when napari-dlbio wrote the store (for example
        ``{"layer_type": "labels", "class_names": [...]}``); empty otherwise.
    """

    levels: tuple[da.Array, ...]
    axes: str
    scale: tuple[float, float, float]
    units: tuple[str, str, str]
    source: Path
    metadata: Mapping[str, Any] = field(default_factory=dict)


def is_zarr(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a zarr store (or a folder named ``*.zarr``).

    Parameters
    ----------
    path : str or pathlib.Path
        Any path.

    Returns
    -------
    bool
        True for a folder with zarr metadata inside, or any folder whose name ends in
        ``.zarr`` (so that a broken store is reported, not passed over).
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    return folder.suffix.lower() == ".zarr" or any((folder / m).is_file() for m in ZARR_MARKERS)


def open_zarr_image(path: str | Path) -> ZarrImage:
    """Open an OME-Zarr image or a plain zarr array lazily.

    Parameters
    ----------
    path : str or pathlib.Path
        The store: an OME-Zarr image (multiscale pyramid), a zarr array, or a zarr group
        that holds exactly one array.

    Returns
    -------
    ZarrImage
        Its levels as dask arrays in ``ZYX`` / ``ZYXC`` order, with voxel size and units.

    Raises
    ------
    InputDataError
        The path is not a zarr store or holds no image; its axes are not ones
        napari-dlbio takes (more than one time point, no Y or X, unknown axes); its
        pixels are not real numbers; or its metadata cannot be read.
    """
    import zarr

    source = Path(path)
    if not source.exists():
        raise InputDataError(f"{source} does not exist. Check the path and try again.")
    if not source.is_dir() or not any((source / m).is_file() for m in ZARR_MARKERS):
        raise InputDataError(
            f"{source} is not a zarr store (no zarr.json, .zgroup or .zarray inside). "
            "Choose the store's folder (usually named *.zarr) or the image inside it."
        )
    try:
        node = zarr.open(store=str(source), mode="r")
    except _METADATA_ERRORS as error:
        raise InputDataError(
            f"{source} is not a readable zarr store ({error}). If it is the folder around "
            "an image, open the image inside; otherwise copy the store again."
        ) from error
    if isinstance(node, zarr.Array):
        return _plain_image(node, source, {})
    attributes = node.attrs.asdict()
    ome = attributes.get("ome", attributes)
    metadata = _dlbio_metadata(attributes.get(DLBIO_ATTRIBUTES))
    if "multiscales" in ome:
        return _ome_image(source, ome, metadata)
    return _plain_image(_only_array(node, source, ome), source, metadata)


def _ome_image(source: Path, ome: Mapping[str, Any], metadata: Mapping[str, Any]) -> ZarrImage:
    from ome_zarr.axes import Axes
    from ome_zarr.format import format_from_version
    from ome_zarr.io import parse_url

    try:
        # The store's own version (0.5 at the top, older ones in "multiscales"): asking
        # for another makes ome-zarr-py log a version-mismatch warning on every open.
        version = ome.get("version") or ome["multiscales"][0].get("version", "0.4")
        location = parse_url(source, fmt=format_from_version(str(version)))
        if location is None:
            raise ValueError("ome-zarr-py cannot open it")
        multiscale = location.root_attrs["multiscales"][0]
        axes = Axes(multiscale.get("axes"), fmt=location.fmt).to_list(location.fmt)
        datasets = multiscale["datasets"]
        levels = [location.load(dataset["path"]) for dataset in datasets]
    except _METADATA_ERRORS as error:
        raise InputDataError(
            f"{source} has OME-Zarr metadata that cannot be read ({error}). Save the image "
            "again with an OME-Zarr writer (for example ome-zarr-py, or Fiji's OME-Zarr export)."
        ) from error
    names = [axis if isinstance(axis, str) else str(axis.get("name", "")) for axis in axes]
    units = {
        name.lower(): axis.get("unit", "")
        for name, axis in zip(names, axes, strict=True)
        if isinstance(axis, dict)
    }
    for level in levels:
        if level.ndim != len(names):
            raise InputDataError(
                f"{source} declares {len(names)} axes ({', '.join(names)}) but holds an "
                f"array of {level.ndim} dimensions; its metadata is damaged."
            )
    scale = _level_scale(datasets[0], multiscale, len(names))
    stack, axes_text = _as_stack(levels, names, source)
    sizes = dict(zip((name.lower() for name in names), scale, strict=True))
    z, y, x = (float(sizes.get(ax, 1.0)) for ax in "zyx")
    z_unit, y_unit, x_unit = (str(units.get(ax) or "") for ax in "zyx")
    return ZarrImage(stack, axes_text, (z, y, x), (z_unit, y_unit, x_unit), source, metadata)


def _plain_image(array: zarr.Array, source: Path, metadata: Mapping[str, Any]) -> ZarrImage:
    import dask.array as da

    names = _dimension_names(array, source)
    stack, axes = _as_stack([da.from_zarr(array)], names, source)
    return ZarrImage(stack, axes, (1.0, 1.0, 1.0), ("", "", ""), source, metadata)


def _only_array(group: zarr.Group, source: Path, ome: Mapping[str, Any]) -> zarr.Array:
    """The one array of a group that is not an OME-Zarr image, or a clear error."""
    if "plate" in ome or "well" in ome:
        kind = "plate" if "plate" in ome else "well"
        raise InputDataError(
            f"{source} is an OME-Zarr {kind} (high-content screening), not one image. "
            f"Open one image inside it, e.g. {source / 'A' / '1' / '0'}."
        )
    arrays = sorted(name for name, _ in group.arrays())
    groups = sorted(name for name, _ in group.groups())
    if len(arrays) == 1 and not groups:
        return group[arrays[0]]  # type: ignore[return-value]
    if arrays:
        raise InputDataError(
            f"{source} holds {len(arrays)} arrays ({_listing(arrays)}) and no OME-Zarr "
            f"image metadata, so it is not clear which is the image. Open one of them, "
            f"e.g. {source / arrays[0]}."
        )
    found = f"found groups {_listing(groups)}" if groups else "it is empty"
    example = f"; open the image inside, e.g. {source / groups[0]}" if groups else ""
    raise InputDataError(f"{source} holds no image array ({found}){example}.")


def _dimension_names(array: zarr.Array, source: Path) -> list[str]:
    """Axis names of a plain array: its own (zarr v3, or xarray's), else guessed."""
    named = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    if named and len(named) == array.ndim and all(isinstance(n, str) and n for n in named):
        return [str(n) for n in named]
    shape = array.shape
    guesses = {2: "yx", 3: "zyx", 4: "zyxc"}
    if array.ndim == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        return list("yxc")  # an RGB(A) image, as a TIFF or PNG would hold it
    if array.ndim not in guesses:
        raise InputDataError(
            f"{source} is a zarr array of {array.ndim} dimensions (shape "
            f"{shape}) without axis names; {_TAKES}. Give its axes dimension names "
            "(zarr v3) or save it as OME-Zarr."
        )
    return list(guesses[array.ndim])


def _as_stack(
    levels: Sequence[da.Array], names: Sequence[str], source: Path
) -> tuple[tuple[da.Array, ...], str]:
    """Levels reordered to ``ZYX`` / ``ZYXC``: one time point, channel last, Z added."""
    kinds = [_axis_kind(name) for name in names]
    found = ", ".join(f"{n}={size}" for n, size in zip(names, levels[0].shape, strict=True))
    problem = _axes_problem(names, kinds)
    if problem:
        raise InputDataError(
            f"{source} has axes {found} ({problem}); {_TAKES}. Save it with axes named "
            "z, y, x (and c for channels)."
        )
    size = dict(zip(kinds, levels[0].shape, strict=True))
    if size.get("t", 1) > 1:
        raise InputDataError(
            f"{source} has axes {found}: {size['t']} time points; {_TAKES}. Save each "
            "time point as its own image, or open one time point."
        )
    dtype = levels[0].dtype
    if dtype.kind not in "uifb":
        raise InputDataError(
            f"{source} holds {dtype} pixels; napari-dlbio reads integer or float images."
        )
    order = [kinds.index(ax) for ax in "tzyxc" if ax in kinds]
    # A time axis (one point here) and a channel axis of one channel are dropped.
    dropped = {"t"} | ({"c"} if size.get("c") == 1 else set())
    index = tuple(0 if kinds[i] in dropped else slice(None) for i in order)
    stacks = []
    for level in levels:
        data = level if order == sorted(order) else level.transpose(order)
        data = data[index] if any(i == 0 for i in index) else data
        stacks.append(data if "z" in kinds else data[np.newaxis])
    return tuple(stacks), "ZYX" + ("C" if stacks[0].ndim == 4 else "")


def _axes_problem(names: Sequence[str], kinds: Sequence[str | None]) -> str:
    """What is wrong with the axes, for the message; ``""`` when nothing is."""
    unknown = [name for name, kind in zip(names, kinds, strict=True) if kind is None]
    if unknown:
        return f"unknown axes {', '.join(unknown)}"
    missing = [ax.upper() for ax in "yx" if ax not in kinds]
    if missing:
        return f"no {' or '.join(missing)} axis"
    return "repeated axes" if len(set(kinds)) != len(kinds) else ""


def _axis_kind(name: str) -> str | None:
    """``t``, ``c``, ``z``, ``y`` or ``x`` for an axis name, None for any other."""
    lowered = name.lower()
    aliases = {"time": "t", "channel": "c", "channels": "c"}
    lowered = aliases.get(lowered, lowered)
    return lowered if lowered in ("t", "c", "z", "y", "x") else None


def _level_scale(
    dataset: Mapping[str, Any], multiscale: Mapping[str, Any], ndim: int
) -> list[float]:
    """Size of one voxel of a level: its own scale, times the whole image's if any."""
    scale = [1.0] * ndim
    for transforms in (
        dataset.get("coordinateTransformations"),
        multiscale.get("coordinateTransformations"),
    ):
        for transform in transforms or ():
            values = transform.get("scale") if transform.get("type") == "scale" else None
            if isinstance(values, list) and len(values) == ndim:
                scale = [a * float(b) for a, b in zip(scale, values, strict=True)]
    if not all(math.isfinite(s) and s > 0 for s in scale):
        return [1.0] * ndim
    return scale


def _dlbio_metadata(attributes: Any) -> dict[str, Any]:
    """napari-dlbio's attributes of a store it wrote; anything else gives ``{}``."""
    if not isinstance(attributes, dict) or attributes.get("layer_type") != "labels":
        return {}
    names = attributes.get("class_names", [])
    # Attributes are text anyone can edit: keep the names only if they are names.
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        names = []
    return {"layer_type": "labels", "class_names": names}


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
