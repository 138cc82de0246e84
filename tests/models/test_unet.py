"""The U-Net builder and the segmentation config it is built from."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dlbio.core.errors import ConfigError
from napari_dlbio.core.segmentation_config import LossKind, SegmentationConfig, UNetConfig
from napari_dlbio.models._tf import load_keras
from napari_dlbio.models.unet import build_unet, output_channels

TINY = UNetConfig(depth=2, base_filters=4)


def test_two_classes_give_one_sigmoid_channel_for_any_divisible_size():
    model = build_unet(TINY, input_channels=1, n_classes=2)
    assert TINY.size_multiple == 8  # a 2 x 2 stem, then 2 poolings
    for shape in ((1, 32, 48, 1), (2, 24, 8, 1)):
        out = np.asarray(model(np.random.rand(*shape).astype("float32")))
        assert out.shape == (*shape[:3], 1)
        assert out.min() >= 0
        assert out.max() <= 1
    assert model.get_layer("output").get_config()["activation"] == "sigmoid"


def test_several_classes_give_a_softmax_over_all_classes():
    model = build_unet(TINY, input_channels=3, n_classes=4)
    out = np.asarray(model(np.random.rand(1, 16, 16, 3).astype("float32")))
    assert out.shape == (1, 16, 16, 4)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)
    assert output_channels(4) == 4


def test_only_standard_keras_layers_so_safe_mode_needs_nothing():
    model = build_unet(UNetConfig(depth=3, base_filters=4, dropout=0.2, l2=1e-4), 1, 3)
    for layer in model.layers:
        assert type(layer).__module__.startswith("keras.src.layers"), type(layer)
        assert type(layer).__name__ != "Lambda"


def test_classic_and_slim_configurations_are_both_expressible():
    classic = SegmentationConfig.classic()
    assert classic.network == UNetConfig(
        depth=4, stem_stride=1, base_filters=64, batch_norm=False, dropout=0.5, l2=0.0
    )
    assert classic.class_weights
    assert classic.learning_rate == pytest.approx(1e-4)
    slim = SegmentationConfig()
    assert slim.network.batch_norm
    assert slim.network.base_filters < 64
    classic_model = build_unet(classic.network, 1, 2)
    slim_model = build_unet(slim.network, 1, 2)
    names = [layer.name for layer in classic_model.layers]
    assert not any("_bn" in name for name in names)
    assert "bottleneck_dropout" in names
    assert "enc3_dropout" in names
    assert any("_bn" in layer.name for layer in slim_model.layers)
    assert classic_model.count_params() > 10 * slim_model.count_params()


def test_the_stem_works_on_pixel_blocks_and_the_output_returns_to_every_pixel():
    classic_layout = build_unet(UNetConfig(depth=2, stem_stride=1, base_filters=4), 1, 3)
    blocks = build_unet(UNetConfig(depth=2, stem_stride=2, base_filters=4), 1, 3)
    image = np.random.rand(1, 16, 24, 1).astype("float32")
    for model in (classic_layout, blocks):
        assert np.asarray(model(image)).shape == (1, 16, 24, 3)
    enc0 = keras_output_shape(blocks, "enc0_relu2", image)
    assert enc0 == (1, 8, 12, 4)
    assert keras_output_shape(classic_layout, "enc0_relu2", image) == (1, 16, 24, 4)
    assert "stem_conv" not in {layer.name for layer in classic_layout.layers}


@pytest.mark.parametrize(
    "network",
    [
        UNetConfig(depth=2, base_filters=4),
        UNetConfig(depth=3, stem_stride=1, base_filters=4),
        UNetConfig(depth=2, stem_stride=4, base_filters=8),
    ],
)
def test_weight_count_matches_the_built_network(network):
    model = build_unet(network, input_channels=1, n_classes=2)
    # Convolution kernels between the image and the last features (the 1-channel output
    # layer and every bias and batch-norm parameter left out).
    kernels = sum(
        int(np.prod(layer.kernel.shape))
        for layer in model.layers
        if hasattr(layer, "kernel") and layer.name != "output"
    )
    assert network.weight_count == kernels


def test_a_stem_stride_other_than_1_2_or_4_is_rejected():
    with pytest.raises(ConfigError, match="stem stride"):
        UNetConfig(stem_stride=3)


def keras_output_shape(model, layer_name, image):
    keras = load_keras()
    probe = keras.Model(model.inputs, model.get_layer(layer_name).output)
    return tuple(np.asarray(probe(image)).shape)


def test_depth_sets_the_number_of_pooling_steps():
    model = build_unet(UNetConfig(depth=3, base_filters=4), 1, 2)
    pools = [layer for layer in model.layers if "pool" in layer.name]
    assert len(pools) == 3
    assert model.get_layer("bottleneck_conv1").filters == 4 * 2**3


def test_config_round_trips_through_json():
    config = SegmentationConfig(
        class_names=("background", "mitochondrion", "synapse"),
        network=UNetConfig(depth=3, base_filters=8, dropout=0.1),
        loss=LossKind.CROSS_ENTROPY_DICE,
        time_budget_s=30.0,
        early_stopping_patience=None,
    )
    assert SegmentationConfig.from_json(config.to_json()) == config
    assert config.n_classes == 3
    assert config.to_dict()["loss"] == "cross-entropy + dice"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"patch_size": 100}, "multiple of 32"),
        ({"class_names": ("background",)}, "at least 2 classes"),
        ({"class_names": ("a", "a")}, "different"),
        ({"learning_rate": 0.0}, "Learning rate"),
        ({"batch_size": 0}, "Batch size"),
        ({"patch_size": 1 << 14}, "Patch size"),
        ({"tile_size": 100}, "Tile size"),
        ({"tile_overlap": 300}, "overlap"),
        ({"normalise_low": 99.9, "normalise_high": 1.0}, "percentiles"),
        ({"validation_fraction": 0.9}, "Validation fraction"),
        ({"time_budget_s": -1.0}, "time budget"),
        ({"early_stopping_patience": 0}, "patience"),
        ({"network": UNetConfig(depth=5), "patch_size": 32}, "multiple of 64"),
    ],
)
def test_impossible_values_are_rejected_with_a_clear_message(changes, words):
    with pytest.raises(ConfigError, match=words):
        SegmentationConfig(**changes)


def test_unknown_settings_and_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match="Unknown SegmentationConfig setting"):
        SegmentationConfig.from_dict({"patchsize": 64})
    with pytest.raises(ConfigError, match="not one of"):
        SegmentationConfig.from_dict({"loss": "hinge"})
    with pytest.raises(ConfigError, match="U-Net depth"):
        SegmentationConfig.from_dict({"network": {"depth": 0}})
