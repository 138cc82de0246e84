"""npe2 writers: a Labels layer -> a TIFF stack, or a folder of PNG slices.

Both refuse to overwrite and write under a temporary name first, so a failed save leaves
nothing half-written (see :mod:`napari_dlbio.core.io`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio.core.io import write_labels_pngs, write_labels_tiff


def write_labels_as_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as a compressed multi-page TIFF.

    Parameters
    ----------
    path : str
        The ``.tif`` / ``.tiff`` file to create; it must not exist.
    data : array-like
        The layer data (multiscale data: the full-resolution level is saved).
    meta : dict
        Layer attributes; ``meta["metadata"]["class_names"]`` is stored in the file.

    Returns
    -------
    list of str
        The written file.
    """
    class_names = tuple(meta.get("metadata", {}).get("class_names", ()))
    return [str(write_labels_tiff(path, _full_resolution(data), class_names=class_names))]


def write_labels_as_pngs(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a Labels layer as one lossless PNG per slice in a new folder.

    Parameters
    ----------
    path : str
        ``<name>.png``: the slices go into the folder ``<name>`` as ``<name>_0000.png`` ...
    data : array-like
        The layer data (multiscale data: the full-resolution level is saved).
    meta : dict
        Layer attributes (unused: PNG keeps no class names).

    Returns
    -------
    list of str
        The written slice files.
    """
    target = Path(path)
    folder = target.with_suffix("") if target.suffix.lower() == ".png" else target
    return [str(file) for file in write_labels_pngs(folder, _full_resolution(data))]


def _full_resolution(data: Any) -> np.ndarray:
    if isinstance(data, list | tuple):
        data = data[0]
    return np.asarray(data)
