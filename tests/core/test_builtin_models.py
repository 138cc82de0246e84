"""The package's record of built-in models: names, integrity and read-only folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_dlbio.core.builtin_models import (
    builtin_model,
    builtin_models,
    builtin_name,
    model_folder_path,
    model_label,
    record_model,
    refuse_builtin_destination,
)
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import ConfigError, ModelFolderError


def _install(folder: Path, name: str, classes: list[str], task: str = "segmentation") -> Path:
    """A model folder as the training script installs it, recorded in the registry."""
    model = folder / name
    model.mkdir(parents=True)
    document = {"task": task, "config": {"class_names": classes}}
    (model / "config.json").write_text(json.dumps(document))
    (model / "model.keras").write_bytes(b"weights" * 100)
    (model / "README.md").write_text(f"# {name}\n")
    record_model(folder, name, f"{name} summary")
    return model


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    folder = tmp_path / "builtin_models"
    _install(folder, "em-membranes", ["background", "membrane"])
    _install(folder, "leaves", ["a", "b", "c"], task="classification")
    return folder


def test_the_record_lists_every_model_with_task_classes_and_size(installed):
    models = {model.name: model for model in builtin_models(installed)}
    assert set(models) == {"em-membranes", "leaves"}
    leaves = models["leaves"]
    assert leaves.task is Task.CLASSIFICATION
    assert leaves.classes == ("a", "b", "c")
    assert leaves.reference == "builtin:leaves"
    assert leaves.size_bytes > 700
    listed = leaves.to_dict()
    assert listed["path"] == str(installed / "leaves")
    assert {"name", "task", "classes", "path"} <= set(listed)


def test_a_reference_resolves_to_the_checked_folder(installed):
    assert model_folder_path("builtin:em-membranes", installed) == installed / "em-membranes"
    assert model_folder_path("some/folder", installed) == Path("some/folder")
    assert builtin_name(installed / "em-membranes", installed) == "em-membranes"
    assert builtin_name(installed.parent, installed) is None


def test_an_unknown_name_gets_the_list_of_names(installed):
    with pytest.raises(ConfigError, match=r"builtin:em-membranes, builtin:leaves"):
        builtin_model("builtin:em-membrane", installed)


@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_damaged_model_is_refused_with_a_reinstall_hint(installed, damage):
    weights = installed / "em-membranes" / "model.keras"
    if damage == "changed":
        weights.write_bytes(b"weightz" * 100)
    else:
        weights.unlink()
    with pytest.raises(ModelFolderError, match=r"damaged.*Reinstall napari-dlbio"):
        builtin_model("em-membranes", installed)
    builtin_model("leaves", installed)  # the others stay usable


def test_nothing_is_ever_written_into_the_built_in_folder(installed, tmp_path):
    with pytest.raises(ModelFolderError, match="never overwritten"):
        refuse_builtin_destination(installed / "em-membranes", installed)
    with pytest.raises(ModelFolderError, match="never overwritten"):
        refuse_builtin_destination(installed / "new-model", installed)
    refuse_builtin_destination(tmp_path / "my-model", installed)


def test_a_damaged_record_says_to_reinstall(installed):
    (installed / "registry.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="reinstall napari-dlbio"):
        builtin_models(installed)


def test_messages_name_a_built_in_model_by_its_reference(installed, tmp_path):
    assert model_label(installed / "leaves", installed) == "builtin:leaves"
    assert model_label(tmp_path / "mine", installed) == str(tmp_path / "mine")
    assert model_label(None, installed) == "the model in memory"
