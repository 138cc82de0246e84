"""Class activation maps: where in an image a network looked to decide for a class.

Grad-CAM (Selvaraju et al. 2017) weights the channels of a feature map by the mean gradient
of a class score and keeps the positive part.  The score is always a logit, not a
probability: a confident prediction saturates the softmax or sigmoid and its gradient
vanishes.

Small-CNN classifiers get Guided Grad-CAM (Selvaraju et al. 2017) at the network's input
resolution: the Grad-CAM of the last block (for the built-in leaf network's 128-pixel input,
8 x 8 cells), resized to the input and scaled to [0, 1], times the magnitude (largest absolute
value over the colour channels) of guided backpropagation's input gradient (Springenberg et al.
2015: through every ReLU, only positive gradients of positive inputs pass), that gradient
averaged over :data:`SMOOTHGRAD_SAMPLES` copies of the image with Gaussian noise of a tenth of
the 0-255 range (SmoothGrad, Smilkov et al. 2017; the noise is seeded, so an image always gets
the same map), and the product smoothed by a Gaussian of one input pixel.  The guided gradient
gives the detail, Grad-CAM the class: the guided gradient alone hardly depends on the class
(its maps of the predicted and the second most probable class correlate 0.8 to 0.9).

Measured with ``python benchmarks/classifier_quality.py --model
build/builtin-training/plantvillage-15/held-out-model --images
build/builtin-training/plantvillage-15/held_out`` on 180 PlantVillage photos held out of
training (a 15-class model of the built-in recipe, 89 % accurate on them): Guided Grad-CAM puts
1.62 times the leaf's area share of its mass on the leaf (its strongest fifth of pixels: 76 %
on the leaf); the LayerCAM this module used before (Jiang et al. 2021; last two blocks, 16 x 16
and 8 x 8, fused) put 1.35 times (76 %), and a centred Gaussian that knows nothing about the
photo puts 1.58 times (86 %).  So Guided Grad-CAM beats that blob, but narrowly: on 59 % of the
photos, and its strongest fifth still lies on the leaf less often than the blob's.  It is the
more class-specific map: the maps of the predicted class and of the second most probable one
correlate 0.48 on average (``cam_second_class_correlation``), LayerCAM's 0.72 (its
positive-gradient weights leave mostly the features' size, whatever the class).  Its settings
(Grad-CAM rather than LayerCAM as the class factor, 16 samples, the noise, the smoothing) were
chosen on 45 of the photos (1.63 against the blob's 1.59) and hold on the 135 others (1.62
against 1.58).  On the 45, the other candidates scored lower: Guided Grad-CAM without
SmoothGrad 1.57, Grad-CAM times the SmoothGrad of the plain gradient 1.51 or of gradient times
input 1.49, guided backpropagation alone 1.34 to 1.42, and the block-3 Grad-CAM as the class
factor 1.54; before, averaging LayerCAM over shifts or flips, and the gradient-free occlusion
and Score-CAM maps, did no better than LayerCAM.  Of the map's mass, 63 % lies on the leaf
mask, 9 % within 8 photo pixels of it (a band covering 8 % of the photo, where the outline and
shadow are), 28 % farther away: grain of the background that the gradient responds to, and
photos whose measured leaf mask is wrong.  One map costs a batch of 17 images instead of one.

On a two-class toy task (a bright disk on noise, the tests' classifier) Guided Grad-CAM keeps
7.1 times the disk's area share of its mass on the disk (LayerCAM 4.9, the blob 1.6), and the
map of the other class puts almost none there.  Classifiers with a keras.applications backbone
keep Grad-CAM on the backbone's last feature map: the backbone is one nested layer, and guided
backpropagation cannot reach its ReLUs.  Classifier maps are resized to the input image and
scaled to [0, 1] between their lowest and highest value.

For a U-Net the score is the mean logit of the class over a region (Vinogradova et al. 2020,
"Towards interpretable semantic segmentation via gradient-weighted class activation
mapping") and the feature map is the output of the deepest decoder block: the bottleneck's
context merged with the encoder's features at 1/2**(depth - 1) of the image size.  There the
features are weighted by their gradient position by position (HiResCAM, Draelos & Carin
2020) instead of by its spatial mean: measured on a toy U-Net with two identical objects,
the mean weights spread the explanation of one object's region over every similar object
and the image border, while the position-wise weights kept 98 % of it on the chosen object.
U-Net maps are resized to the input image and divided by their highest value.
"""

from __future__ import annotations

import re
import weakref
from itertools import pairwise
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.models._tf import load_keras, load_tensorflow
from napari_dlbio.models.store import ModelFolder

tf = load_tensorflow()
keras = load_keras()

# One compiled Grad-CAM function per Keras model: tracing costs far more than one map.
_CAM_STEPS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

