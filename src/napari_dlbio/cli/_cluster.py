"""``--workers`` / ``--scheduler``: predict the slices of a volume on a dask cluster.

``--workers N`` starts a ``LocalCluster`` of N worker processes (one thread each, the
machine's memory shared equally) for one run and closes it on every way out, Ctrl+C
included; ``--scheduler ADDRESS`` joins a running cluster (on Slurm, one that dask-jobqueue
started).  A scheduler is asked who it is, within :data:`CONNECT_TIMEOUT_S`, before anything
is written: distributed's own connect (checked with distributed 2026.8) waits forever on a
server that accepts the connection and never answers, and reads a web server's reply as a
frame of exabytes (a ``MemoryError``).  Dask's log lines stay hidden unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

# Seconds a scheduler has to answer.  A live one answers in milliseconds; the user should
# read the error within 30 s of starting dlbio, TensorFlow's start and the model included.
CONNECT_TIMEOUT_S = 10.0


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Add the mutually exclusive ``--workers N`` and ``--scheduler ADDRESS``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="segmentation: predict the slices on N local worker processes (dask), each "
        "loading the model once",
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="segmentation: predict on a running dask cluster, e.g. tcp://node12:8786 "
        "(on Slurm, started by dask-jobqueue; see README)",
    )


def uses_cluster(args: argparse.Namespace) -> bool:
    """Whether ``--workers`` or ``--scheduler`` was given."""
    return getattr(args, "workers", None) is not None or bool(getattr(args, "scheduler", None))


@contextlib.contextmanager
def cluster_client(args: argparse.Namespace) -> Iterator[Any]:
    """A ``distributed.Client`` of the cluster the options ask for, or None without them.

    Raises
    ------
    ClusterError
        When ``--scheduler`` is no address, or no dask scheduler answers there in time.
    """
    if not uses_cluster(args):
        yield None
        return
    from distributed import Client, LocalCluster

    level = logging.WARNING if getattr(args, "verbose", False) else logging.ERROR
    with _distributed_log_level(level):
        if args.scheduler:
            check_scheduler(args.scheduler, CONNECT_TIMEOUT_S)
            with Client(args.scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False) as client:
                yield client
            return
        # TensorFlow would give every worker a thread per core; the cores are shared out.
        threads = max(1, len(os.sched_getaffinity(0)) // args.workers)
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                memory_limit="auto",
                dashboard_address=None,
                silence_logs=level,
                env={"TF_NUM_INTRAOP_THREADS": str(threads)},
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            yield client


def check_scheduler(address: str, timeout: float) -> None:
    """Make sure a dask scheduler answers at ``address`` within ``timeout`` seconds.

    Raises
    ------
    ClusterError
        For an address that is none, no answer in time (nothing listening, a firewall,
        another kind of server), or the answer of a worker rather than the scheduler.
    """
    from distributed.comm.addressing import get_address_host_port

    from napari_dlbio.models.distributed_prediction import ClusterError

    try:
        get_address_host_port(address)
    except ValueError as error:
        raise ClusterError(
            f"--scheduler {address} is not a dask scheduler address ({error}); give it as "
            "tcp://HOST:PORT, e.g. tcp://node12:8786."
        ) from None
    try:
        identity = asyncio.run(asyncio.wait_for(_identity(address, timeout), timeout))
    # Whatever else answers there fails dask's protocol its own way: OSError, TimeoutError,
    # a MemoryError for a bogus frame length, msgpack's errors.
    except Exception:  # noqa: BLE001  (any failure means: no scheduler answered)
        raise ClusterError(
            f"no dask scheduler answered at {address} within {timeout:g} s; start one "
            "(dask scheduler, or dask-jobqueue on a cluster) or check the address."
        ) from None
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind != "Scheduler":
        raise ClusterError(
            f"{address} answered as a dask {kind or 'service'}, not as a scheduler; give the "
            "address the scheduler prints (port 8786 unless chosen otherwise)."
        )


async def _identity(address: str, timeout: float) -> Any:
    from distributed.comm import connect

    comm = await connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


@contextlib.contextmanager
def _distributed_log_level(level: int) -> Iterator[None]:
    logger = logging.getLogger("distributed")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _worker_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of workers, not {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"at least 1 worker, not {count}")
    return count
