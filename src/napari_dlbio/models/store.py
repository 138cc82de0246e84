"""The model folder: a Keras model file plus ``config.json``, history and metrics.

A model folder needs nothing else to predict correctly: the task config inside
``config.json`` records the architecture, normalisation, patch or input size, class names
and input channels.  Folders are written to a temporary sibling and renamed into place, so
a failed or cancelled save never replaces a good model.  Models load with Keras safe mode
on: a file that would run code (``Lambda`` layers, custom classes) is refused.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from napari_dlbio import __version__
from napari_dlbio.core.builtin_models import model_folder_path, refuse_builtin_destination
from napari_dlbio.core.config import JsonConfig, Task
from napari_dlbio.core.errors import ConfigError, ModelFolderError
from napari_dlbio.models._tf import load_keras

keras = load_keras()

SCHEMA_VERSION = 1
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
_MAX_JSON_BYTES = 10 * 2**20
# The network description inside a Keras archive.
_KERAS_CONFIG = "config.json"

_CONFIG_CLASSES = {
    Task.SEGMENTATION: "napari_dlbio.core.segmentation_config:SegmentationConfig",
    Task.CLASSIFICATION: "napari_dlbio.core.classifier_config:ClassifierConfig",
}


@dataclass
class ModelFolder:
    """A loaded model with everything needed to use it."""

    model: Any
    task: Task
    config: JsonConfig
    path: Path | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def config_class(task: Task) -> type[JsonConfig]:
    """The config dataclass that describes models of ``task``."""
    module_name, class_name = _CONFIG_CLASSES[task].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def save_model_folder(
    folder: str | Path,
    model: Any,
    task: Task,
    config: JsonConfig,
    history: Mapping[str, list[float]] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model folder atomically and return its path.

    An existing model folder at ``folder`` is replaced only once the new one is complete;
    an existing folder that is not a model folder is never touched.
    """
    folder = check_destination(folder)
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.saving-", dir=parent))
    except OSError as error:
        raise ModelFolderError(f"Cannot write a model folder in {parent}: {error}") from None
    try:
        model.save(staging / MODEL_FILE)
        _write_json(staging / CONFIG_FILE, _config_document(task, config))
        _write_json(staging / HISTORY_FILE, dict(history or {}))
        _write_json(staging / METRICS_FILE, dict(metrics or {}))
        _replace_folder(staging, folder)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise ModelFolderError(f"Saving the model to {folder} failed: {error}") from error
        raise
    return folder


def check_destination(folder: str | Path) -> Path:
    """Refuse now a model folder that :func:`save_model_folder` could not write later.

    Call it before a long training run, so that a wrong ``--out`` is found in a second
    rather than after hours.

    Raises
    ------
    ModelFolderError
        ``folder`` exists and is not a model folder (it is never overwritten), lies among
        the package's built-in models, or its parent cannot be created or written.
    """
    folder = Path(folder)
    refuse_builtin_destination(folder)
    occupied = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
    if occupied and not _is_model_folder(folder):
        raise ModelFolderError(
            f"{folder} already exists and is not a napari-dlbio model folder; "
            "choose a new or empty folder so nothing of yours is overwritten."
        )
    ancestor = folder.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ModelFolderError(
            f"Cannot write a model folder in {folder.parent}: {ancestor} is a file, not a folder."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ModelFolderError(
            f"Cannot write a model folder in {folder.parent}: {ancestor} is not writable "
            "(permission denied); choose a folder of your own."
        )
    return folder


def load_model_folder(folder: str | Path, task: Task | None = None) -> ModelFolder:
    """Load a model folder with Keras safe mode on.

    Parameters
    ----------
    folder
        The folder written by :func:`save_model_folder`, ``builtin:NAME`` for a model
        shipped with the package (its files are first checked against the package's
        record), or a bioimage.io model package (``.zip``, see
        :func:`~napari_dlbio.models.bioimageio_import.load_bioimageio_package`).
    task
        If given, refuse a model made for another task.
    """
    if _is_package(folder):
        from napari_dlbio.models.bioimageio_import import load_bioimageio_package

        return load_bioimageio_package(folder, task)
    folder = model_folder_path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is not a folder; choose a napari-dlbio model folder.")
    for name in (MODEL_FILE, CONFIG_FILE, HISTORY_FILE, METRICS_FILE):
        _check_inside(folder, name)
    document = _read_json(folder / CONFIG_FILE, required=True)
    found_task, config = _parse_config_document(document, folder)
    if task is not None and found_task is not task:
        raise ModelFolderError(
            f"{folder} holds a {found_task.value} model, but a {task.value} model is needed here."
        )
    model_path = folder / MODEL_FILE
    if not model_path.is_file() or not zipfile.is_zipfile(model_path):
        raise ModelFolderError(f"{model_path} is missing or is not a Keras model file.")
    _check_archive(model_path)
    model = _load_keras_safely(model_path)
    return ModelFolder(
        model=model,
        task=found_task,
        config=config,
        path=folder,
        history=_read_json(folder / HISTORY_FILE, required=False) or {},
        metrics=_read_json(folder / METRICS_FILE, required=False) or {},
    )


def load_keras_file(model_path: Path) -> Any:
    """Load a Keras file (``.keras``, or legacy ``.h5``) with safe mode on, uncompiled.

    A ``.keras`` archive whose network names code outside Keras is refused before Keras
    reads it.

    Raises
    ------
    ModelFolderError
        The file is damaged or asks for code to run.
    """
    if zipfile.is_zipfile(model_path):
        _check_archive(model_path)
    return _load_keras_safely(model_path)


def _is_package(path: str | Path) -> bool:
    """Whether ``path`` names a bioimage.io package (a zip file) rather than a folder."""
    path = Path(path)
    return path.suffix.lower() == ".zip" or (path.is_file() and zipfile.is_zipfile(path))


def _config_document(task: Task, config: JsonConfig) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "task": task.value,
        "napari_dlbio_version": __version__,
        "config": config.to_dict(),
    }


