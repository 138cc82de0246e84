"""Batch-normalisation statistics that match a network's current weights."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from napari_dlbio.models._tf import load_keras

keras = load_keras()


def recalibrate_batch_norm(network: Any, batches: Iterable[np.ndarray]) -> int:
    """Replace the moving statistics of every batch-norm layer by their mean over ``batches``.

    A network trained for a few dozen steps at a high learning rate has moving means and
    variances that lag behind its weights, and at inference they can shift every
    activation enough to flip the whole mask to one class.  Running ``batches`` through
    the network in training mode with a cumulative average (momentum ``1 - 1/n`` for the
    n-th batch) gives the statistics of the current weights.  Weights are not changed.

    Returns
    -------
    int
        The number of batch-norm layers recalibrated (0: nothing to do).
    """
    layers = list(_batch_norm_layers(network))
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for count, batch in enumerate(batches, start=1):
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / count
            network(batch, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)


def _batch_norm_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        elif hasattr(layer, "layers"):  # a nested model
            yield from _batch_norm_layers(layer)
