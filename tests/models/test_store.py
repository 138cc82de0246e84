"""Model folders of segmentation models: safe round trip, refusals, atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import ModelFolderError
from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig
from napari_dlbio.models._tf import load_keras
from napari_dlbio.models.segmentation import predict_segmentation, train_segmentation
from napari_dlbio.models.store import load_model_folder, save_model_folder

keras = load_keras()

CONFIG = SegmentationConfig(
    class_names=("background", "mitochondrion", "synapse"),
    network=UNetConfig(depth=2, base_filters=4, dropout=0.1, l2=1e-5),
    patch_size=32,
    batch_size=2,
    epochs=1,
    steps_per_epoch=2,
    validation_fraction=0.0,
    tile_size=32,
    tile_overlap=8,
)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (2, 48, 48), dtype=np.uint8)
    annotations = (images // 86 + 1).astype(np.uint8)
    return images, annotations


@pytest.fixture(scope="module")
def trained():
    images, annotations = _data()
    return train_segmentation(images, annotations, CONFIG).model


def _save(folder, trained):
    return save_model_folder(
        folder, trained.model, Task.SEGMENTATION, trained.config, trained.history, trained.metrics
    )


def test_round_trip_loads_in_safe_mode_and_predicts_identically(tmp_path, trained):
    folder = _save(tmp_path / "model", trained)
    loaded = load_model_folder(folder, Task.SEGMENTATION)
    assert loaded.config == trained.config
    assert loaded.history == trained.history
    assert loaded.metrics["best_epoch"] == trained.metrics["best_epoch"]
    images, _ = _data(seed=1)
    before = predict_segmentation(trained, images)
    after = predict_segmentation(loaded, images)
    np.testing.assert_array_equal(after.probabilities, before.probabilities)
    np.testing.assert_array_equal(after.mask, before.mask)


def test_a_model_with_a_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    model = keras.Model(inputs, outputs)
    folder = save_model_folder(tmp_path / "unsafe", model, Task.SEGMENTATION, CONFIG)
    with pytest.raises(ModelFolderError, match="custom code"):
        load_model_folder(folder)


def _edit_config(folder, **changes):
    path = folder / "config.json"
    document = json.loads(path.read_text())
    for key, value in changes.items():
        if key == "config_extra":
            document["config"].update(value)
        else:
            document[key] = value
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        ({"schema_version": 99}, "newer napari-dlbio"),
        ({"config_extra": {"tile_szie": 64}}, "Unknown SegmentationConfig setting.*tile_szie"),
        ({"config_extra": {"patch_size": 33}}, "multiple of 8"),
    ],
)
def test_edited_or_foreign_folders_are_refused(tmp_path, trained, edit, words):
    folder = _save(tmp_path / "model", trained)
    _edit_config(folder, **edit)
    with pytest.raises(ModelFolderError, match=words):
        load_model_folder(folder, Task.SEGMENTATION)


def test_a_model_of_another_task_is_refused(tmp_path, trained):
    folder = _save(tmp_path / "model", trained)
    with pytest.raises(ModelFolderError, match="holds a segmentation model"):
        load_model_folder(folder, Task.CLASSIFICATION)


def test_missing_files_are_refused(tmp_path, trained):
    folder = _save(tmp_path / "model", trained)
    (folder / "model.keras").unlink()
    with pytest.raises(ModelFolderError, match="missing"):
        load_model_folder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelFolderError, match=r"config\.json is missing"):
        load_model_folder(folder)
    with pytest.raises(ModelFolderError, match="not a folder"):
        load_model_folder(tmp_path / "nowhere")


def test_a_save_that_fails_midway_leaves_the_previous_model_in_place(
    tmp_path, trained, monkeypatch
):
    folder = _save(tmp_path / "model", trained)
    images, _ = _data(seed=2)
    expected = predict_segmentation(load_model_folder(folder), images).probabilities

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(trained.model, "save", broken_save)
    with pytest.raises(ModelFolderError, match="disk full"):
        _save(folder, trained)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]
    again = predict_segmentation(load_model_folder(folder), images).probabilities
    np.testing.assert_array_equal(again, expected)


def test_a_folder_that_is_not_a_model_is_never_overwritten(tmp_path, trained):
    folder = tmp_path / "my_data"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(ModelFolderError, match="not a napari-dlbio model folder"):
        _save(folder, trained)
    assert (folder / "notes.txt").read_text() == "precious"
