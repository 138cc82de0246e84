"""No code runs from a model file, config.json follows its schema, nothing escapes the folder.

tests/models/test_store.py already refuses a Lambda layer, a newer schema, an unknown setting
and an impossible patch size.  Here: an archive that names a module outside Keras (which
must not even be imported), a registered custom layer, archive members named outside the
archive, links that lead out of the model folder, and config.json files with unknown keys,
wrong types, absurd sizes, non-finite numbers, deep nesting, a huge size or bad encoding.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import ModelFolderError


@pytest.fixture
def store():
    from napari_dlbio.models import store

    return store


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _rewrite_archive(path: Path, edit) -> None:
    """Rewrite a .keras zip with ``edit(name, data) -> (name, data)`` applied to members."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            for new_name, new_data in edit(name, data):
                archive.writestr(new_name, new_data)


def test_models_load_with_keras_safe_mode_on(model_folders, store, monkeypatch):
    calls = []
    real = store.keras.saving.load_model

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(store.keras.saving, "load_model", spy)
    store.load_model_folder(model_folders["segmentation"])
    assert calls == [{"compile": False, "safe_mode": True}]


def test_a_model_naming_a_foreign_module_is_refused_without_importing_it(
    model_folders, store, tmp_path, monkeypatch
):
    marker = tmp_path / "payload ran"
    package = tmp_path / "site"
    package.mkdir()
    (package / "dlbio_payload.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('pwned')\n"
        "class Payload:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(package))
    folder = _copy(model_folders["segmentation"], tmp_path / "model")

    def poison(name, data):
        if name == "config.json":
            document = json.loads(data)
            document["config"]["layers"][1].update(
                {"module": "dlbio_payload", "class_name": "Payload", "registered_name": None}
            )
            data = json.dumps(document).encode()
        yield name, data

    _rewrite_archive(folder / "model.keras", poison)

    with pytest.raises(ModelFolderError, match=r"custom code.*dlbio_payload") as caught:
        store.load_model_folder(folder)
    assert "never runs code from a model file" in str(caught.value)
    assert not marker.exists()
    assert "dlbio_payload" not in sys.modules


def test_a_registered_custom_layer_is_refused(store, tiny_segmentation_config, tmp_path):
    keras = store.keras

    @keras.saving.register_keras_serializable(package="dlbio_test_custom")
    class Doubling(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, Doubling()(inputs))
    folder = store.save_model_folder(
        tmp_path / "custom", model, Task.SEGMENTATION, tiny_segmentation_config
    )
    with pytest.raises(ModelFolderError, match="custom code") as caught:
        store.load_model_folder(folder)
    assert Doubling.__module__ in str(caught.value)


@pytest.mark.parametrize("member", ["../../outside.txt", "/etc/cron.d/job", "assets/../../x"])
def test_archive_members_named_outside_the_archive_are_refused(
    member, model_folders, store, tmp_path
):
    folder = _copy(model_folders["segmentation"], tmp_path / "model")

    def smuggle(name, data):
        yield name, data
        if name == "config.json":
            yield member, b"payload"

    _rewrite_archive(folder / "model.keras", smuggle)
    with pytest.raises(ModelFolderError, match="outside the archive"):
        store.load_model_folder(folder)
    assert not (tmp_path / "outside.txt").exists()


def test_an_archive_without_a_network_description_is_refused(model_folders, store, tmp_path):
    folder = _copy(model_folders["segmentation"], tmp_path / "model")
    _rewrite_archive(
        folder / "model.keras",
        lambda name, data: [] if name == "config.json" else [(name, data)],
    )
    with pytest.raises(ModelFolderError, match="no network description"):
        store.load_model_folder(folder)


@pytest.mark.parametrize("name", ["model.keras", "config.json", "history.json", "metrics.json"])
def test_links_out_of_the_model_folder_are_refused(name, model_folders, store, tmp_path):
    folder = _copy(model_folders["segmentation"], tmp_path / "model")
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    # A perfectly valid file, but not the folder's own.
    shutil.move(folder / name, outside)
    (folder / name).symlink_to(outside)
    with pytest.raises(ModelFolderError, match="outside the model folder") as caught:
        store.load_model_folder(folder)
    assert name in str(caught.value)


def test_links_inside_the_model_folder_are_fine(model_folders, store, tmp_path):
    folder = _copy(model_folders["segmentation"], tmp_path / "model")
    (folder / "config.json").rename(folder / "config v1.json")
    (folder / "config.json").symlink_to("config v1.json")
    assert store.load_model_folder(folder).task is Task.SEGMENTATION


def _document(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


SEGMENTATION_DOCUMENTS = {
    # unknown keys
    "unknown top-level key": (lambda d: d.update(model_file="../x.keras"), "unknown keys"),
    "unknown setting": (lambda d: d["config"].update(weights="/etc/passwd"), "weights"),
    "unknown network setting": (
        lambda d: d["config"]["network"].update(activation="gelu"),
        "activation",
    ),
    # wrong types
    "version as text": (lambda d: d.update(schema_version="1"), "schema_version"),
    "version as true": (lambda d: d.update(schema_version=True), "schema_version"),
    "version 0": (lambda d: d.update(schema_version=0), "schema_version"),
    "unknown task": (lambda d: d.update(task="regression"), "unknown task"),
    "task as number": (lambda d: d.update(task=5), "unknown task"),
    "config as list": (lambda d: d.update(config=[1, 2]), "JSON object"),
    "patch size as text": (lambda d: d["config"].update(patch_size="64"), "whole number"),
    "depth as fraction": (lambda d: d["config"]["network"].update(depth=2.5), "whole number"),
    "class names as numbers": (lambda d: d["config"].update(class_names=[1, 2]), "text"),
    "flag as text": (lambda d: d["config"].update(augment_flips="true"), "true or false"),
    "loss unknown": (lambda d: d["config"].update(loss="mse"), "is not one of"),
    # absurd sizes
    "10000 classes": (
        lambda d: d["config"].update(class_names=[f"c{i}" for i in range(10_000)]),
        "At most 255",
    ),
    "a million channels": (lambda d: d["config"].update(input_channels=10**6), "channels"),
    "huge batch": (lambda d: d["config"].update(batch_size=10**9), "Batch size"),
    "huge tiles": (lambda d: d["config"].update(tile_size=2**40), "Tile size"),
    "huge U-Net": (
        lambda d: d["config"]["network"].update(depth=8, base_filters=512),
        "million weights",
    ),
    "endless epochs": (lambda d: d["config"].update(epochs=10**12), "Epochs"),
    # non-finite numbers (JSON from Python may hold NaN and Infinity)
    "NaN learning rate": (lambda d: d["config"].update(learning_rate=float("nan")), "Learning"),
    "infinite dropout": (
        lambda d: d["config"]["network"].update(dropout=float("inf")),
        "Dropout",
    ),
    "NaN percentile": (lambda d: d["config"].update(normalise_high=float("nan")), "percentiles"),
}


@pytest.mark.parametrize("case", list(SEGMENTATION_DOCUMENTS))
def test_config_json_is_checked_against_its_schema(case, model_folders, store, tmp_path):
    edit, words = SEGMENTATION_DOCUMENTS[case]
    folder = _copy(model_folders["segmentation"], tmp_path / "model")
    document = _document(folder)
    edit(document)
    (folder / "config.json").write_text(json.dumps(document))
    with pytest.raises(ModelFolderError, match=words) as caught:
        store.load_model_folder(folder)
    assert "config.json" in str(caught.value)


CLASSIFIER_DOCUMENTS = {
    "unknown setting": (lambda c: c.update(layers=99), "layers"),
    "one class": (lambda c: c.update(class_names=["healthy"]), "at least two classes"),
    "huge input": (lambda c: c.update(input_size=10**9), "input_size"),
    "huge filters": (lambda c: c.update(filters=10**6), "filters"),
    "NaN statistics": (
        lambda c: c.update(channel_mean=[float("nan")] * 3, channel_std=[1.0] * 3),
        "finite",
    ),
    "zero std": (lambda c: c.update(channel_mean=[0.0] * 3, channel_std=[0.0] * 3), "positive"),
    "backbone unknown": (lambda c: c.update(backbone="ResNet1000"), "is not one of"),
}


@pytest.mark.parametrize("case", list(CLASSIFIER_DOCUMENTS))
def test_classifier_config_json_is_checked_against_its_schema(case, model_folders, store, tmp_path):
    edit, words = CLASSIFIER_DOCUMENTS[case]
    folder = _copy(model_folders["classification"], tmp_path / "model")
    document = _document(folder)
    edit(document["config"])
    (folder / "config.json").write_text(json.dumps(document))
    with pytest.raises(ModelFolderError, match=words):
        store.load_model_folder(folder, Task.CLASSIFICATION)


RAW_DOCUMENTS = {
    "not JSON": (b"{", "not valid JSON"),
    "not UTF-8": ('{"task": "caf\u00e9"}'.encode("latin-1"), "not valid JSON"),
    "nested 100000 deep": (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    "a number of 5000 digits": (b'{"schema_version": ' + b"9" * 5000 + b"}", "not valid JSON"),
    "larger than 10 MiB": (b'{"pad": "' + b" " * (11 * 2**20) + b'"}', "too large"),
    "a JSON list": (b"[1, 2, 3]", "JSON object"),
}


@pytest.mark.parametrize("case", list(RAW_DOCUMENTS))
def test_unreadable_config_json_is_refused(case, model_folders, store, tmp_path):
    data, words = RAW_DOCUMENTS[case]
    folder = _copy(model_folders["segmentation"], tmp_path / "model")
    (folder / "config.json").write_bytes(data)
    with pytest.raises(ModelFolderError, match=words):
        store.load_model_folder(folder)


def test_a_config_json_that_is_a_device_or_a_folder_is_refused(model_folders, store, tmp_path):
    folder = _copy(model_folders["segmentation"], tmp_path / "model")
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    with pytest.raises(ModelFolderError, match="missing"):
        store.load_model_folder(folder)
    (folder / "config.json").rmdir()
    (folder / "config.json").symlink_to("/dev/zero")
    with pytest.raises(ModelFolderError, match="outside the model folder"):
        store.load_model_folder(folder)
