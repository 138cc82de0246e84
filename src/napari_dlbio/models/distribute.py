"""Choose how training is spread over the machine: one device, several GPUs, several nodes.

Several training processes (workers, one per node or per GPU) train one model together under
``MultiWorkerMirroredStrategy``.  They find each other through ``TF_CONFIG`` (TensorFlow's
cluster description) or, when it is unset, through the variables Slurm's ``srun`` gives every
task of a job step: ``SLURM_STEP_NUM_TASKS``, ``SLURM_PROCID``, ``SLURM_STEP_NODELIST``,
``SLURM_STEP_TASKS_PER_NODE`` and ``SLURM_JOB_ID``.  Tasks are numbered node by node, as
Slurm's default (block) distribution places them.  The first worker is the chief: only it
writes the model folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from napari_dlbio.core.errors import ConfigError
from napari_dlbio.models._tf import load_tensorflow

tf = load_tensorflow()

# Under Slurm, task t of a node listens on SLURM_BASE_PORT + 32 * (job id % 1000) + t: two
# jobs sharing a node rarely meet, and a node runs up to 32 tasks.
SLURM_BASE_PORT = 20000
_PORTS_PER_JOB = 32
# TF_CONFIG task types that train; the chief, if named, comes first.
_TRAINING_TASKS = ("chief", "worker")


@dataclass(frozen=True)
class Cluster:
    """The workers of a multi-worker run, and which of them this process is.

    Attributes
    ----------
    workers
        ``host:port`` of every worker, the chief first.
    index
        This process's position in ``workers`` (0: the chief).
    source
        Where the description came from: ``"TF_CONFIG"`` or ``"Slurm"``.
    """

    workers: tuple[str, ...]
    index: int
    source: str

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the model folder (the others write nothing)."""
        return self.index == 0

    def describe(self) -> str:
        """One line for the user: which worker this is and who saves the model."""
        where = f"Worker {self.index + 1} of {len(self.workers)} ({self.source})"
        if self.is_chief:
            return f"{where}: the chief, it saves the model."
        return f"{where}: the chief (worker 1) saves the model; this one writes nothing."


def find_cluster(environ: Mapping[str, str] | None = None) -> Cluster | None:
    """The multi-worker cluster this process belongs to; ``None`` when it trains alone.

    ``TF_CONFIG`` comes first; without it, a Slurm job step of several tasks (``srun``
    with ``--ntasks`` above 1) is a cluster of one worker per task.

    Parameters
    ----------
    environ
        The environment variables to read (default: this process's).

    Raises
    ------
    ConfigError
        When ``TF_CONFIG`` or the Slurm variables cannot describe a cluster.
    """
    environ = os.environ if environ is None else environ
    if environ.get("TF_CONFIG"):
        return _cluster_from_tf_config(environ["TF_CONFIG"])
    if _slurm_tasks(environ) > 1:
        return _cluster_from_slurm(environ)
    return None


def choose_strategy() -> Any:
    """The ``tf.distribute`` strategy for this machine.

    ``MultiWorkerMirroredStrategy`` when this process is one worker of a cluster (see
    :func:`find_cluster`: multi-node HPC jobs), ``MirroredStrategy`` when several GPUs are
    visible (or several logical CPU devices have been configured, as in tests), otherwise
    the default strategy (one device).  Build and compile models inside
    ``strategy.scope()``.

    Raises
    ------
    ConfigError
        For a cluster description that cannot be read, or a worker that sees several GPUs
        (start one worker per GPU).
    """
    cluster = find_cluster()
    if cluster is not None:
        return _multi_worker_strategy(cluster)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in cpus])
    return tf.distribute.get_strategy()


def worker_index() -> int:
    """This process's position among the workers of its cluster (0 when it trains alone).

    Workers seed their patch streams with it, so they do not all draw the same patches.
    """
    cluster = find_cluster()
    return 0 if cluster is None else cluster.index


def _multi_worker_strategy(cluster: Cluster) -> Any:
    if cluster.source == "TF_CONFIG":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec({"worker": list(cluster.workers)}),
            task_type="worker",
            task_id=cluster.index,
            num_accelerators={"GPU": len(tf.config.list_physical_devices("GPU"))},
            rpc_layer="grpc",
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    devices = len(strategy.extended.worker_devices)
    if devices > 1:
        # Each worker trains on batches of its own, one replica each (see
        # napari_dlbio.models.multi_worker).
        raise ConfigError(
            f"This worker sees {devices} GPUs; multi-worker training runs one worker per "
            "GPU. Start one task per GPU (Slurm: srun --ntasks-per-node=<GPUs per node> "
            "--gpus-per-task=1) or give each worker its own CUDA_VISIBLE_DEVICES."
        )
    return strategy