SMOOTHGRAD_SAMPLES = 16
"""Noisy copies of the image whose guided input gradients are averaged (SmoothGrad)."""
SMOOTHGRAD_NOISE = 0.1
"""Standard deviation of the SmoothGrad noise, as a fraction of the input's 0-255 range."""
DETAIL_SIGMA = 1.0
"""Gaussian smoothing of the Guided Grad-CAM map, in pixels of the network's input."""
_BLOCK_OUTPUT = re.compile(r"block(\d+)_conv\d+_relu")


def grad_cam(
    model: ModelFolder,
    image: np.ndarray,
    class_index: int | None = None,
    region: np.ndarray | None = None,
) -> np.ndarray:
    """Class activation map of one image, at the image's resolution.

    Parameters
    ----------
    model
        A classification or segmentation (U-Net) model folder.
    image
        One image ``(Y, X)``, ``(Y, X, 3)`` or ``(Y, X, 4)``, any size, as the model would
        receive it (the model folder's own resizing and normalisation are applied here).
    class_index
        The class to explain.  Classifier: default the predicted class.  U-Net: an index
        into the model's class names (0 = background); default the foreground class with
        the highest mean probability in ``region``.
    region
        U-Net only: boolean ``(Y, X)`` mask of the pixels whose class score is explained
        (default the whole image).

    Returns
    -------
    np.ndarray
        float32 ``(Y, X)`` in [0, 1]; 1 marks where the class evidence is strongest and
        0 where it is weakest (all zeros when no place speaks more for the class than
        another).

    Raises
    ------
    InputDataError
        For an image the model cannot read, a class index out of range, or a region of the
        wrong shape or without pixels.
    """
    image = np.asarray(image)
    if model.task is Task.CLASSIFICATION:
        if region is not None:
            raise InputDataError(
                "A region can only be chosen for segmentation models; a classifier's "
                "Grad-CAM always explains the whole image."
            )
        return _classifier_cam(model, image, class_index)
    return _segmentation_cam(model, image, class_index, region)


def _classifier_cam(model: ModelFolder, image: np.ndarray, class_index: int | None) -> np.ndarray:
    from napari_dlbio.core.class_dataset import to_input_image
    from napari_dlbio.models.classification import classifier_config

    config = classifier_config(model)
    if image.ndim not in (2, 3):
        raise InputDataError(
            f"Grad-CAM explains one image (Y, X) or (Y, X, C); got shape {image.shape}."
        )
    batch = to_input_image(image, config.input_size, config.input_channels)[None]
    step = _classifier_step(model.model)
    index = -1 if class_index is None else _checked_class(class_index, config.n_classes)
    found = step(tf.convert_to_tensor(batch, tf.float32), tf.constant(index, tf.int32))
    parts = [part.numpy() for part in found]
    # The small CNN's step returns the guided gradient after the Grad-CAM; a backbone's none.
    heatmap = _guided_grad_cam(*parts) if len(parts) == 2 else parts[0]
    return _unit_range(_resized(heatmap, image.shape[:2]))


def _classifier_step(model: Any) -> Any:
    step = _CAM_STEPS.get(model)
    if step is None:
        # Guided Grad-CAM through the small CNN's own layers; a keras.applications
        # backbone (one nested layer, its ReLUs out of reach) keeps Grad-CAM.
        layers = _layer_chain(model)
        step = _guided_step(layers) if layers else _grad_cam_step(model)
        _CAM_STEPS[model] = step
    return step


def _grad_cam_step(model: Any) -> Any:
    features, pooled, dense = _classifier_parts(model)
    cam_model = keras.Model(model.inputs, [features, pooled])
    model_ref = weakref.ref(dense)

    @tf.function(reduce_retracing=True)
    def step(batch: Any, class_index: Any) -> Any:
        head = model_ref()
        with tf.GradientTape() as tape:
            feature_map, vector = cam_model(batch, training=False)
            # The logit, not the softmax probability: a confident prediction's probability
            # saturates and its gradient vanishes.
            logits = tf.matmul(vector, head.kernel) + head.bias
            score = logits[0, _chosen_class(logits[0], class_index)]
        gradients = tape.gradient(score, feature_map)
        return (_weighted_map(feature_map[0], gradients[0]),)

    return step


