"""Recomputing batch-norm statistics for a network's current weights."""

from __future__ import annotations

import numpy as np

from napari_dlbio.core.segmentation_config import UNetConfig
from napari_dlbio.models._tf import load_keras
from napari_dlbio.models.batch_norm import recalibrate_batch_norm
from napari_dlbio.models.unet import build_unet

keras = load_keras()


def test_recalibrated_statistics_make_inference_match_the_batch():
    network = build_unet(UNetConfig(depth=2, base_filters=4, dropout=0.0), 1, 2)
    batch = np.random.default_rng(0).normal(5.0, 3.0, (4, 32, 32, 1)).astype(np.float32)
    weights = [w.copy() for w in network.get_weights()]
    # Fresh statistics (mean 0, variance 1) do not fit inputs of mean 5: inference is off.
    stale = np.asarray(network(batch, training=False))
    in_training = np.asarray(network(batch, training=True))
    assert np.abs(stale - in_training).max() > 0.05

    bns = [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert recalibrate_batch_norm(network, [batch]) == len(bns) == 11  # stem + 5 blocks x 2
    recalibrated = np.asarray(network(batch, training=False))
    np.testing.assert_allclose(recalibrated, in_training, atol=2e-3)
    # Only the moving statistics changed, and the layers keep their momentum.
    changed = [
        not np.array_equal(before, after)
        for before, after in zip(weights, network.get_weights(), strict=True)
    ]
    moving = ["moving" in variable.path for variable in network.weights]
    assert changed == moving
    assert {layer.momentum for layer in bns} == {0.9}


def test_a_network_without_batch_norm_is_left_alone():
    network = build_unet(UNetConfig(depth=1, base_filters=4, batch_norm=False), 1, 2)
    weights = network.get_weights()
    assert recalibrate_batch_norm(network, [np.zeros((1, 16, 16, 1), np.float32)]) == 0
    for before, after in zip(weights, network.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