def _parse_config_document(document: Any, folder: Path) -> tuple[Task, JsonConfig]:
    where = folder / CONFIG_FILE
    if not isinstance(document, dict):
        raise ModelFolderError(f"{where} must hold a JSON object.")
    expected = {"schema_version", "task", "napari_dlbio_version", "config"}
    unknown = sorted(set(document) - expected)
    if unknown:
        raise ModelFolderError(f"{where} has unknown keys: {', '.join(unknown)}.")
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFolderError(f"{where}: schema_version must be a positive whole number.")
    if version > SCHEMA_VERSION:
        raise ModelFolderError(
            f"{folder} was written by a newer napari-dlbio (schema {version}; this version reads "
            f"up to {SCHEMA_VERSION}). Update napari-dlbio to use it."
        )
    try:
        task = Task(document.get("task"))
    except ValueError:
        raise ModelFolderError(f"{where}: unknown task {document.get('task')!r}.") from None
    try:
        config = config_class(task).from_dict(document.get("config"))
    except ConfigError as error:
        raise ModelFolderError(f"{where}: {error}") from None
    return task, config


def _check_inside(folder: Path, name: str) -> None:
    """Refuse a file of the model folder that is a link to a place outside the folder."""
    path = folder / name
    if path.is_symlink() and not path.resolve().is_relative_to(folder.resolve()):
        raise ModelFolderError(
            f"{path} is a link to {path.resolve()}, outside the model folder; napari-dlbio "
            "reads a model only from its own folder. Copy the file into the folder instead."
        )


def _check_archive(model_path: Path) -> None:
    """Refuse a Keras archive whose network names code outside Keras, before Keras reads it.

    Keras' safe mode refuses lambdas, and recent Keras versions refuse classes from other
    packages; this check does not depend on the Keras version and also refuses member
    names that would point outside a folder the archive were extracted to.
    """
    try:
        with zipfile.ZipFile(model_path) as archive:
            escaping = [
                name
                for name in archive.namelist()
                if name.startswith(("/", "\\")) or ".." in PurePosixPath(name).parts
            ]
            if escaping:
                raise ModelFolderError(
                    f"{model_path} holds files named outside the archive "
                    f"({', '.join(escaping[:3])}); it was not written by Keras."
                )
            if archive.getinfo(_KERAS_CONFIG).file_size > _MAX_JSON_BYTES:
                raise ModelFolderError(f"{model_path}: its network description is too large.")
            foreign = sorted(_foreign_code(json.loads(archive.read(_KERAS_CONFIG))))
    except KeyError:
        raise ModelFolderError(
            f"{model_path} has no network description ({_KERAS_CONFIG}); it is not a Keras "
            "model file."
        ) from None
    except (OSError, zipfile.BadZipFile, ValueError, RecursionError) as error:
        raise ModelFolderError(f"{model_path} is damaged or incomplete: {error}") from None
    if foreign:
        raise ModelFolderError(
            f"{model_path} contains custom code (it refers to {', '.join(foreign[:5])}). "
            "napari-dlbio never runs code from a model file; use a model trained with "
            "napari-dlbio or re-export it without custom layers."
        )


def _foreign_code(node: Any) -> set[str]:
    """Modules outside Keras and Python lambdas named anywhere in a network description.

    The compile settings are skipped: models load uncompiled, so they are never read.
    """
    found: set[str] = set()
    if isinstance(node, dict):
        module = node.get("module")
        if isinstance(module, str) and not (
            module in ("keras", "builtins") or module.startswith("keras.")
        ):
            found.add(module)
        if node.get("class_name") == "__lambda__":
            found.add("a Python lambda")
        for key, value in node.items():
            if key != "compile_config":
                found |= _foreign_code(value)
    elif isinstance(node, list):
        for value in node:
            found |= _foreign_code(value)
    return found


def _load_keras_safely(model_path: Path) -> Any:
    try:
        return keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except (ValueError, TypeError) as error:
        text = str(error)
        if "Lambda" in text or "safe_mode" in text or "Could not locate" in text:
            raise ModelFolderError(
                f"{model_path} contains custom code (a Lambda layer or an unknown class). "
                "napari-dlbio never runs code from a model file; use a model trained with "
                "napari-dlbio or re-export it without custom layers."
            ) from None
        raise ModelFolderError(f"{model_path} could not be loaded: {text}") from None
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        raise ModelFolderError(f"{model_path} is damaged or incomplete: {error}") from None


def _is_model_folder(folder: Path) -> bool:
    return folder.is_dir() and (folder / CONFIG_FILE).is_file()


def _replace_folder(staging: Path, folder: Path) -> None:
    if not folder.exists():
        staging.rename(folder)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{folder.name}.previous-", dir=folder.parent))
    backup.rmdir()
    folder.rename(backup)
    try:
        staging.rename(folder)
    except OSError:
        backup.rename(folder)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=True), encoding="utf-8")


def _read_json(path: Path, required: bool) -> Any:
    if not path.is_file():
        if required:
            raise ModelFolderError(f"{path} is missing; this is not a napari-dlbio model folder.")
        return None
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise ModelFolderError(f"{path} is too large to be a model description.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        # ValueError: invalid JSON or text, or numbers of too many digits; RecursionError:
        # brackets nested thousands deep.
        raise ModelFolderError(f"{path} is not valid JSON: {error}") from None
