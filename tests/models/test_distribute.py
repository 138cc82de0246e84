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

from napari_dlbio.core.errors import ConfigError
from napari_dlbio.models.distribute import (
    SLURM_BASE_PORT,
    choose_strategy,
    expand_hostlist,
    find_cluster,
    worker_index,
)


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
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS", raising=False)
    assert choose_strategy().num_replicas_in_sync == 1
    assert worker_index() == 0


@pytest.mark.parametrize(
    ("cluster", "task", "index"),
    [
        ({"worker": ["a:1", "b:1", "c:1"]}, {"type": "worker", "index": 2}, 2),
        ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, {"type": "chief", "index": 0}, 0),
        ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, {"type": "worker", "index": 0}, 1),
    ],
)
def test_worker_index_counts_the_chief_first(monkeypatch, cluster, task, index):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    assert worker_index() == index
    found = find_cluster()
    assert (found.index, found.is_chief, found.source) == (index, index == 0, "TF_CONFIG")
    assert found.describe().startswith(f"Worker {index + 1} of 3 (TF_CONFIG): the chief")


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        '{"task": 5}',
        '{"task": {"type": "worker", "index": 3}}',
        '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
        '{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 0}}',
    ],
)
def test_a_tf_config_that_is_no_cluster_is_refused(value):
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        find_cluster({"TF_CONFIG": value})


def _slurm(**changes: str) -> dict[str, str]:
    """What srun gives task 3 of `srun --nodes=2 --ntasks-per-node=2` in job 4321."""
    variables = {
        "SLURM_JOB_ID": "4321",
        "SLURM_NTASKS": "4",
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
        "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
        "SLURM_PROCID": "3",
    }
    return {**variables, **changes}


def test_a_slurm_step_of_several_tasks_is_a_cluster_of_one_worker_per_task():
    cluster = find_cluster(_slurm())
    port = SLURM_BASE_PORT + 32 * 321
    assert cluster.workers == (
        f"gpu07:{port}", f"gpu07:{port + 1}", f"gpu08:{port}", f"gpu08:{port + 1}"
    )  # fmt: skip
    assert (cluster.index, cluster.is_chief, cluster.source) == (3, False, "Slurm")
    assert find_cluster(_slurm(SLURM_PROCID="0")).is_chief


@pytest.mark.parametrize(
    "environ",
    [
        {},
        _slurm(SLURM_STEP_NUM_TASKS="1", SLURM_PROCID="0"),  # srun --ntasks=1
        # The batch script itself (no srun): one process, whatever the job asked for.
        {key: value for key, value in _slurm().items() if not key.startswith("SLURM_STEP")},
    ],
)
def test_one_task_trains_alone(environ):
    assert find_cluster(environ) is None


def test_tf_config_comes_before_slurm():
    tf_config = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
    cluster = find_cluster({**_slurm(), "TF_CONFIG": json.dumps(tf_config)})
    assert (cluster.workers, cluster.index, cluster.source) == (("a:1", "b:1"), 1, "TF_CONFIG")


@pytest.mark.parametrize(
    "changes",
    [
        {"SLURM_STEP_TASKS_PER_NODE": "2"},  # 2 tasks on 2 nodes, not 4
        {"SLURM_PROCID": "4"},
        {"SLURM_STEP_NODELIST": "gpu[07-"},
    ],
)
def test_slurm_variables_that_disagree_are_refused(changes):
    with pytest.raises(ConfigError, match="Slurm"):
        find_cluster(_slurm(**changes))


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node1", ["node1"]),
        ("n[01-03,07],gpu5", ["n01", "n02", "n03", "n07", "gpu5"]),
        ("rack[1-2]-a,x", ["rack1-a", "rack2-a", "x"]),
    ],
)
def test_slurm_host_lists_expand_in_order(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts
