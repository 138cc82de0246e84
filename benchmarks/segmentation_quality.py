"""Segmentation quality on real EM data with the CLI's default settings.

Trains ``dlbio train`` (default segmentation settings, ``--time-budget``) on ISBI 2012
slices 0-24 and evaluates on slices 25-29, for membranes (``train-labels.tif``, label value
0 = membrane) and for mitochondria (``isbi2012_structures/mitochondria.tif``, 255 =
mitochondrion).  Also times prediction of the whole 30 x 512 x 512 stack and of one slice.

Prints a readable table; the last line is one JSON object of the figures.

Usage: python benchmarks/segmentation_quality.py [--budget SECONDS] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
TRAIN, TEST = slice(0, 25), slice(25, 30)
TARGETS = {
    "membrane": ("isbi2012/train-labels.tif", "255=background,0=membrane"),
    "mitochondria": ("isbi2012_structures/mitochondria.tif", "0=background,255=mitochondrion"),
}


def dlbio(*args: str) -> tuple[str, float, float]:
    """Run the CLI in a child process; return its stdout, wall seconds and peak RSS (GiB)."""
    command = [
        sys.executable,
        "-c",
        "import sys; from napari_dlbio.cli import main; sys.exit(main())",
    ]
    started = time.perf_counter()
    # Output goes to files, not pipes: a child that fills a pipe nobody reads would hang.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([*command, *args], stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        sys.stderr.write(stderr)
        raise SystemExit(f"dlbio {args[0]} failed with exit code {child.returncode}")
    return stdout, seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def run_target(name: str, data: Path, work: Path, budget: float) -> dict[str, float]:
    """Train and evaluate one target; return its figures."""
    label_file, mapping = TARGETS[name]
    volume = tifffile.imread(data / "isbi2012" / "train-volume.tif")
    labels = tifffile.imread(data / label_file)
    files = {}
    for part, index in (("train", TRAIN), ("test", TEST)):
        for kind, stack in (("images", volume), ("labels", labels)):
            files[part, kind] = work / f"{name}_{part}_{kind}.tif"
            tifffile.imwrite(files[part, kind], stack[index], photometric="minisblack")
    model = work / f"{name}_model"
    _, train_wall, peak = dlbio(
        "train",
        "--images",
        str(files["train", "images"]),
        "--labels",
        str(files["train", "labels"]),
        "--label-values",
        mapping,
        "--time-budget",
        str(budget),
        "--out",
        str(model),
        "--quiet",
    )
    metrics = json.loads((model / "metrics.json").read_text())
    out, _, _ = dlbio(
        "evaluate",
        "--model",
        str(model),
        "--images",
        str(files["test", "images"]),
        "--labels",
        str(files["test", "labels"]),
        "--label-values",
        mapping,
        "--json",
    )
    report = json.loads(out.strip().splitlines()[-1])
    foreground = mapping.split(",")[-1].split("=")[1]
    return {
        "iou": report["classes"][foreground]["iou"],
        "dice": report["classes"][foreground]["dice"],
        "pixel_accuracy": report["pixel_accuracy"],
        "train_seconds": metrics["train_seconds"],
        "train_wall_seconds": round(train_wall, 1),
        "epochs": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "peak_rss_gib": round(peak, 2),
        "model": str(model),
    }


def prediction_speed(model: Path, data: Path) -> dict[str, float]:
    """Megapixels per second on the 30-slice stack and seconds for one warm 512 x 512 slice."""
    from napari_dlbio.core.config import Task
    from napari_dlbio.models.segmentation import predict_segmentation
    from napari_dlbio.models.store import load_model_folder

    folder = load_model_folder(model, Task.SEGMENTATION)
    volume = tifffile.imread(data / "isbi2012" / "train-volume.tif")
    predict_segmentation(folder, volume[:1])
    started = time.perf_counter()
    predict_segmentation(folder, volume)
    stack_seconds = time.perf_counter() - started
    single = []
    for z in range(5):
        started = time.perf_counter()
        predict_segmentation(folder, volume[z])
        single.append(time.perf_counter() - started)
    return {
        "stack_megapixels_per_s": round(volume.size / 1e6 / stack_seconds, 2),
        "slice_seconds": round(sorted(single)[len(single) // 2], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per target")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared/data folder")
    parser.add_argument(
        "--targets", default="membrane,mitochondria", help="comma-separated: membrane,mitochondria"
    )
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="dlbio-bench-") as work:
        for name in args.targets.split(","):
            print(f"training {name} for up to {args.budget:.0f} s ...", flush=True)
            results[name] = run_target(name, args.data, Path(work), args.budget)
        speed = prediction_speed(Path(next(iter(results.values()))["model"]), args.data)
    print()
    header = f"{'target':<14}{'IoU':>8}{'Dice':>8}{'accuracy':>10}"
    print(header + f"{'train s':>9}{'epochs':>8}{'RSS GiB':>9}")
    for name, r in results.items():
        print(
            f"{name:<14}{r['iou']:>8.4f}{r['dice']:>8.4f}{r['pixel_accuracy']:>10.4f}"
            f"{r['train_seconds']:>9.0f}{r['epochs']:>8}{r['peak_rss_gib']:>9.2f}"
        )
    print(
        f"prediction: {speed['stack_megapixels_per_s']} megapixels/s on 30 x 512 x 512, "
        f"{speed['slice_seconds']} s per 512 x 512 slice (warm)"
    )
    figures = {"budget_s": args.budget}
    if "membrane" in results:
        m = results["membrane"]
        figures |= {
            "membrane_iou": m["iou"],
            "membrane_dice": m["dice"],
            "pixel_accuracy": m["pixel_accuracy"],
            "train_seconds": m["train_seconds"],
            "train_wall_seconds": m["train_wall_seconds"],
            "epochs": m["epochs"],
        }
    if "mitochondria" in results:
        figures |= {
            "mitochondria_iou": results["mitochondria"]["iou"],
            "mitochondria_pixel_accuracy": results["mitochondria"]["pixel_accuracy"],
            "mitochondria_train_seconds": results["mitochondria"]["train_seconds"],
        }
    figures["peak_rss_gib"] = max(r["peak_rss_gib"] for r in results.values())
    figures |= speed
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
