"""Distribution strategies: mirrored training on two logical CPUs, multi-worker from TF_CONFIG.

Logical devices must be configured before TensorFlow initialises, so these run in fresh
interpreters.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from napari_dlbio.models.distribute import choose_strategy, worker_index


def _run(code: str, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_two_logical_cpus_train_under_a_mirrored_strategy():
    output = _run(
        """
        import json
        import numpy as np
        from napari_dlbio.models._tf import load_tensorflow

        tf = load_tensorflow()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        from napari_dlbio.core.segmentation_config import SegmentationConfig, UNetConfig
        from napari_dlbio.models.distribute import choose_strategy
        from napari_dlbio.models.segmentation import predict_segmentation, train_segmentation

        strategy = choose_strategy()
        rng = np.random.default_rng(0)
        images = rng.integers(0, 255, (3, 64, 64), dtype=np.uint8)
        annotations = (images > 127).astype(np.uint8) + 1
        config = SegmentationConfig(
            network=UNetConfig(depth=2, base_filters=4), patch_size=32, batch_size=2,
            epochs=2, steps_per_epoch=2, validation_fraction=0.34, tile_size=32, tile_overlap=8,
        )
        result = train_segmentation(images, annotations, config)
        mask = predict_segmentation(result.model, images).mask
        print(json.dumps({
            "strategy": type(strategy).__name__,
            "replicas": strategy.num_replicas_in_sync,
            "epochs": len(result.model.history["loss"]),
            "finite": bool(np.isfinite(result.model.history["val_loss"]).all()),
            "mask": list(mask.shape),
        }))
        """
    )
    figures = json.loads(output.strip().splitlines()[-1])
    assert figures == {
        "strategy": "MirroredStrategy",
        "replicas": 2,
        "epochs": 2,
        "finite": True,
        "mask": [3, 64, 64],
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def test_tf_config_selects_the_multi_worker_strategy():
    cluster = {
        "cluster": {"worker": [f"localhost:{_free_port()}"]},
        "task": {"type": "worker", "index": 0},
    }
    output = _run(
        """
        from napari_dlbio.models._tf import load_tensorflow
        from napari_dlbio.models.distribute import choose_strategy, worker_index

        tf = load_tensorflow()
        strategy = choose_strategy()
        multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        print(multi, strategy.num_replicas_in_sync, worker_index())
        """,
        env={"TF_CONFIG": json.dumps(cluster)},
    )
    assert output.split()[-3:] == ["True", "1", "0"]


def test_one_device_uses_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert choose_strategy().num_replicas_in_sync == 1
    assert worker_index() == 0


@pytest.mark.parametrize(
    ("value", "index"),
    [('{"task": {"type": "worker", "index": 3}}', 3), ("not json", 0), ('{"task": 5}', 0)],
)
def test_worker_index_reads_tf_config(monkeypatch, value, index):
    monkeypatch.setenv("TF_CONFIG", value)
    assert worker_index() == index
