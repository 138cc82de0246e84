"""Two ``dlbio train`` processes train one U-Net together, as two nodes of a cluster would.

Each process is one worker of a cluster on loopback ports (``MultiWorkerMirroredStrategy``),
described by ``TF_CONFIG`` or by the variables Slurm's ``srun`` sets; they read the same
ISBI crops and the same settings.  Each runs ``dlbio``'s own ``main`` through a small
driver that also saves the weights it ends with, so the test can compare the two copies of
the model.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

ISBI = "255=background,0=membrane"
# A hung collective fails the test after this long instead of blocking the suite.
TIMEOUT_S = 240
# `dlbio train ARGV...` (from argv[2]) that also saves its final weights to argv[1] (.npz).
DRIVER = """
import sys

import numpy as np

from napari_dlbio.models import segmentation

training = segmentation.iter_train_segmentation


def recording(*args, **kwargs):
    result = yield from training(*args, **kwargs)
    np.savez(sys.argv[1], *result.model.model.get_weights())
    return result


segmentation.iter_train_segmentation = recording
from napari_dlbio.cli import main

sys.exit(main(sys.argv[2:]))
"""


class Worker:
    """One ``dlbio train`` process of a cluster; its output is read as it comes."""

    def __init__(self, cluster: dict[str, str], weights: Path, argv: list[str]):
        env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(weights), "train", *argv],
            env={**env, **cluster},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []  # standard error
        self._stdout: list[str] = []
        streams = ((self.process.stderr, self.lines), (self.process.stdout, self._stdout))
        self._readers = [
            threading.Thread(target=_collect, args=pair, daemon=True) for pair in streams
        ]
        for reader in self._readers:
            reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    def epoch_lines(self) -> list[str]:
        """The epochs' figures as printed (elapsed time left out)."""
        return [line.rsplit("  [", 1)[0] for line in self.lines if line.startswith("epoch ")]

    def wait_for(self, prefix: str, deadline: float) -> None:
        while not any(line.startswith(prefix) for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no line {prefix!r} from the worker:\n{self.stderr[-3000:]}")
            time.sleep(0.1)

    def finish(self, deadline: float) -> int:
        code = self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        for reader in self._readers:
            reader.join(timeout=10)
        return code


def _collect(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line)


@pytest.fixture
def start_workers():
    """Start the workers of one cluster; any still running at the end are killed."""
    workers: list[Worker] = []

    def start(clusters: list[dict[str, str]], outs: list[Path], weights: list[Path], argv):
        for cluster, out, path in zip(clusters, outs, weights, strict=True):
            workers.append(Worker(cluster, path, [*argv, "--out", str(out)]))
        return workers

    yield start
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


def _tf_config(count: int) -> list[dict[str, str]]:
    """``TF_CONFIG`` of each of ``count`` workers on free loopback ports."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:  # all held open at once, so the ports differ
            probe.bind(("localhost", 0))
        addresses = [f"localhost:{probe.getsockname()[1]}" for probe in probes]
    finally:
        for probe in probes:
            probe.close()
    cluster = {"worker": addresses}
    tasks = [{"type": "worker", "index": index} for index in range(count)]
    return [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})} for task in tasks]


def _slurm(count: int) -> list[dict[str, str]]:
    """What ``srun --ntasks=COUNT`` on this one node gives each task, in a job whose
    ports (see napari_dlbio.models.distribute) are free now."""
    from napari_dlbio.models.distribute import SLURM_BASE_PORT

    for job in range(os.getpid() % 1000, os.getpid() % 1000 + 1000):
        ports = [SLURM_BASE_PORT + 32 * (job % 1000) + task for task in range(count)]
        if all(_free(port) for port in ports):
            break
    step = {
        "SLURM_JOB_ID": str(job),
        "SLURM_STEP_NUM_TASKS": str(count),
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_STEP_TASKS_PER_NODE": str(count),
    }
    return [{**step, "SLURM_PROCID": str(task)} for task in range(count)]


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("localhost", port))
        except OSError:
            return False
    return True


def _finish_all(workers: list[Worker], deadline: float) -> list[int]:
    try:
        return [worker.finish(deadline) for worker in workers]
    except subprocess.TimeoutExpired:
        logs = "\n".join(f"worker {i + 1}:\n{w.stderr[-2000:]}" for i, w in enumerate(workers))
        pytest.fail(f"the workers did not finish within {TIMEOUT_S} s (a hang?):\n{logs}")


def _assert_same_weights(first: Path, second: Path) -> None:
    with np.load(first) as mine, np.load(second) as theirs:
        assert len(mine.files) == len(theirs.files) > 0
        for name in mine.files:
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


def _argv(crops: dict[str, Path], *extra: str) -> list[str]:
    return [
        "--images", str(crops["train"]), "--labels", str(crops["train_labels"]),
        "--label-values", ISBI, "--config", str(crops["config"]), *extra,
    ]  # fmt: skip


def test_two_workers_train_one_model_and_only_the_chief_saves_it(
    isbi_crops, tmp_path, start_workers
):
    from napari_dlbio.models.segmentation import predict_segmentation
    from napari_dlbio.models.store import load_model_folder

    shared = tmp_path / "shared"  # one --out for both, as on a cluster's shared file system
    shared.mkdir()
    out = shared / "membrane"
    weights = [tmp_path / "chief.npz", tmp_path / "worker.npz"]
    deadline = time.monotonic() + TIMEOUT_S
    workers = start_workers(_tf_config(2), [out, out], weights, _argv(isbi_crops))
    codes = _finish_all(workers, deadline)
    chief, worker = workers

    assert codes == [0, 0], f"{chief.stderr[-3000:]}\n{worker.stderr[-3000:]}"
    assert "Worker 1 of 2 (TF_CONFIG): the chief, it saves the model." in chief.stderr
    assert "Worker 2 of 2 (TF_CONFIG): the chief (worker 1) saves" in worker.stderr
    assert chief.stdout.startswith(f"Saved {out} (best epoch ")
    assert worker.stdout.startswith("Trained as worker 2 of 2 (best epoch ")
    # No checkpoints, temporary or second folder: the chief's model folder only.
    assert [path.name for path in shared.iterdir()] == ["membrane"]
    history = json.loads((out / "history.json").read_text())
    epochs = json.loads(isbi_crops["config"].read_text())["epochs"]
    assert len(history["loss"]) == epochs
    # The workers agreed on every figure and hold the same weights.
    assert len(chief.epoch_lines()) == epochs
    assert chief.epoch_lines() == worker.epoch_lines()
    _assert_same_weights(*weights)

    model = load_model_folder(out)
    images = tifffile.imread(isbi_crops["train"])[:1]
    mask = predict_segmentation(model, images).mask
    assert mask.shape == (1, 96, 128)
    assert set(np.unique(mask)) <= {0, 1}


def test_ctrl_c_on_one_slurm_task_stops_both_at_the_same_batch(isbi_crops, tmp_path, start_workers):
    # Each worker is given its own --out, as on nodes without a shared file system.
    outs = [tmp_path / "chief" / "membrane", tmp_path / "worker" / "membrane"]
    weights = [tmp_path / "chief.npz", tmp_path / "worker.npz"]
    deadline = time.monotonic() + TIMEOUT_S
    workers = start_workers(_slurm(2), outs, weights, _argv(isbi_crops, "--epochs", "500"))
    chief, worker = workers
    worker.wait_for("epoch 1/500", deadline)
    worker.process.send_signal(signal.SIGINT)
    codes = _finish_all(workers, deadline)

    assert codes == [0, 0], f"{chief.stderr[-3000:]}\n{worker.stderr[-3000:]}"
    assert "Worker 2 of 2 (Slurm)" in worker.stderr
    assert "stopped by the user" in chief.stdout
    assert "stopped by the user" in worker.stdout
    epochs = len(json.loads((outs[0] / "history.json").read_text())["loss"])
    assert 1 <= epochs < 500
    assert chief.epoch_lines() == worker.epoch_lines()
    assert len(chief.epoch_lines()) == epochs
    _assert_same_weights(*weights)
    assert not outs[1].parent.exists()  # the worker wrote nothing


def test_the_time_budget_stops_both_workers_at_the_same_batch(isbi_crops, tmp_path, start_workers):
    # Each worker measures its own time; they stop on the time they agree on, and the
    # learning rate, which decays with it, stays the same on both.
    outs = [tmp_path / "membrane", tmp_path / "membrane"]
    weights = [tmp_path / "chief.npz", tmp_path / "worker.npz"]
    deadline = time.monotonic() + TIMEOUT_S
    argv = _argv(isbi_crops, "--epochs", "500", "--time-budget", "3")
    workers = start_workers(_tf_config(2), outs, weights, argv)
    codes = _finish_all(workers, deadline)
    chief, worker = workers

    assert codes == [0, 0], f"{chief.stderr[-3000:]}\n{worker.stderr[-3000:]}"
    assert "time budget reached" in chief.stdout
    assert "time budget reached" in worker.stdout
    assert chief.epoch_lines() == worker.epoch_lines()
    _assert_same_weights(*weights)
