"""Background jobs of the Export widget: write results to new files, never overwriting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlbio._layers import metrics_csv
from napari_dlbio._widgets._jobs import Job
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken, Notice
from napari_dlbio.core.io import atomic_file, refuse_occupied_folder

if TYPE_CHECKING:
    from napari_dlbio.models.store import ModelFolder


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


def export_model(path: Path, model: ModelFolder, *, cancel: CancelToken) -> Job:
    """Write the current model as a new model folder (an existing one is never replaced)."""
    from napari_dlbio.models.store import save_model_folder

    refuse_occupied_folder(path, "the model's files")
    saved = save_model_folder(
        path, model.model, model.task, model.config, model.history, model.metrics
    )
    model.path = saved
    yield Notice(f"Saved the model folder {saved}.")
    return [str(saved)]


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise InputDataError(
            f"{path} already exists; napari-dlbio does not overwrite files. Choose a new name."
        )
