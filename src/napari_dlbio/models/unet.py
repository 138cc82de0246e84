"""The 2D U-Net, built from standard Keras layers only (so safe-mode loading needs nothing)."""

from __future__ import annotations

from typing import Any

from napari_dlbio.core.segmentation_config import UNetConfig
from napari_dlbio.models._tf import load_keras

keras = load_keras()
layers = keras.layers


def output_channels(n_classes: int) -> int:
    """Channels of the network output: 1 (sigmoid) for one foreground class, else ``n_classes``."""
    return 1 if n_classes == 2 else n_classes


def build_unet(network: UNetConfig, input_channels: int, n_classes: int) -> Any:
    """Build a U-Net for images of any size divisible by ``network.size_multiple``.

    Parameters
    ----------
    network
        Depth, base filters, batch norm, dropout and L2 penalty.
    input_channels
        Channels of the input images.
    n_classes
        Network classes including the background; 2 gives one sigmoid output channel
        (probability of the foreground), more give a softmax over ``n_classes`` channels.

    Returns
    -------
    keras.Model
        Input ``(None, None, input_channels)``; output ``(None, None, output_channels)``.
        Layers are named ``stem_...``, ``enc{level}_...``, ``bottleneck_...``,
        ``dec{level}_...`` and ``output`` so tools such as Grad-CAM can find them.
    """
    regulariser = keras.regularizers.L2(network.l2) if network.l2 > 0 else None
    inputs = keras.Input(shape=(None, None, input_channels), name="image")
    x = inputs
    stride = network.stem_stride
    if stride > 1:
        x = _convolution(
            x,
            network.base_filters,
            stride + 1,
            stride,
            network.batch_norm,
            regulariser,
            "stem_conv",
        )
        x = _normalise_and_activate(x, network.batch_norm, "stem_")
    skips = []
    for level in range(network.depth):
        filters = network.base_filters * 2**level
        # The classic U-Net drops out in its two deepest levels only.
        dropout = network.dropout if level == network.depth - 1 else 0.0
        x = _conv_block(x, filters, network.batch_norm, dropout, regulariser, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = _conv_block(
        x,
        network.base_filters * 2**network.depth,
        network.batch_norm,
        network.dropout,
        regulariser,
        "bottleneck",
    )
    for level in reversed(range(network.depth)):
        filters = network.base_filters * 2**level
        x = layers.Conv2DTranspose(
            filters,
            2,
            strides=2,
            padding="same",
            kernel_initializer="he_normal",
            kernel_regularizer=regulariser,
            name=f"dec{level}_up",
        )(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([skips[level], x])
        x = _conv_block(x, filters, network.batch_norm, 0.0, regulariser, f"dec{level}")
    channels = output_channels(n_classes)
    # With a stem, each feature vector of a 2 x 2 (stride x stride) block gives the classes
    # of the block's pixels (overlapping kernels measured no better on ISBI, and slower);
    # otherwise a 1 x 1 convolution gives the classes of its pixel.
    output_layer = layers.Conv2DTranspose if stride > 1 else layers.Conv2D
    outputs = output_layer(
        channels,
        stride,
        strides=stride,
        activation="sigmoid" if channels == 1 else "softmax",
        dtype="float32",
        name="output",
    )(x)
    return keras.Model(inputs, outputs, name="unet")


def _conv_block(
    x: Any, filters: int, batch_norm: bool, dropout: float, regulariser: Any, name: str
) -> Any:
    for index in (1, 2):
        x = _convolution(x, filters, 3, 1, batch_norm, regulariser, f"{name}_conv{index}")
        x = _normalise_and_activate(x, batch_norm, f"{name}_", str(index))
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def _convolution(
    x: Any, filters: int, size: int, stride: int, batch_norm: bool, regulariser: Any, name: str
) -> Any:
    return layers.Conv2D(
        filters,
        size,
        strides=stride,
        padding="same",
        use_bias=not batch_norm,  # batch norm's shift makes a bias redundant
        kernel_initializer="he_normal",
        kernel_regularizer=regulariser,
        name=name,
    )(x)


def _normalise_and_activate(x: Any, batch_norm: bool, prefix: str, index: str = "") -> Any:
    if batch_norm:
        # Momentum 0.9 (not Keras' 0.99) lets the inference statistics catch up within
        # the few hundred steps of an interactive training run.
        x = layers.BatchNormalization(momentum=0.9, name=f"{prefix}bn{index}")(x)
    return layers.Activation("relu", name=f"{prefix}relu{index}")(x)
