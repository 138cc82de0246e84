"""Classifier networks: softmax over the classes, standard layers, local backbone weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_dlbio.core.classifier_config import Backbone, ClassifierConfig, Normalisation
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import ConfigError, InputDataError
from napari_dlbio.models._tf import load_keras
from napari_dlbio.models.classifier import build_classifier, set_body_trainable
from napari_dlbio.models.store import load_model_folder, save_model_folder

keras = load_keras()
SMALL = ClassifierConfig(
    class_names=("healthy leaf", "mosaic virus", "blight"), input_size=32, filters=8, blocks=3
)


def _pixels(n: int = 4, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3)).astype(np.float32)


def test_small_cnn_gives_a_probability_per_class():
    model = build_classifier(SMALL)

    probabilities = model(_pixels(), training=False).numpy()

    assert probabilities.shape == (4, 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


def test_small_cnn_shape_follows_the_config():
    config = SMALL.replace(stem_stride=2, blocks=4, convs_per_block=2, filters=4, input_size=64)
    model = build_classifier(config)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]

    assert [conv.filters for conv in convs] == [4, 4, 8, 8, 16, 16, 32, 32]
    # Stride 2, then three poolings: the last feature map is 64 / 16 = 4 pixels wide.
    assert tuple(convs[-1].output.shape[1:3]) == (4, 4)


def test_freezing_the_body_leaves_only_the_top_to_train():
    model = build_classifier(SMALL)
    head = {id(weight) for weight in model.get_layer("class_probabilities").trainable_weights}

    set_body_trainable(model, False)
    frozen = {id(weight) for weight in model.trainable_weights}
    set_body_trainable(model, True)
    unfrozen = [layer for layer in model.layers if layer.trainable_weights]

    assert frozen == head
    assert model.get_layer("block1_conv1").trainable
    # Batch norm stays frozen, so it keeps running in inference mode while fine-tuning.
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in unfrozen)


def test_recorded_statistics_normalise_inside_the_model():
    config = SMALL.replace(channel_mean=(100.0, 50.0, 25.0), channel_std=(10.0, 5.0, 2.5))
    model = build_classifier(config)
    normalise = keras.Model(model.inputs, model.get_layer("normalisation").output)
    pixel = np.broadcast_to(np.array([110.0, 45.0, 25.0], np.float32), (1, 32, 32, 3))

    assert np.allclose(normalise(pixel).numpy()[0, 0, 0], [1.0, -1.0, 0.0], atol=1e-5)


def test_saved_classifier_loads_in_safe_mode_and_predicts_the_same(tmp_path: Path):
    model = build_classifier(SMALL.replace(channel_mean=(1.0, 2.0, 3.0), channel_std=(4.0,) * 3))
    before = model(_pixels(), training=False).numpy()

    save_model_folder(tmp_path / "model", model, Task.CLASSIFICATION, SMALL)
    loaded = load_model_folder(tmp_path / "model", Task.CLASSIFICATION)

    assert np.array_equal(loaded.model(_pixels(), training=False).numpy(), before)
    assert loaded.config == SMALL


def test_impossible_settings_are_refused():
    with pytest.raises(ConfigError, match="at least two classes"):
        ClassifierConfig(class_names=("only",))
    with pytest.raises(ConfigError, match="input_size"):
        ClassifierConfig(input_size=16, blocks=5)
    with pytest.raises(ConfigError, match="RGB"):
        ClassifierConfig(backbone=Backbone.MOBILENET_V2, input_channels=1)
    with pytest.raises(ConfigError, match="unique"):
        ClassifierConfig(class_names=("a", "a"))
    with pytest.raises(ConfigError, match="one value per input channel"):
        ClassifierConfig(channel_mean=(1.0,), channel_std=(1.0,))
    with pytest.raises(ConfigError, match="is not one of"):
        ClassifierConfig.from_dict({"backbone": "ResNet"})


def test_config_round_trips_through_json():
    config = ClassifierConfig(
        class_names=("a b", "c/d"),
        backbone=Backbone.EFFICIENTNET_B0,
        normalisation=Normalisation.RAW_0_255,
        time_budget_s=60.0,
        early_stopping_patience=None,
    )

    assert ClassifierConfig.from_json(config.to_json()) == config


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    path = tmp_path_factory.mktemp("weights") / "local mobilenet.weights.h5"
    backbone.save_weights(path)
    return path, backbone.get_weights()


def test_backbone_weights_come_from_a_local_file(mobilenet_weights: tuple[Path, list]):
    path, expected = mobilenet_weights
    config = SMALL.replace(backbone=Backbone.MOBILENET_V2)

    model = build_classifier(config, path)
    fresh = build_classifier(config)

    loaded = model.get_layer("backbone").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, expected, strict=True))
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(fresh.get_layer("backbone").get_weights(), expected, strict=True)
    )
    set_body_trainable(model, False)
    assert model.get_layer("backbone").trainable_weights == []
    assert model.get_layer("class_probabilities").trainable_weights


def test_weights_that_do_not_fit_the_backbone_are_refused(tmp_path: Path):
    other = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35
    )
    wrong = tmp_path / "alpha 0.35.weights.h5"
    other.save_weights(wrong)
    config = SMALL.replace(backbone=Backbone.MOBILENET_V2)

    with pytest.raises(InputDataError, match="does not hold MobileNetV2 weights"):
        build_classifier(config, wrong)
    with pytest.raises(InputDataError, match="does not exist"):
        build_classifier(config, tmp_path / "missing.weights.h5")
