"""Read the description (``rdf.yaml``) of a bioimage.io package cheaply: zip and YAML only.

Enough to know what a package is (its format version, and the task it was made for)
without ``bioimageio.spec`` or TensorFlow: the command line uses it to choose its engine,
and the importer to refuse damaged packages and other format versions first.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import ModelFolderError

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: The model format versions napari-dlbio reads (bioimageio.spec's current one).
FORMAT_MAJOR_MINOR = "0.5"
_MAX_RDF_BYTES = 2**20


def read_package_rdf(path: str | Path, check_members: bool = False) -> dict[str, Any]:
    """The description of a bioimage.io package, as a plain dict.

    Parameters
    ----------
    path
        The package (a zip file).
    check_members
        Also read every member and check it against its checksum (finds a damaged zip).

    Raises
    ------
    ModelFolderError
        The file is missing, no zip, damaged, has no ``rdf.yaml``, is no model, or is
        written in another format version than 0.5.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{path} is not a file; choose a bioimage.io package (.zip).")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name for name in RDF_NAMES if name in archive.namelist()]
            if not names:
                raise ModelFolderError(
                    f"{path} has no rdf.yaml: it is a zip file but no bioimage.io package."
                )
            if archive.getinfo(names[0]).file_size > _MAX_RDF_BYTES:
                raise ModelFolderError(f"{path}: its rdf.yaml is too large to be a description.")
            text = archive.read(names[0]).decode("utf-8")
            bad = archive.testzip() if check_members else None
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError, EOFError) as error:
        raise ModelFolderError(
            f"{path} is damaged or is not a zip file ({error}); download or export the "
            "bioimage.io package again."
        ) from None
    if bad is not None:
        raise ModelFolderError(
            f"{path} is damaged ({bad} does not match its checksum); download or export "
            "the bioimage.io package again."
        )
    try:
        rdf = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise ModelFolderError(f"{path}: its rdf.yaml is not valid YAML: {error}") from None
    if not isinstance(rdf, dict):
        raise ModelFolderError(f"{path}: its rdf.yaml does not describe a resource.")
    if rdf.get("type") != "model":
        raise ModelFolderError(f"{path} describes a bioimage.io {rdf.get('type')!r}, not a model.")
    version = str(rdf.get("format_version", "unknown"))
    if version.split(".")[:2] != FORMAT_MAJOR_MINOR.split("."):
        raise ModelFolderError(
            f"{path} is written in bioimage.io model format {version}; napari-dlbio reads "
            f"format {FORMAT_MAJOR_MINOR}.x. Convert it with bioimageio.spec "
            "(`bioimageio update-format`) or download its newest version."
        )
    return rdf


def package_task(rdf: dict[str, Any]) -> Task:
    """The task of a packaged model: recorded by napari-dlbio, else read from its output.

    An output with space axes (a map per pixel) is a segmentation; one without, a
    classification.
    """
    recorded = (rdf.get("config") or {}).get("napari_dlbio") or {}
    if isinstance(recorded, dict) and recorded.get("task") in {task.value for task in Task}:
        return Task(recorded["task"])
    outputs = rdf.get("outputs") or [{}]
    axes = outputs[0].get("axes", []) if isinstance(outputs[0], dict) else []
    spatial = any(isinstance(axis, dict) and axis.get("type") == "space" for axis in axes)
    return Task.SEGMENTATION if spatial else Task.CLASSIFICATION
