"""The models that ship inside the package: their names, their record and an integrity check.

A built-in model is an ordinary model folder under ``napari_dlbio/builtin_models/NAME``
with a card (``README.md``: data, licence, the command that trained it, held-out figures).
``registry.json`` beside them records each model's task, classes, one-line summary and the
SHA-256 of every file, so a damaged installation is found before Keras reads a byte.
Users name them ``builtin:NAME`` wherever a model folder is asked for.  Built-in folders
are read-only for napari-dlbio: nothing is ever saved into them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import ConfigError, ModelFolderError

BUILTIN_PREFIX = "builtin:"
REGISTRY_FILE = "registry.json"
CARD_FILE = "README.md"
BUILTIN_FOLDER = Path(__file__).resolve().parents[1] / "builtin_models"


@dataclass(frozen=True)
class BuiltinModel:
    """One model shipped with the package, as its record describes it."""

    name: str
    task: Task
    classes: tuple[str, ...]
    summary: str
    path: Path
    sha256: dict[str, str]

    @property
    def reference(self) -> str:
        """How users name it: ``builtin:NAME``."""
        return BUILTIN_PREFIX + self.name

    @property
    def size_bytes(self) -> int:
        """Bytes of its files on disk (0 for a missing file)."""
        files = (self.path / name for name in self.sha256)
        return sum(path.stat().st_size for path in files if path.is_file())

    def to_dict(self) -> dict[str, object]:
        """The JSON object ``dlbio models --json`` prints."""
        return {
            "name": self.name,
            "reference": self.reference,
            "task": self.task.value,
            "classes": list(self.classes),
            "summary": self.summary,
            "size_bytes": self.size_bytes,
            "path": str(self.path),
            "card": str(self.path / CARD_FILE),
        }


def builtin_models(folder: Path = BUILTIN_FOLDER) -> list[BuiltinModel]:
    """Every built-in model in the package's record, by name."""
    path = folder / REGISTRY_FILE
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["models"]
        return sorted(
            (
                BuiltinModel(
                    name=record["name"],
                    task=Task(record["task"]),
                    classes=tuple(record["classes"]),
                    summary=record["summary"],
                    path=folder / record["name"],
                    sha256=dict(record["sha256"]),
                )
                for record in records
            ),
            key=lambda model: model.name,
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ModelFolderError(
            f"The record of built-in models ({path}) is damaged ({error}); reinstall "
            "napari-dlbio (pip install --force-reinstall napari-dlbio)."
        ) from None


def builtin_model(name: str, folder: Path = BUILTIN_FOLDER) -> BuiltinModel:
    """The built-in model called ``name`` (with or without ``builtin:``), checked intact.

    Raises
    ------
    ConfigError
        No built-in model has that name; the message lists the names there are.
    ModelFolderError
        Its files are missing or differ from the package's record.
    """
    name = name.removeprefix(BUILTIN_PREFIX)
    models = {model.name: model for model in builtin_models(folder)}
    if name not in models:
        known = ", ".join(BUILTIN_PREFIX + known for known in models) or "none installed"
        raise ConfigError(f"There is no built-in model {name!r}. Built-in models: {known}.")
    model = models[name]
    verify(model)
    return model


def verify(model: BuiltinModel) -> None:
    """Compare every file of ``model`` with the SHA-256 the package recorded.

    Raises
    ------
    ModelFolderError
        A file is missing or was changed; reinstalling the package restores it.
    """
    for file_name, expected in model.sha256.items():
        path = model.path / file_name
        if not path.is_file():
            problem = f"{file_name} is missing"
        elif file_sha256(path) != expected:
            problem = f"{file_name} differs from the file napari-dlbio was shipped with"
        else:
            continue
        raise ModelFolderError(
            f"The built-in model {model.name} is damaged ({problem}, in {model.path}). "
            "Reinstall napari-dlbio (pip install --force-reinstall napari-dlbio) to restore it."
        )


def is_builtin_reference(reference: str | Path) -> bool:
    """Whether ``reference`` names a built-in model (``builtin:NAME``)."""
    return isinstance(reference, str) and reference.startswith(BUILTIN_PREFIX)


def model_folder_path(reference: str | Path, folder: Path = BUILTIN_FOLDER) -> Path:
    """The model folder ``reference`` names: ``builtin:NAME`` (checked intact) or a path."""
    if is_builtin_reference(reference):
        return builtin_model(str(reference), folder).path
    return Path(reference)


def builtin_name(path: Path | None, folder: Path = BUILTIN_FOLDER) -> str | None:
    """The name of the built-in model stored at ``path``, or None for any other folder."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    if resolved.parent != folder.resolve():
        return None
    return resolved.name if (folder / REGISTRY_FILE).is_file() else None


def model_label(path: Path | None, folder: Path = BUILTIN_FOLDER) -> str:
    """How messages name a model: ``builtin:NAME``, its folder, or "the model in memory"."""
    name = builtin_name(path, folder)
    if name is not None:
        return BUILTIN_PREFIX + name
    return str(path) if path is not None else "the model in memory"


def refuse_builtin_destination(path: Path, folder: Path = BUILTIN_FOLDER) -> None:
    """Refuse to write anything into the package's built-in models.

    Raises
    ------
    ModelFolderError
        ``path`` is inside the folder of the built-in models.
    """
    if Path(path).resolve().is_relative_to(folder.resolve()):
        raise ModelFolderError(
            f"{path} is inside napari-dlbio's built-in models, which are never overwritten; "
            "save the model to a folder of your own."
        )


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_model(folder: Path, name: str, summary: str) -> BuiltinModel:
    """Add (or renew) the record of the model folder ``folder / name`` in the registry.

    Used by ``scripts/train_builtin_models.py`` after it installs a freshly trained model.
    """
    model_folder = folder / name
    document = json.loads((model_folder / "config.json").read_text(encoding="utf-8"))
    model = BuiltinModel(
        name=name,
        task=Task(document["task"]),
        classes=tuple(document["config"]["class_names"]),
        summary=summary,
        path=model_folder,
        sha256={
            path.name: file_sha256(path)
            for path in sorted(model_folder.iterdir())
            if path.is_file()
        },
    )
    others = [other for other in builtin_models(folder) if other.name != name]
    records = [
        {
            "name": entry.name,
            "task": entry.task.value,
            "classes": list(entry.classes),
            "summary": entry.summary,
            "sha256": entry.sha256,
        }
        for entry in sorted([*others, model], key=lambda entry: entry.name)
    ]
    (folder / REGISTRY_FILE).write_text(
        json.dumps({"models": records}, indent=2) + "\n", encoding="utf-8"
    )
    return model