def _cluster_from_tf_config(text: str) -> Cluster:
    try:
        document = json.loads(text)
        jobs = document["cluster"]
        task = document["task"]
        task_type, task_index = task["type"], int(task["index"])
        chiefs, others = list(jobs.get("chief", [])), list(jobs.get("worker", []))
        workers = [str(address) for address in chiefs + others]
        index = task_index + (len(chiefs) if task_type == "worker" else 0)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise ConfigError(
            'TF_CONFIG is not a cluster description such as {"cluster": {"worker": '
            '["node1:12345", "node2:12345"]}, "task": {"type": "worker", "index": 0}} '
            f"({error})."
        ) from None
    if task_type not in _TRAINING_TASKS or not 0 <= index < len(workers):
        raise ConfigError(
            f"TF_CONFIG names task {task_type!r} {task_index}, which is not one of its "
            f"{len(workers)} chief and worker tasks."
        )
    return Cluster(workers=tuple(workers), index=index, source="TF_CONFIG")


def _slurm_tasks(environ: Mapping[str, str]) -> int:
    try:
        return int(environ.get("SLURM_STEP_NUM_TASKS", "1"))
    except ValueError:
        return 1


def _cluster_from_slurm(environ: Mapping[str, str]) -> Cluster:
    try:
        hosts = expand_hostlist(environ["SLURM_STEP_NODELIST"])
        counts = _expand_tasks_per_node(environ["SLURM_STEP_TASKS_PER_NODE"])
        rank = int(environ["SLURM_PROCID"])
        job = int(environ.get("SLURM_JOB_ID", "0"))
    except (KeyError, ValueError) as error:
        raise ConfigError(
            f"This Slurm job step has {_slurm_tasks(environ)} tasks, but its variables do "
            f"not say where they run ({error}); start the workers with srun."
        ) from None
    port = SLURM_BASE_PORT + _PORTS_PER_JOB * (job % 1000)
    workers = [
        f"{host}:{port + local}" for host, count in zip(hosts, counts, strict=False)
        for local in range(count)
    ]  # fmt: skip
    if len(workers) != _slurm_tasks(environ) or not 0 <= rank < len(workers):
        raise ConfigError(
            f"Slurm's variables disagree: {len(workers)} tasks on "
            f"{environ['SLURM_STEP_NODELIST']} ({environ['SLURM_STEP_TASKS_PER_NODE']}), "
            f"SLURM_STEP_NUM_TASKS={_slurm_tasks(environ)}, SLURM_PROCID={rank}."
        )
    return Cluster(workers=tuple(workers), index=rank, source="Slurm")


def expand_hostlist(hostlist: str) -> list[str]:
    """Host names of a Slurm host list, in order: ``"n[01-02,07],gpu5"`` -> n01, n02, n07, gpu5.

    Raises
    ------
    ValueError
        For text that is not a host list (one bracket group per name at most).
    """
    hosts: list[str] = []
    # Commas outside brackets separate names.
    for part in re.split(r",(?![^\[]*\])", hostlist):
        match = re.fullmatch(r"([^\[\],]+)(?:\[([\d,-]+)\]([^\[\],]*))?", part)
        if match is None:
            raise ValueError(f"not a Slurm host list: {hostlist!r}")
        prefix, ranges, suffix = match.groups()
        if ranges is None:
            hosts.append(prefix)
            continue
        for span in ranges.split(","):
            first, _, last = span.partition("-")
            width = len(first)
            hosts.extend(
                f"{prefix}{number:0{width}d}{suffix}"
                for number in range(int(first), int(last or first) + 1)
            )
    return hosts


def _expand_tasks_per_node(text: str) -> list[int]:
    """Slurm's tasks per node, ``"2(x3),1"`` -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if match is None:
            raise ValueError(f"not a Slurm tasks-per-node list: {text!r}")
        counts.extend([int(match[1])] * int(match[2] or 1))
    return counts
