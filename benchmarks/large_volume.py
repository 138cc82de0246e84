"""Big volumes: ``dlbio predict`` on TIFF and zarr, on one process and on dask workers.

Synthetic stacks of 2048 x 2048 uint8 slices, each ISBI 2012 slice tiled 4 x 4 (real EM
texture, so the network does real work), are written to a temporary folder and predicted by
``dlbio predict`` in child processes with ``builtin:em-membranes``:

- throughput (megapixels/s) of 16 slices: TIFF in and out against OME-Zarr in and out (one
  process), and ``--workers 1`` against ``--workers 2`` (TIFF).  Every run also predicts one
  slice the same way, and the throughput is that of the other 15 slices: start-up (TensorFlow,
  the model, the cluster's workers) is left out;
- peak resident memory of the whole process tree (the command and all its workers, sampled
  with psutil every 50 ms) with ``--workers 2``, for 16 and for 64 slices; memory should not
  grow with the volume: the issue asks for a 64 / 16 ratio of at most 1.25.

Prints a readable table; the last line is one JSON object.

Usage: python benchmarks/large_volume.py [--quick] [--data DIR] [--model MODEL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
DLBIO = [sys.executable, "-c", "import sys; from napari_dlbio.cli import main; sys.exit(main())"]
SAMPLE_S = 0.05


class TreeMemory:
    """Peak of the summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self._root = psutil.Process(pid)
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in processes:
                try:
                    total += process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue  # a worker that just ended
            self.peak_bytes = max(self.peak_bytes, total)


def write_inputs(
    isbi: np.ndarray, folder: Path, slices: int, size: int, *, zarr: bool
) -> dict[str, Path]:
    """A synthetic stack as an uncompressed TIFF and, if asked, as an OME-Zarr image."""
    from napari_dlbio.core.zarr_output import open_zarr_output

    repeats = (size // isbi.shape[1], size // isbi.shape[2])
    paths = {"tiff": folder / f"{slices}.tif"}
    with tifffile.TiffWriter(paths["tiff"]) as writer:
        for z in range(slices):
            plane = np.tile(isbi[z % len(isbi)], repeats)
            writer.write(plane, contiguous=True, photometric="minisblack")
    if zarr:
        paths["zarr"] = folder / f"{slices}.zarr"
        with open_zarr_output(paths["zarr"], shape=(slices, size, size), dtype=np.uint8) as out:
            for z in range(slices):
                out.write(z, np.tile(isbi[z % len(isbi)], repeats))
    return paths


def run_predict(images: Path, out: Path, model: str, *options: str) -> dict[str, float]:
    """Seconds and peak tree RSS (MB) of one ``dlbio predict``; stops the script on failure."""
    command = [*DLBIO, "predict", "--model", model, "--images", str(images), "--out", str(out)]
    with tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(
            [*command, "--quiet", *options], stdout=subprocess.DEVNULL, stderr=err
        )
        memory = TreeMemory(child.pid)
        child.wait()
        seconds = time.perf_counter() - started
        memory.stop()
        if child.returncode != 0:
            err.seek(0)
            sys.stderr.write(err.read())
            raise SystemExit(f"dlbio predict {' '.join(options)} failed on {images}")
    return {"seconds": seconds, "peak_rss_mb": memory.peak_bytes / 2**20}


def throughput(
    inputs: dict[int, dict[str, Path]], kind: str, work: Path, model: str, *options: str
) -> dict[str, Any]:
    """Megapixels/s of the slices after the first: a 1-slice run gives the start-up time."""
    runs = {}
    for slices, paths in inputs.items():
        suffix = ".zarr" if kind == "zarr" else ".tif"
        out = work / f"mask-{kind}-{'-'.join(options) or 'local'}-{slices}{suffix}"
        runs[slices] = run_predict(paths[kind], out, model, *options)
    one, many = min(runs), max(runs)
    height, width = _slice_shape(inputs[many]["tiff"])
    pixels = (many - one) * height * width
    seconds = runs[many]["seconds"] - runs[one]["seconds"]
    return {
        # None when start-up varied more than the extra slices took (tiny --quick slices).
        "mpx_per_s": round(pixels / seconds / 1e6, 3) if seconds > 0 else None,
        "seconds": round(runs[many]["seconds"], 1),
        "startup_s": round(runs[one]["seconds"], 1),
        "peak_rss_mb": round(runs[many]["peak_rss_mb"], 1),
    }


def _slice_shape(tiff: Path) -> tuple[int, int]:
    with tifffile.TiffFile(tiff) as tif:
        return tif.pages[0].shape[:2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small slices, to check the script")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared/data folder")
    parser.add_argument("--model", default="builtin:em-membranes", help="segmentation model")
    args = parser.parse_args()
    size, few, many = (512, 4, 8) if args.quick else (2048, 16, 64)
    isbi = tifffile.imread(args.data / "isbi2012" / "train-volume.tif")

    with tempfile.TemporaryDirectory(prefix="dlbio-large-volume-") as folder:
        work = Path(folder)
        small = {n: write_inputs(isbi, work, n, size, zarr=True) for n in (1, few)}
        rows = {
            "TIFF, one process": throughput(small, "tiff", work, args.model),
            "OME-Zarr, one process": throughput(small, "zarr", work, args.model),
            "TIFF, --workers 1": throughput(small, "tiff", work, args.model, "--workers", "1"),
            "TIFF, --workers 2": throughput(small, "tiff", work, args.model, "--workers", "2"),
        }
        out = work / f"mask-workers-2-{many}.tif"
        images = write_inputs(isbi, work, many, size, zarr=False)["tiff"]
        large = run_predict(images, out, args.model, "--workers", "2")

    print(f"{few} slices of {size} x {size} (start-up left out), {os.cpu_count()} CPUs\n")
    print(f"{'run':<24}{'Mpx/s':>8}{'seconds':>9}{'start-up s':>12}{'peak RSS MB':>13}")
    for name, row in rows.items():
        speed = "n/a" if row["mpx_per_s"] is None else f"{row['mpx_per_s']:.3f}"
        print(
            f"{name:<24}{speed:>8}{row['seconds']:>9.1f}{row['startup_s']:>12.1f}"
            f"{row['peak_rss_mb']:>13.0f}"
        )
    few_rss = rows["TIFF, --workers 2"]["peak_rss_mb"]
    many_rss = round(large["peak_rss_mb"], 1)
    ratio = round(many_rss / few_rss, 3)
    print(
        f"\n--workers 2, peak RSS of the process tree: {few} slices {few_rss:.0f} MB, "
        f"{many} slices {many_rss:.0f} MB, ratio {ratio:.2f} (target <= 1.25)"
    )
    figures: dict[str, Any] = {
        "slice_size": size,
        "slices_small": few,
        "slices_large": many,
        "cpus": os.cpu_count(),
        "mpx_per_s_tiff": rows["TIFF, one process"]["mpx_per_s"],
        "mpx_per_s_zarr": rows["OME-Zarr, one process"]["mpx_per_s"],
        "mpx_per_s_workers_1": rows["TIFF, --workers 1"]["mpx_per_s"],
        "mpx_per_s_workers_2": rows["TIFF, --workers 2"]["mpx_per_s"],
        "peak_rss_mb_16_slices": few_rss,
        "peak_rss_mb_64_slices": many_rss,
        "rss_ratio_64_vs_16": ratio,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
