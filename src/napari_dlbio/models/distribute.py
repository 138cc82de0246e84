"""Choose how training is spread over the machine: one device, several GPUs, several nodes."""

from __future__ import annotations

import json
import os
from typing import Any

from napari_dlbio.models._tf import load_tensorflow

tf = load_tensorflow()


def choose_strategy() -> Any:
    """The ``tf.distribute`` strategy for this machine.

    ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` describes a cluster (multi-node
    HPC jobs), ``MirroredStrategy`` when several GPUs are visible (or several logical
    CPU devices have been configured, as in tests), otherwise the default strategy (one
    device).  Build and compile models inside ``strategy.scope()``.
    """
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in cpus])
    return tf.distribute.get_strategy()


def worker_index() -> int:
    """This process's task index in a multi-worker cluster (0 on a single machine).

    Workers seed their patch streams with it, so they do not all draw the same patches.
    """
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
        return int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError):
        return 0
