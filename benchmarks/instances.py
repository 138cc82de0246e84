"""Objects of the built-in EM models: cells and mitochondria on held-out ISBI sections.

For ``em-membranes`` and ``em-membranes-mitochondria``, the model of the same recipe that
never saw ISBI 2012 slices 25-29 (``scripts/train_builtin_models.py`` leaves it in
``--work``; without it the shipped model is used and the figures are marked "seen in
training") predicts those slices; its objects, cut with the default object settings (or
``--smoothing`` / ``--seed-threshold``), are scored against the regions of the ground truth:

- cells (the membranes' boundary class): F1, precision and recall at IoU 0.5, mean matched
  IoU, and the foreground-restricted V_rand and V_info of ISBI 2012, slice by slice;
- mitochondria (an object class; ground truth ``isbi2012_structures/mitochondria.tif``):
  F1, precision and recall at IoU 0.5 and mean matched IoU.

Then the seconds the object step takes per 512 x 512 slice (cut and measure every kind of
object of the model; median over the slices, after one warm-up slice), without prediction.

Prints a readable table; the last line is one JSON object.

Usage: python benchmarks/instances.py [--data DIR] [--work DIR] [--smoothing PX]
       [--seed-threshold P]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
DEFAULT_WORK = REPO / "build" / "builtin-training"
HELD_OUT = slice(25, 30)
MODELS = ("em-membranes", "em-membranes-mitochondria")


def annotation(name: str, data: Path) -> np.ndarray:
    """Held-out ground truth in the annotation convention (1 = background, k + 1 = class k)."""
    membranes = tifffile.imread(data / "isbi2012" / "train-labels.tif")[HELD_OUT] == 0
    truth = 1 + membranes.astype(np.uint8)
    if name == "em-membranes-mitochondria":
        mitochondria = tifffile.imread(data / "isbi2012_structures" / "mitochondria.tif")
        truth[mitochondria[HELD_OUT] == 255] = 3
    return truth


def model_figures(name: str, data: Path, work: Path, settings: Any) -> dict[str, Any]:
    from napari_dlbio.cli.objects import kinds_of, object_scores
    from napari_dlbio.core.object_finder import SliceObjectFinder
    from napari_dlbio.models.segmentation import predict_segmentation
    from napari_dlbio.models.store import load_model_folder

    held_out = work / name / "held-out-model"
    model = load_model_folder(held_out if held_out.is_dir() else f"builtin:{name}")
    images = tifffile.imread(data / "isbi2012" / "train-volume.tif")[HELD_OUT]
    probabilities = predict_segmentation(model, images).probabilities
    scores, _ = object_scores(model.config, annotation(name, data), probabilities, images, settings)
    finder = SliceObjectFinder(kinds_of(model.config), settings, (1.0, 1.0))
    finder.add(0, probabilities[0], images[0])
    seconds = []
    for z in range(len(images)):
        started = time.perf_counter()
        finder.add(z, probabilities[z], images[z])
        seconds.append(time.perf_counter() - started)
    return {
        "held_out": held_out.is_dir(),
        "objects": scores,
        "object_step_s_per_slice": statistics.median(seconds),
    }


def rows(name: str, figures: dict[str, Any]) -> list[str]:
    lines = []
    for kind, scores in figures["objects"].items():
        matching = scores.get("cells", scores)
        extra = ""
        if "v_rand" in scores:
            extra = f"  V_rand {scores['v_rand']:.4f}  V_info {scores['v_info']:.4f}"
        lines.append(
            f"{name:<28} {kind:<14} F1 {matching['f1']:.3f}  precision "
            f"{matching['precision']:.3f}  recall {matching['recall']:.3f}  "
            f"true {matching['n_true']:>4}  found {matching['n_predicted']:>4}{extra}"
        )
    lines.append(
        f"{name:<28} object step {figures['object_step_s_per_slice']:.3f} s per 512 x 512 slice"
        + ("" if figures["held_out"] else "  (shipped model: slices seen in training)")
    )
    return lines


def main() -> None:
    from napari_dlbio.core.object_settings import ObjectSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--smoothing", type=float, default=ObjectSettings().smoothing)
    parser.add_argument("--seed-threshold", type=float, default=ObjectSettings().seed_threshold)
    args = parser.parse_args()
    settings = ObjectSettings(smoothing=args.smoothing, seed_threshold=args.seed_threshold)
    results = {name: model_figures(name, args.data, args.work, settings) for name in MODELS}
    print(
        f"Objects on ISBI 2012 slices 25-29 (smoothing {settings.smoothing} px, seed "
        f"threshold {settings.seed_threshold}):"
    )
    for name, figures in results.items():
        print(*rows(name, figures), sep="\n")
    cells = results["em-membranes"]["objects"]["cells"]
    mitochondria = results["em-membranes-mitochondria"]["objects"]["mitochondrion"]
    summary = {
        "cells_f1": cells["cells"]["f1"],
        "cells_v_rand": cells["v_rand"],
        "cells_v_info": cells["v_info"],
        "mitochondria_f1": mitochondria["f1"],
        "object_step_s_per_slice": results["em-membranes-mitochondria"]["object_step_s_per_slice"],
        "settings": settings.to_dict(),
        "models": results,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