def _guided_step(layers: list[Any]) -> Any:
    """Grad-CAM of the last feature map and the SmoothGrad of guided backpropagation.

    The network runs layer by layer on the image and on :data:`SMOOTHGRAD_SAMPLES` noisy
    copies of it, every plain ReLU replaced by :func:`_guided_relu`; the class is chosen on
    the clean image.  Returns the Grad-CAM ``(h, w)`` and the largest absolute value over
    channels of the noisy copies' mean input gradient ``(Y, X)``.
    """
    _, pooling, head = _classifier_parts_of(layers)
    body = tuple(layers[1:-1])
    model_ref = weakref.ref(head)

    @tf.function(reduce_retracing=True)
    def step(batch: Any, class_index: Any) -> Any:
        dense = model_ref()
        # A fixed seed: the same image gets the same map every time.
        noise = tf.random.stateless_normal(
            (SMOOTHGRAD_SAMPLES, *batch.shape[1:]), seed=(0, 0), stddev=SMOOTHGRAD_NOISE * 255
        )
        inputs = tf.concat([batch, batch + noise], axis=0)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            x = inputs
            for layer in body:
                if layer is pooling:
                    feature_map = x
                x = _guided_relu(x) if _is_plain_relu(layer) else layer(x, training=False)
            # Logits, not probabilities: a confident prediction's probability saturates.
            logits = tf.matmul(x, dense.kernel) + dense.bias
            score = tf.reduce_sum(logits[:, _chosen_class(logits[0], class_index)])
        # The feature map's gradient passes no ReLU: it is Grad-CAM's, guided or not.
        slopes, input_gradients = tape.gradient(score, [feature_map, inputs])
        cam = _weighted_map(feature_map[0], slopes[0])
        smooth = tf.reduce_mean(input_gradients[1:], axis=0)
        return cam, tf.reduce_max(tf.abs(smooth), axis=-1)

    return step


def _chosen_class(logits: Any, class_index: Any) -> Any:
    """``class_index``, or the class of the highest logit when it is negative."""
    return tf.where(class_index < 0, tf.argmax(logits, output_type=tf.int32), class_index)


@tf.custom_gradient
def _guided_relu(x: Any) -> Any:
    """ReLU whose gradient passes only where both its input and the gradient are positive
    (guided backpropagation, Springenberg et al. 2015)."""

    def backward(upstream: Any) -> Any:
        return upstream * tf.cast(x > 0, upstream.dtype) * tf.cast(upstream > 0, upstream.dtype)

    return tf.nn.relu(x), backward


def _is_plain_relu(layer: Any) -> bool:
    return (
        isinstance(layer, keras.layers.ReLU)
        and layer.max_value is None
        and not layer.negative_slope
        and not layer.threshold
    )


def _layer_chain(model: Any) -> list[Any]:
    """The small CNN's layers when each one feeds the next, empty otherwise.

    Empty too for a keras.applications backbone: it is one nested layer, and guided
    backpropagation could not reach its ReLUs.
    """
    layers = list(model.layers)
    if not any(_BLOCK_OUTPUT.fullmatch(layer.name) for layer in layers):
        return []
    if any(later.input is not earlier.output for earlier, later in pairwise(layers)):
        return []
    return layers


def _classifier_parts(model: Any) -> tuple[Any, Any, Any]:
    """The feature map before global pooling, the pooled vector, and the last dense layer."""
    _, pooling, dense = _classifier_parts_of(list(model.layers))
    return pooling.input, dense.input, dense


def _classifier_parts_of(layers: list[Any]) -> tuple[Any, Any, Any]:
    """The layers before the last global pooling, that pooling, and the last dense layer."""
    pooling = [
        index
        for index, layer in enumerate(layers)
        if isinstance(layer, keras.layers.GlobalAveragePooling2D | keras.layers.GlobalMaxPooling2D)
    ]
    dense = layers[-1]
    if not pooling or not isinstance(dense, keras.layers.Dense):
        raise InputDataError(
            "Grad-CAM needs a classifier that ends in global pooling and a dense layer, "
            "as napari-dlbio builds them; this model does not."
        )
    return layers[: pooling[-1]], layers[pooling[-1]], dense


def _segmentation_cam(
    model: ModelFolder, image: np.ndarray, class_index: int | None, region: np.ndarray | None
) -> np.ndarray:
    from napari_dlbio.core.tiling import pad_to_multiple
    from napari_dlbio.models.segmentation_data import prepare_images

    config = model.config
    stack = prepare_images(image, config)
    if stack.shape[0] != 1:
        raise InputDataError(
            f"Grad-CAM explains one 2D image; got a stack of {stack.shape[0]} slices. "
            "Choose one slice."
        )
    height, width = stack.shape[1:3]
    mask = _checked_region(region, (height, width))
    padded, crop = pad_to_multiple(stack[0], config.network.size_multiple)
    padded_mask = np.zeros(padded.shape[:2], dtype=np.float32)
    padded_mask[crop] = mask
    n_classes = config.n_classes
    index = -1 if class_index is None else _checked_class(class_index, n_classes)
    step = _segmentation_step(model.model, config.network.depth)
    cam = step(
        tf.convert_to_tensor(padded[None], tf.float32),
        tf.convert_to_tensor(padded_mask[None, ..., None]),
        tf.constant(index, tf.int32),
    ).numpy()
    full = resize(cam, padded.shape[:2], order=1, mode="edge", anti_aliasing=False)
    return _scaled(full[crop])


