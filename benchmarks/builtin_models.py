"""The built-in models: held-out quality, load and prediction time, and the correction loop.

For every built-in model:

- **held out**: the model of the same recipe that did not see the held-out data
  (``scripts/train_builtin_models.py`` leaves it in ``--work``), scored with
  ``evaluate_segmentation`` / ``evaluate_classifier`` on ISBI 2012 slices 25-29 or the 20 %
  of each leaf class it kept out; without that folder, the figures recorded in the shipped
  model's ``metrics.json`` are shown and marked "recorded";
- **load**: ``load_model_folder("builtin:NAME")`` (hash check and Keras safe mode), the
  median of three loads;
- **predict**: one 512 x 512 EM slice and the 30-slice stack, or 32 leaf photos (median of
  three, after one warm-up call).

Then the correction loop (``benchmarks/interactive_loop.py``) started from the
``em-membranes`` held-out model against the same loop from scratch, both ``--rounds`` rounds
with the default burst, side by side in this run.

Prints a readable table; the last line is one JSON object.

Usage: python benchmarks/builtin_models.py [--rounds 3] [--data DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
DEFAULT_WORK = REPO / "build" / "builtin-training"
HELD_OUT = slice(25, 30)


def median_seconds(call: Any, repeats: int = 3) -> float:
    """Median wall seconds of ``call()`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def em_truth(name: str, data: Path) -> np.ndarray:
    """Ground truth of the EM models as 0 = background, k = class k."""
    if name == "em-membranes":
        return (tifffile.imread(data / "isbi2012" / "train-labels.tif") == 0).astype(np.uint8)
    membranes = tifffile.imread(data / "isbi2012_structures" / "membranes.tif") == 255
    mitochondria = tifffile.imread(data / "isbi2012_structures" / "mitochondria.tif") == 255
    truth = membranes.astype(np.uint8)
    truth[mitochondria] = 2
    return truth


def segmentation_figures(name: str, data: Path, work: Path) -> dict[str, Any]:
    from napari_dlbio.models.segmentation import evaluate_segmentation, predict_segmentation
    from napari_dlbio.models.store import load_model_folder

    volume = tifffile.imread(data / "isbi2012" / "train-volume.tif")
    model = load_model_folder(f"builtin:{name}")
    figures: dict[str, Any] = {
        "load_s": median_seconds(lambda: load_model_folder(f"builtin:{name}"))
    }
    predict_segmentation(model, volume[:1])
    figures["predict_slice_s"] = median_seconds(lambda: predict_segmentation(model, volume[:1]))
    figures["predict_stack_s"] = median_seconds(lambda: predict_segmentation(model, volume), 1)
    held_out = work / name / "held-out-model"
    names = model.config.class_names
    if held_out.is_dir():
        recipe_model = load_model_folder(held_out)
        mask = predict_segmentation(recipe_model, volume[HELD_OUT]).mask
        report = evaluate_segmentation(mask, em_truth(name, data)[HELD_OUT] + 1, names)
        figures["held_out_source"] = "measured"
    else:
        report = model.metrics.get("held_out", {})
        figures["held_out_source"] = "recorded"
    figures["held_out_iou"] = {
        cls: round(values["iou"], 4)
        for cls, values in report.get("classes", {}).items()
        if cls != "background"
    }
    return figures


def classifier_figures(name: str, work: Path) -> dict[str, Any]:
    from napari_dlbio.core.class_dataset import load_class_folder
    from napari_dlbio.models.classification import evaluate_classifier, predict_classifier
    from napari_dlbio.models.store import load_model_folder

    model = load_model_folder(f"builtin:{name}")
    figures: dict[str, Any] = {
        "load_s": median_seconds(lambda: load_model_folder(f"builtin:{name}"))
    }
    held_out = work / name / "held_out"
    recipe_folder = work / name / "held-out-model"
    if held_out.is_dir() and recipe_folder.is_dir():
        recipe_model = load_model_folder(recipe_folder)
        config = recipe_model.config
        photos = load_class_folder(held_out, config.input_size, config.input_channels)
        report = evaluate_classifier(recipe_model, photos.images, photos.class_indices)
        figures["held_out_source"] = "measured"
        batch = photos.images[:32]
    else:
        report = model.metrics.get("held_out", {})
        figures["held_out_source"] = "recorded"
        batch = np.zeros((32, 256, 256, 3), np.uint8)
    predict_classifier(model, batch)
    figures["predict_32_photos_s"] = median_seconds(lambda: predict_classifier(model, batch))
    figures["held_out_accuracy"] = round(report.get("accuracy", float("nan")), 4)
    return figures


def correction_loop(start: str | None, rounds: int, data: Path) -> dict[str, Any]:
    """Run ``interactive_loop.py`` in a child process; return its JSON object."""
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "interactive_loop.py"),
        "--rounds",
        str(rounds),
        "--data",
        str(data),
    ]
    if start is not None:
        command += ["--start", start]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="correction rounds after round 0")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()

    from napari_dlbio.core.builtin_models import builtin_models
    from napari_dlbio.core.config import Task

    models: dict[str, Any] = {}
    print(f"{'model':<28}{'held out':<62}{'load s':>8}{'predict s':>22}")
    for builtin in builtin_models():
        if builtin.task is Task.SEGMENTATION:
            figures = segmentation_figures(builtin.name, args.data, args.work)
            quality = ", ".join(f"{k} IoU {v:.3f}" for k, v in figures["held_out_iou"].items())
            speed = f"{figures['predict_slice_s']:.2f} / {figures['predict_stack_s']:.1f} (30)"
        else:
            figures = classifier_figures(builtin.name, args.work)
            quality = f"accuracy {figures['held_out_accuracy']:.3f}"
            speed = f"{figures['predict_32_photos_s']:.2f} (32 photos)"
        quality += f" ({figures['held_out_source']})"
        models[builtin.name] = figures
        print(f"{builtin.name:<28}{quality:<62}{figures['load_s']:>8.2f}{speed:>22}", flush=True)

    held_out_model = args.work / "em-membranes" / "held-out-model"
    loops = {}
    if held_out_model.is_dir():
        for label, start in (("from_em_membranes", str(held_out_model)), ("from_scratch", None)):
            loop = correction_loop(start, args.rounds, args.data)
            loops[label] = [row["heldout_iou"] for row in loop["rounds"]]
        print("\nCorrection loop, held-out membrane IoU by round (0 = before any correction):")
        for label, ious in loops.items():
            print(f"  {label:<20}" + "  ".join(f"{iou:.3f}" for iou in ious))
    else:
        print(f"\nNo {held_out_model}: run scripts/train_builtin_models.py for the loop.")
    print(json.dumps({"models": models, "correction_loop_heldout_iou": loops}))


if __name__ == "__main__":
    main()
