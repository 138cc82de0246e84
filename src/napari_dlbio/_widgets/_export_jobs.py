"""Background jobs of the Export widget: write results to new files, never overwriting."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from napari_dlbio._layers import metrics_csv
from napari_dlbio._widgets._engine import SessionEngine
from napari_dlbio._widgets._jobs import Job
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken, Notice, TileDone
from napari_dlbio.core.io import atomic_file
from napari_dlbio.core.measurements import FEATURE_COLUMNS
from napari_dlbio.core.object_files import OBJECTS_CSV, object_files
from napari_dlbio.core.object_finder import CELLS, ObjectKind, concatenate_tables, empty_table
from napari_dlbio.core.object_settings import BOUNDARY, OBJECT
from napari_dlbio.engine.protocol import ExportPackage, ModelHandle, SaveModel


def export_mask(
    path: Path, as_pngs: bool, data: np.ndarray, meta: dict, *, cancel: CancelToken
) -> Job:
    """Write a mask through the project's writer (TIFF stack or PNG slices)."""
    from napari_dlbio._writer import write_labels_as_pngs, write_labels_as_tiff

    writer = write_labels_as_pngs if as_pngs else write_labels_as_tiff
    written = writer(str(path), data, meta)
    yield Notice(f"Saved the mask: {len(written)} file(s) under {Path(written[0]).parent}.")
    return written


def export_image(path: Path, data: np.ndarray, *, cancel: CancelToken) -> Job:
    """Write a float image (probabilities, uncertainty) as a new TIFF file."""
    import tifffile

    _refuse_existing(path)
    # Under a temporary name first: a full disk or a failing drive leaves no partial file.
    data = np.asarray(data, dtype=np.float32)
    # tifffile would store 3 or 4 slices of a (Z, Y, X) map as the colours of one page.
    photometric = "minisblack" if data.ndim == 3 else None
    with atomic_file(path) as partial:
        tifffile.imwrite(partial, data, compression="zlib", photometric=photometric)
    yield Notice(f"Saved {path}.")
    return [str(path)]


def export_metrics(path: Path, rows: list[dict[str, Any]], *, cancel: CancelToken) -> Job:
    """Write metric rows as a new CSV file."""
    _refuse_existing(path)
    with atomic_file(path) as partial:
        partial.write_text(metrics_csv(rows), encoding="utf-8")
    yield Notice(f"Saved {path}.")
    return [str(path)]


def export_model(
    engine: SessionEngine, path: Path, model: ModelHandle, *, cancel: CancelToken
) -> Job:
    """Have the engine write a model as a new model folder (never replacing one)."""
    request = SaveModel(model.source, str(path.resolve()))
    return [(yield from engine.run(request, cancel=cancel))]


def export_package(
    engine: SessionEngine, path: Path, model: ModelHandle, *, cancel: CancelToken
) -> Job:
    """Have the engine write a model as a new bioimage.io model package (``.zip``).

    The package's test image is napari-dlbio's own sample (see
    :func:`~napari_dlbio.models.bioimageio_export.export_bioimageio`).
    """
    request = ExportPackage(model.source, str(path.resolve()))
    return [(yield from engine.run(request, cancel=cancel))]


def export_objects(
    folder: Path,
    labels: Mapping[str, Any],
    tables: Mapping[str, Mapping[str, np.ndarray]],
    slice_index: int | None,
    *,
    cancel: CancelToken,
) -> Job:
    """Write objects as ``dlbio predict --instances`` does: ``<kind>.tif`` and objects.csv.

    Parameters
    ----------
    folder
        Where ``cells.tif`` (a boundary class's cells), ``<class>.tif`` (an object class's
        objects) and ``objects.csv`` go; none of them may exist yet (the folder may).
    labels
        Instance labels by kind name (``cells`` or the class name), all (Z, Y, X) or all
        (Y, X); read slice by slice, so they may be memory-mapped or lazy.
    tables
        The objects table of each kind (:func:`objects_table`), by kind name.
    slice_index
        The stack slice a one-slice prediction's objects belong to, ``None`` for all of it.
    """
    names = sorted(labels, key=lambda name: name != CELLS)  # cells first, as the CLI
    for name in names:
        if not name or name in (".", "..") or Path(name).name != name:
            raise InputDataError(f"{name!r} cannot name a file; rename the objects layer.")
    shapes = {tuple(np.shape(labels[name])) for name in names}
    if len(shapes) != 1 or len(next(iter(shapes))) not in (2, 3):
        raise InputDataError(
            f"The objects layers of one image must all be (Y, X) or all the same (Z, Y, X) "
            f"shape, not {sorted(shapes)}."
        )
    # object_files needs the kinds' names only; their class indices are not known here.
    kinds = [ObjectKind(0, name, BOUNDARY if name == CELLS else OBJECT) for name in names]
    table = concatenate_tables([tables[name] for name in names])
    # Rows by slice, within a slice cells first: the order the command line writes them in.
    order = np.argsort(table["slice"], kind="stable")
    table = {column: values[order] for column, values in table.items()}
    stacks = {
        name: labels[name] if np.ndim(labels[name]) == 3 else [labels[name]] for name in names
    }
    depth = len(stacks[names[0]])
    with object_files(folder, kinds, depth) as files:
        for z in range(depth):
            files.add_slice({name: np.asarray(stack[z]) for name, stack in stacks.items()}, {})
            yield TileDone(z + 1, depth)
        files.add_rows(table)
    written = [folder / kind.file_name for kind in kinds] + [folder / OBJECTS_CSV]
    which = "" if slice_index is None else f" of slice {slice_index} only (what the layers hold)"
    files_text = ", ".join(path.name for path in written)
    yield Notice(f"Saved the objects{which}: {files_text} in {folder}.")
    return [str(path) for path in written]


def objects_table(features: Any) -> dict[str, np.ndarray]:
    """An objects layer's ``features`` as the objects table: its columns, typed, in order.

    Parameters
    ----------
    features
        A table of columns (a pandas DataFrame or a dict) holding at least the
        :data:`~napari_dlbio.core.measurements.FEATURE_COLUMNS`.

    Raises
    ------
    InputDataError
        A column is missing: the layer holds no objects table.
    """
    missing = [name for name in FEATURE_COLUMNS if name not in features]
    if missing:
        raise InputDataError(
            f"its features table has no {', '.join(missing)} column(s); objects layers come "
            "from Predict & inspect."
        )
    types = empty_table()  # the columns' types, as measured
    return {
        name: np.asarray(features[name]).astype(str if name == "class" else types[name].dtype)
        for name in FEATURE_COLUMNS
    }


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise InputDataError(
            f"{path} already exists; napari-dlbio does not overwrite files. Choose a new name."
        )