def _segmentation_step(model: Any, depth: int) -> Any:
    step = _CAM_STEPS.get(model)
    if step is not None:
        return step
    deepest = f"dec{depth - 1}_"
    decoder = [layer for layer in model.layers if layer.name.startswith(deepest)]
    if not decoder or "output" not in {layer.name for layer in model.layers}:
        raise InputDataError(
            "Grad-CAM needs a U-Net built by napari-dlbio (named decoder and output layers); "
            "this model has none."
        )
    output_layer = model.get_layer("output")
    cam_model = keras.Model(model.inputs, [decoder[-1].output, output_layer.input])

    @tf.function(reduce_retracing=True)
    def step(batch: Any, region: Any, class_index: Any) -> Any:
        with tf.GradientTape() as tape:
            feature_map, last = cam_model(batch, training=False)
            # Logits, not probabilities: confident pixels saturate the sigmoid or softmax
            # and their gradients vanish.  One sigmoid channel is the foreground's logit.
            logits = _output_logits(output_layer, last)
            if logits.shape[-1] == 1:
                logits = tf.concat([-logits, logits], axis=-1)
            # Mean logit of every class over the region.
            means = tf.reduce_sum(logits * region, axis=[0, 1, 2]) / tf.reduce_sum(region)
            strongest = tf.argmax(means[1:], output_type=tf.int32) + 1
            chosen = tf.where(class_index < 0, strongest, class_index)
            score = means[chosen]
        gradients = tape.gradient(score, feature_map)
        return _elementwise_map(feature_map[0], gradients[0])

    _CAM_STEPS[model] = step
    return step


def _output_logits(output_layer: Any, features: Any) -> Any:
    """The U-Net's output layer without its sigmoid or softmax."""
    convolve = (
        keras.ops.conv_transpose
        if isinstance(output_layer, keras.layers.Conv2DTranspose)
        else keras.ops.conv
    )
    convolved = convolve(
        features, output_layer.kernel, strides=output_layer.strides, padding=output_layer.padding
    )
    return convolved + output_layer.bias


def _weighted_map(feature_map: Any, gradients: Any) -> Any:
    """ReLU of the feature channels weighted by their mean gradient, ``(h, w)``."""
    weights = tf.reduce_mean(gradients, axis=[0, 1])
    return tf.nn.relu(tf.reduce_sum(feature_map * weights, axis=-1))


def _guided_grad_cam(cam: np.ndarray, detail: np.ndarray) -> np.ndarray:
    """Guided Grad-CAM: the Grad-CAM resized to the input and scaled to [0, 1], times the
    guided gradient's magnitude, lightly smoothed so that it reads as a heat map."""
    heatmap = _unit_range(_resized(cam, detail.shape)) * detail
    return ndimage.gaussian_filter(heatmap, DETAIL_SIGMA)


def _elementwise_map(feature_map: Any, gradients: Any) -> Any:
    """ReLU of the features times their gradient, position by position, ``(h, w)``."""
    return tf.nn.relu(tf.reduce_sum(feature_map * gradients, axis=-1))


def _resized(cam: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return resize(cam, shape, order=1, mode="edge", anti_aliasing=False)


def _scaled(cam: np.ndarray) -> np.ndarray:
    """Min-max scaling to [0, 1] (as pytorch-grad-cam does): a class's evidence is often
    spread thinly over the whole image, and only its variation says where it is strongest."""
    cam = np.maximum(np.nan_to_num(cam.astype(np.float32)), 0.0)
    low, high = float(cam.min(initial=0.0)), float(cam.max(initial=0.0))
    if high <= low:
        return np.zeros_like(cam)
    return np.clip((cam - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _unit_range(cam: np.ndarray) -> np.ndarray:
    """``cam`` shifted and scaled so that its lowest value is 0 and its highest 1."""
    cam = np.nan_to_num(cam.astype(np.float32))
    low, high = float(cam.min()), float(cam.max())
    if high <= low:
        return np.zeros_like(cam)
    return np.clip((cam - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _checked_class(class_index: int, n_classes: int) -> int:
    if not 0 <= int(class_index) < n_classes:
        raise InputDataError(
            f"Class index {class_index} does not exist: this model has {n_classes} classes "
            f"(0 to {n_classes - 1})."
        )
    return int(class_index)


def _checked_region(region: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if region is None:
        return np.ones(shape, dtype=np.float32)
    region = np.asarray(region)
    if region.shape != shape:
        raise InputDataError(
            f"The region has shape {region.shape} but the image is {shape}; draw it on the "
            "same image."
        )
    if not region.any():
        raise InputDataError("The region is empty; mark the pixels whose class to explain.")
    return region.astype(bool).astype(np.float32)
