"""Training speed of one worker against two workers training one U-Net together.

Each worker is a process of its own, as on a cluster (``MultiWorkerMirroredStrategy`` over
loopback, ``TF_CONFIG`` on two free ports); every worker trains on batches of its own, so
two workers train on twice the patches per step.  All runs train the default U-Net (depth
4, 16 filters, stride-2 stem; 256-pixel patches, batch 4 per worker) on ISBI 2012 slices 0-9
for a fixed number of steps; patches/s count all workers' patches between the end of the
warm-up steps and the last step (start-up, graph tracing and the end of training left out).

Four runs: one worker, then two workers, both free to use all of this machine's cores
(two workers then share them, as they do here); then the same pinned to one core per
worker (``sched_setaffinity``), which is what two nodes of a cluster look like to each
other: each worker has cores of its own and only the gradients travel.

Prints a readable table; the last line is one JSON object.

Usage: python benchmarks/multi_worker_training.py [--steps N] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
BATCH = 4
WARMUP_STEPS = 5
# One worker: trains `steps` steps and prints its timing as the last line (JSON).
WORKER = """
import json, os, sys, time
cores = json.loads(sys.argv[4])
if cores:
    os.sched_setaffinity(0, cores)  # before TensorFlow sizes its thread pools
import tifffile
from napari_dlbio.core.segmentation_config import SegmentationConfig
from napari_dlbio.core.events import run_to_end
from napari_dlbio.models._tf import load_keras
from napari_dlbio.models.segmentation import iter_train_segmentation

data, steps, warmup, per_worker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
images = tifffile.imread(f"{data}/isbi2012/train-volume.tif")[:10]
labels = tifffile.imread(f"{data}/isbi2012/train-labels.tif")[:10]
annotations = (labels == 0).astype("uint8") + 1  # 1 = background, 2 = membrane
config = SegmentationConfig(
    patch_size=256, batch_size=per_worker,
    epochs=1, steps_per_epoch=steps, validation_fraction=0.0,
)
times = {}


class Probe(load_keras().callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 in (warmup, steps):
            times[batch + 1] = time.perf_counter()


run_to_end(iter_train_segmentation(images, annotations, config, callbacks=[Probe()]))
print(json.dumps({"seconds": times[steps] - times[warmup], "steps": steps - warmup}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared/data folder")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    runs = {
        "1_worker": train(1, args, [[]]),
        "2_workers": train(2, args, [[], []]),
        "1_worker_1_core": train(1, args, [[cores[0]]]),
        "2_workers_1_core_each": train(2, args, [[cores[0]], [cores[1 % len(cores)]]]),
    }
    print(f"{len(cores)} cores; batch {BATCH} per worker; {args.steps} steps per run")
    print(f"{'run':<24}{'patches/s':>10}{'s/step':>9}")
    for name, run in runs.items():
        print(f"{name.replace('_', ' '):<24}{run['patches_per_s']:>10.1f}{run['s_per_step']:>9.3f}")
    figures: dict[str, Any] = {"cores": len(cores), "batch_per_worker": BATCH, "steps": args.steps}
    for name, run in runs.items():
        figures[f"patches_per_s_{name}"] = run["patches_per_s"]
    figures["speedup_2_vs_1"] = _ratio(runs["2_workers"], runs["1_worker"])
    figures["speedup_2_vs_1_one_core_each"] = _ratio(
        runs["2_workers_1_core_each"], runs["1_worker_1_core"]
    )
    print(json.dumps(figures))


def train(workers: int, args: argparse.Namespace, cores: list[list[int]]) -> dict[str, float]:
    """Patches/s and seconds per step of ``workers`` processes training together."""
    addresses = _free_addresses(workers)
    processes = []
    for index, pinned in enumerate(cores):
        env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
        if workers > 1:
            cluster = {"worker": addresses}
            task = {"type": "worker", "index": index}
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": task})
        command = [sys.executable, "-c", WORKER, str(args.data), str(args.steps)]
        command += [str(WARMUP_STEPS), json.dumps(pinned), str(BATCH)]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    timings = []
    for process in processes:
        out, _ = process.communicate(timeout=600)
        if process.returncode != 0:
            raise SystemExit(f"a worker failed (exit {process.returncode})")
        timings.append(json.loads(out.strip().splitlines()[-1]))
    # The workers step together; the slowest one's time is the run's.
    seconds = max(timing["seconds"] for timing in timings)
    steps = timings[0]["steps"]
    return {
        "patches_per_s": round(steps * BATCH * workers / seconds, 2),
        "s_per_step": round(seconds / steps, 4),
    }


def _ratio(faster: dict[str, float], slower: dict[str, float]) -> float:
    return round(faster["patches_per_s"] / slower["patches_per_s"], 2)


def _free_addresses(count: int) -> list[str]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:  # all held open at once, so the ports differ
            probe.bind(("localhost", 0))
        return [f"localhost:{probe.getsockname()[1]}" for probe in probes]
    finally:
        for probe in probes:
            probe.close()


if __name__ == "__main__":
    main()
