"""Image classifier networks: a small CNN built from the config, or a keras.applications
backbone with a new head.

Every network takes pixel values 0-255 (float) and starts with the normalisation the config
records, so a saved model needs nothing else to predict.  Only standard Keras layers are
used (no ``Lambda``), so models load with safe mode on.  A backbone is one nested layer
(named :data:`BACKBONE_LAYER`) whose weights can come from a local file; nothing is ever
downloaded.  Every layer before the global pooling is the network's *body*, which transfer
learning freezes while a new top (:data:`HEAD_LAYER`) learns new classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_dlbio.core.classifier_config import Backbone, ClassifierConfig, Normalisation
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.models._tf import load_keras

keras = load_keras()

BACKBONE_LAYER = "backbone"
POOLING_LAYER = "pooling"
HEAD_LAYER = "class_probabilities"
_MAX_FILTERS = 256
# What keras.applications multiplies into EfficientNet's stem when it loads ImageNet weights
# itself (see tensorflow/tensorflow#49930); we load the file ourselves, so we apply it too.
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def build_classifier(config: ClassifierConfig, backbone_weights: str | Path | None = None) -> Any:
    """Build an uncompiled classifier with a softmax over ``config.class_names``.

    Parameters
    ----------
    config
        Network, input size and normalisation.  With ``PER_CHANNEL`` normalisation and no
        recorded statistics yet, pixels are scaled to [-1, 1] instead.
    backbone_weights
        Local weights file of the backbone without its top (a Keras ``.weights.h5`` file,
        or the ``..._no_top.h5`` file that keras.applications downloads for ImageNet).
        ``None`` starts from random weights.  Ignored for the small CNN.

    Raises
    ------
    InputDataError
        The weights file is missing or does not fit the backbone.
    """
    n_classes = max(config.n_classes, 2)
    inputs = keras.Input(
        (config.input_size, config.input_size, config.input_channels), name="image"
    )
    x = _normalisation_layer(config)(inputs)
    regulariser = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    if config.backbone is Backbone.SMALL_CNN:
        x = _small_cnn(x, config, regulariser)
    else:
        backbone = _backbone(config, backbone_weights)
        # training=False keeps the backbone's batch norm statistics fixed even when its
        # weights are unfrozen for fine-tuning, as the Keras transfer-learning guide advises.
        x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name=POOLING_LAYER)(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, seed=config.seed, name="dropout")(x)
    outputs = keras.layers.Dense(
        n_classes,
        activation="softmax",
        kernel_regularizer=regulariser,
        kernel_initializer=keras.initializers.GlorotUniform(seed=config.seed),
        name=HEAD_LAYER,
    )(x)
    return keras.Model(inputs, outputs, name=_model_name(config))


def set_body_trainable(model: Any, trainable: bool) -> None:
    """Freeze or unfreeze the body of ``model``: every layer before the global pooling.

    Batch normalisation stays in inference mode in both cases, as the Keras
    transfer-learning guide advises, so that a few small batches of new images do not
    overwrite the statistics the weights were learnt with: a keras.applications backbone
    is called with ``training=False``, and the small CNN's batch-norm layers are never
    unfrozen here (in Keras 3 a frozen batch-norm layer uses its moving statistics and
    updates nothing).  Freezing needs a new ``compile`` to take effect.
    """
    for layer in model.layers:
        if layer.name == POOLING_LAYER:
            return
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)


def _model_name(config: ClassifierConfig) -> str:
    return "classifier_" + config.backbone.name.lower()


def _normalisation_layer(config: ClassifierConfig) -> Any:
    scaling = config.normalisation
    if scaling is Normalisation.PER_CHANNEL and config.channel_mean:
        return keras.layers.Normalization(
            mean=list(config.channel_mean),
            variance=[std**2 for std in config.channel_std],
            name="normalisation",
        )
    if scaling is Normalisation.RAW_0_255:
        return keras.layers.Identity(name="normalisation")
    return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalisation")


def _small_cnn(x: Any, config: ClassifierConfig, regulariser: Any) -> Any:
    filters = config.filters
    for block in range(1, config.blocks + 1):
        for conv in range(1, config.convs_per_block + 1):
            name = f"block{block}_conv{conv}"
            stem = block == 1 and conv == 1
            x = keras.layers.Conv2D(
                filters,
                3,
                strides=config.stem_stride if stem else 1,
                padding="same",
                use_bias=not config.batch_norm,
                kernel_regularizer=regulariser,
                kernel_initializer=keras.initializers.HeNormal(
                    seed=config.seed + 10 * block + conv
                ),
                name=name,
            )(x)
            if config.batch_norm:
                # Momentum 0.9 instead of Keras' 0.99: with a few dozen steps per epoch the
                # moving statistics must follow the weights within an epoch or validation lags.
                x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
            x = keras.layers.ReLU(name=f"{name}_relu")(x)
        # The last block is not pooled: global pooling follows, and Grad-CAM reads this
        # feature map, so it keeps twice the resolution.
        if block < config.blocks:
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
        filters = min(filters * 2, _MAX_FILTERS)
    return x


def _backbone(config: ClassifierConfig, weights: str | Path | None) -> Any:
    shape = (config.input_size, config.input_size, 3)
    applications = keras.applications
    if config.backbone is Backbone.MOBILENET_V2:
        build = applications.MobileNetV2
    else:
        build = applications.EfficientNetB0
    # A fixed name lets training freeze the backbone and Grad-CAM find its feature map.
    network = build(input_shape=shape, include_top=False, weights=None, name=BACKBONE_LAYER)
    if weights is not None:
        _load_backbone_weights(network, Path(weights), config.backbone)
    return network


def _load_backbone_weights(network: Any, path: Path, backbone: Backbone) -> None:
    if not path.is_file():
        raise InputDataError(
            f"Backbone weights file {path} does not exist; give the path of a local "
            f"{backbone.value} weights file (without the classification top)."
        )
    try:
        network.load_weights(path)
    except (ValueError, OSError, KeyError, TypeError) as error:
        raise InputDataError(
            f"{path} does not hold {backbone.value} weights without the classification top "
            f"({error}). Use a file saved from keras.applications.{backbone.value}"
            "(include_top=False)."
        ) from None
    if backbone is Backbone.EFFICIENTNET_B0:
        stem = next(
            layer for layer in network.layers if isinstance(layer, keras.layers.Normalization)
        )
        # Dividing by sqrt(stddev) after normalising equals multiplying the variance by it.
        stem.adapt_variance.assign(stem.adapt_variance * list(_IMAGENET_STDDEV_RGB))
        stem.finalize_state()
