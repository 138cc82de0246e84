"""Soak test: many train -> cancel -> predict cycles in one process, as a long GUI session does.

Every cycle trains a fresh U-Net of the segmentation engine on the ISBI sample shipped with
the plugin, cancels it through a ``CancelToken`` after a few batches (as the Stop button
does), predicts a slice with the model it got, and drops everything.  After each cycle the
resident memory (VmRSS of /proc/self/status) and the number of Python threads are recorded:
both should level off after the first cycles instead of growing with every cycle.

Prints a table; the last line is one JSON object with ``cycles``, ``rss_start_mib``
(before the first cycle, TensorFlow loaded), ``rss_end_mib``, ``rss_growth_mib``,
``rss_growth_after_cycle_5_mib`` (end minus after cycle 5: the steady-state leak),
``threads_start``, ``threads_end``, ``seconds`` and the per-cycle ``rss_mib`` and
``threads``.

Usage: python benchmarks/soak.py [--cycles 20] [--batches 3]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# The default U-Net, with patches and tiles that suit the 512 x 512 sample slices.
SOAK_SETTINGS: dict[str, Any] = {
    "patch_size": 128,
    "batch_size": 4,
    "epochs": 1000,
    "steps_per_epoch": 50,
    "tile_size": 256,
    "tile_overlap": 32,
}


def release_free_memory() -> None:
    """Hand freed heap memory back to the system (glibc only), so RSS shows what is kept."""
    # Not glibc: nothing to do, RSS just stays a little noisier.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_mib() -> float:
    """Resident memory of this process in MiB (VmRSS of /proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def python_threads(settle_s: float = 2.0) -> int:
    """Live Python threads, after giving finished worker threads a moment to end."""
    deadline = time.monotonic() + settle_s
    count = threading.active_count()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = threading.active_count()
        if now == count:
            break
        count = now
    return threading.active_count()


@dataclass(frozen=True)
class Cycle:
    """What one train -> cancel -> predict cycle did and left behind."""

    index: int
    batches: int
    state: str
    seconds: float
    rss_mib: float
    threads: int


def run_cycles(
    cycles: int,
    images: np.ndarray,
    annotation: np.ndarray,
    config: Any,
    batches: int,
    on_cycle: Callable[[Cycle], None] | None = None,
    *,
    trim: bool = False,
) -> list[Cycle]:
    """Train, cancel after ``batches`` batches, predict slice 0; ``cycles`` times.

    With ``trim``, freed heap memory is handed back before each measurement, which makes
    the RSS series smooth enough to tell a steady leak from allocator noise.

    Returns
    -------
    list of Cycle
        One record per cycle, measured after the cycle's objects were dropped.
    """
    from napari_dlbio.core.events import BatchEnded, CancelToken, run_to_end
    from napari_dlbio.models.segmentation import iter_train_segmentation, predict_segmentation

    records = []
    for index in range(1, cycles + 1):
        started = time.perf_counter()
        cancel = CancelToken()
        seen = []

        def stop_after(event: Any, seen: list = seen, cancel: CancelToken = cancel) -> None:
            if isinstance(event, BatchEnded):
                seen.append(event)
                if len(seen) >= batches:
                    cancel.cancel()

        result = run_to_end(
            iter_train_segmentation(images, annotation, config, cancel=cancel), stop_after
        )
        prediction = predict_segmentation(result.model, images[:1])
        if prediction is None or prediction.mask.shape != images[:1].shape:
            raise RuntimeError(f"cycle {index}: prediction failed")
        state = result.fit.state.value
        del result, prediction
        gc.collect()
        if trim:
            release_free_memory()
        record = Cycle(
            index=index,
            batches=len(seen),
            state=state,
            seconds=time.perf_counter() - started,
            rss_mib=rss_mib(),
            threads=python_threads(),
        )
        records.append(record)
        if on_cycle is not None:
            on_cycle(record)
    return records


def summary(records: list[Cycle], rss_start: float, threads_start: int) -> dict[str, Any]:
    """The JSON summary of a soak run."""
    rss = [record.rss_mib for record in records]
    after_five = rss[4] if len(rss) >= 5 else rss[0]
    return {
        "cycles": len(records),
        "rss_start_mib": round(rss_start, 1),
        "rss_end_mib": round(rss[-1], 1),
        "rss_growth_mib": round(rss[-1] - rss_start, 1),
        "rss_growth_after_cycle_5_mib": round(rss[-1] - after_five, 1),
        "threads_start": threads_start,
        "threads_end": records[-1].threads,
        "seconds": round(sum(record.seconds for record in records), 1),
        "rss_mib": [round(value, 1) for value in rss],
        "threads": [record.threads for record in records],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--batches", type=int, default=3, help="batches before cancelling")
    parser.add_argument(
        "--trim", action="store_true", help="return freed heap memory before measuring (glibc)"
    )
    args = parser.parse_args()

    from napari_dlbio._sample_data import make_isbi_sample
    from napari_dlbio.core.segmentation_config import SegmentationConfig
    from napari_dlbio.models._tf import load_tensorflow

    load_tensorflow()
    (images, _, _), (annotation, _, _) = make_isbi_sample()
    config = SegmentationConfig(**SOAK_SETTINGS)
    gc.collect()
    rss_start, threads_start = rss_mib(), python_threads()
    print(
        f"ISBI sample {images.shape}; U-Net depth {config.network.depth}, cancel after "
        f"{args.batches} batches; start: {rss_start:.0f} MiB, {threads_start} threads"
    )
    print(f"{'cycle':>5} {'batches':>7} {'state':>9} {'seconds':>8} {'RSS MiB':>8} {'threads':>7}")

    def show(record: Cycle) -> None:
        print(
            f"{record.index:>5} {record.batches:>7} {record.state:>9} {record.seconds:>8.1f} "
            f"{record.rss_mib:>8.0f} {record.threads:>7}",
            flush=True,
        )

    records = run_cycles(
        args.cycles, images, annotation, config, args.batches, show, trim=args.trim
    )
    print(json.dumps(summary(records, rss_start, threads_start)))


if __name__ == "__main__":
    main()
