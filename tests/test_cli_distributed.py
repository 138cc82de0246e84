"""``dlbio predict --workers N | --scheduler ADDRESS``: slices predicted on a dask cluster.

One cluster of two worker processes serves the module (``--scheduler``); one test starts
its own through ``--workers 2``.  Its scheduler gives a slice up after one lost worker more
than dask's default would, so a worker that keeps dying fails the run quickly.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import tifffile

from napari_dlbio.cli import _cluster, build_parser, main
from napari_dlbio.core.events import CancelToken, Finished, Notice, RunState, SlicePredicted
from napari_dlbio.models import distributed_prediction
from napari_dlbio.models.distributed_prediction import iter_predict_slices_distributed

MODEL = "builtin:em-membranes"


@pytest.fixture(scope="module")
def volume(isbi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Four 256 x 256 ISBI slices and the mask and probabilities one process predicts."""
    folder = tmp_path_factory.mktemp("volume")
    images = folder / "images.tif"
    data = tifffile.imread(isbi_dir / "train-volume.tif")[:4, :256, :256]
    tifffile.imwrite(images, data, photometric="minisblack")
    mask, probabilities = folder / "mask.tif", folder / "p.tif"
    argv = ["predict", "--model", MODEL, "--images", str(images), "--quiet"]
    assert main([*argv, "--out", str(mask), "--probabilities", str(probabilities)]) == 0
    return {
        "images": images,
        "mask": tifffile.imread(mask),
        "probabilities": tifffile.imread(probabilities),
    }


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A running cluster of two single-threaded worker processes, and a client of it."""
    from distributed import Client, LocalCluster

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as local,
        Client(local, set_as_default=False) as client,
    ):
        yield client


def predict(volume: dict[str, Any], out: Path, *options: str) -> int:
    argv = ["predict", "--model", MODEL, "--images", str(volume["images"]), "--quiet"]
    return main([*argv, "--out", str(out), *options])


def test_local_workers_give_the_mask_of_one_process(volume, tmp_path):
    mask, probabilities = tmp_path / "mask.tif", tmp_path / "p.tif"
    assert predict(volume, mask, "--probabilities", str(probabilities), "--workers", "2") == 0
    np.testing.assert_array_equal(tifffile.imread(mask), volume["mask"])
    # One process may batch tiles of several slices together: float32 rounding differs.
    np.testing.assert_allclose(
        tifffile.imread(probabilities), volume["probabilities"], rtol=0, atol=1e-5
    )


def test_a_running_cluster_loads_the_model_once_per_worker(volume, cluster, tmp_path):
    for run in range(2):
        out = tmp_path / f"mask{run}.tif"
        assert predict(volume, out, "--scheduler", cluster.scheduler.address) == 0
        np.testing.assert_array_equal(tifffile.imread(out), volume["mask"])
    caches = cluster.run(lambda: distributed_prediction._load_model.cache_info())
    used = [cache for cache in caches.values() if cache.hits + cache.misses]
    assert used
    assert [cache.misses for cache in used] == [1] * len(used)
    assert sum(cache.hits + cache.misses for cache in used) == 2 * len(volume["mask"])


def test_a_scheduler_that_does_not_answer_is_a_clear_error(volume, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_cluster, "CONNECT_TIMEOUT_S", 2.0)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{closed.getsockname()[1]}"
    assert predict(volume, tmp_path / "mask.tif", "--scheduler", address) == 2
    assert (
        f"dlbio: error: no dask scheduler answered at {address} within 2 s; start one"
        in capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_never_answers_is_no_scheduler(tmp_path, capsys):
    from napari_dlbio.models.distributed_prediction import ClusterError

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ClusterError, match="no dask scheduler answered"):
            _cluster.check_scheduler(address, timeout=1.0)


def test_a_worker_address_or_a_web_address_is_refused(cluster):
    from napari_dlbio.models.distributed_prediction import ClusterError

    worker = next(iter(cluster.scheduler_info()["workers"]))
    with pytest.raises(ClusterError, match="answered as a dask Worker, not as a scheduler"):
        _cluster.check_scheduler(worker, timeout=5.0)
    with pytest.raises(ClusterError, match="not a dask scheduler address"):
        _cluster.check_scheduler("http://localhost:8787", timeout=5.0)


def test_a_dying_worker_s_slices_are_predicted_again(volume, cluster, tmp_path):
    marker = str(tmp_path / "died")

    def die_once() -> None:
        original = distributed_prediction.worker_model

        def dying(source: str) -> Any:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return original(source)
            os._exit(1)

        distributed_prediction.worker_model = dying

    cluster.run(die_once)
    out = tmp_path / "mask.tif"
    assert predict(volume, out, "--scheduler", cluster.scheduler.address) == 0
    assert os.path.exists(marker)
    np.testing.assert_array_equal(tifffile.imread(out), volume["mask"])


def test_slices_whose_workers_keep_dying_fail_the_run_and_write_nothing(
    volume, cluster, tmp_path, capsys
):
    from distributed import WorkerPlugin

    class DieOnEveryPrediction(WorkerPlugin):
        # Set up again in every worker that the nanny starts in place of a dead one.
        def setup(self, worker: Any) -> None:
            self.original = distributed_prediction.worker_model
            distributed_prediction.worker_model = lambda source: os._exit(1)

        def teardown(self, worker: Any) -> None:
            distributed_prediction.worker_model = self.original

    name = "die on every prediction"
    cluster.register_plugin(DieOnEveryPrediction(), name=name)
    try:
        out, probabilities = tmp_path / "mask.tif", tmp_path / "p.tif"
        assert predict(volume, out, "--probabilities", str(probabilities), "--scheduler",
                       cluster.scheduler.address) == 2  # fmt: skip
    finally:
        cluster.unregister_worker_plugin(name)
    assert "could not be predicted: every dask worker that tried it died" in (
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


def test_workers_and_scheduler_exclude_each_other(capsys):
    argv = ["predict", "--model", MODEL, "--images", "x.tif", "--out", "m.tif"]
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--workers", "2", "--scheduler", "tcp://h:8786"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_classifier_refuses_the_cluster_options(tmp_path, capsys):
    argv = ["predict", "--model", "builtin:plantvillage-15", "--images", str(tmp_path)]
    assert main([*argv, "--out", str(tmp_path / "c.csv"), "--workers", "2"]) == 2
    assert "--workers and --scheduler are for segmentation models" in capsys.readouterr().err


class _Done:
    def __init__(self, value: np.ndarray) -> None:
        self.value = value

    def result(self, timeout: float) -> np.ndarray:
        return self.value


class _Waiting:
    """A slice still computing; waiting for it presses Stop."""

    def __init__(self, cancel: CancelToken) -> None:
        self.cancel = cancel

    def result(self, timeout: float) -> np.ndarray:
        self.cancel.cancel()
        raise TimeoutError


class _FakeClient:
    """Futures that are done at once (or, given a cancel token, still computing when
    cancelled), and how many were ever in flight."""

    status = "running"

    def __init__(self, cancel: CancelToken | None = None) -> None:
        self.cancel_token = cancel
        self.submitted = 0
        self.taken = 0
        self.most_in_flight = 0
        self.cancelled: list[Any] = []

    def nthreads(self) -> dict[str, int]:
        return {"tcp://a": 1, "tcp://b": 1}

    def submit(self, function: Any, source: str, plane: np.ndarray, pure: bool) -> Any:
        self.submitted += 1
        self.most_in_flight = max(self.most_in_flight, self.submitted - self.taken)
        value = np.full((*plane.shape, 2), plane.flat[0], dtype=np.float32)
        return _Done(value) if self.cancel_token is None else _Waiting(self.cancel_token)

    def cancel(self, futures: list[Any]) -> None:
        self.cancelled.extend(futures)


def test_slices_come_in_order_with_a_bounded_window():
    client = _FakeClient()
    images = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((10, 5, 5), np.uint8)
    seen = []
    for event in iter_predict_slices_distributed(MODEL, images, client, window=3):
        if isinstance(event, SlicePredicted):
            client.taken += 1
            seen.append((event.index, event.total, float(event.probabilities[0, 0, 0])))
    assert seen == [(z, 10, float(z)) for z in range(10)]
    assert client.most_in_flight == 3
    assert client.cancelled == []


def test_cancel_while_waiting_cancels_the_slices_in_flight():
    cancel = CancelToken()
    client = _FakeClient(cancel)
    job = iter_predict_slices_distributed(MODEL, np.zeros((6, 5, 5)), client, cancel=cancel)
    assert isinstance(next(job), Notice)
    assert list(job) == [Finished(RunState.CANCELLED)]
    assert len(client.cancelled) == 4  # the default window: twice the two threads
