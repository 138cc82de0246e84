"""A simulated annotator corrects the U-Net on ISBI 2012, round after round.

Round 0: a few scribbles per class on slice 0 (short strokes inside the ground truth of
each class), a model trained from scratch on them with the default burst.  Every later
round the annotator moves to the next slice, looks at the model's mask there and paints
the largest wrongly-predicted connected regions with their true class, at most
``--brush-budget`` (5 %) of one slice's pixels; the model fine-tunes for the default burst
(:data:`~napari_dlbio.models.interactive.DEFAULT_BURST_SECONDS`) with a quarter of every
batch on these fresh corrections, and re-predicts the slice.  As in the Correct &
fine-tune widget's default, the unpainted pixels of every corrected slice count as right:
the burst learns them as the mask the annotator saw there
(:func:`~napari_dlbio.core.labels.with_reviewed_slices`); ``--corrections-only`` turns
that off.  The simulated user has set "Remove specks under" to ``--min-region-pixels``
(200): membrane regions of fewer pixels, in the masks it corrects and in the held-out
masks, become background (:mod:`napari_dlbio.core.masks`); 0 shows the network alone.
After every round the membrane IoU on the held-out slices 25-29 is measured (not counted
in the round's seconds), of the mask and of the network alone (argmax, no speck removal).

Prints a table; the last line is one JSON object with a ``rounds`` list of ``{"round",
"annotated_percent", "seconds", "heldout_iou"}`` (``annotated_percent``: annotated pixels
so far, as a share of one 512 x 512 slice).

``--whole-slices`` is the reference the corrections are measured against: the annotator
paints the whole ground truth of slice 0 and then of every next slice, with the same bursts.

``--start MODEL`` (a model folder or ``builtin:NAME``) starts from a trained model instead:
round 0 is its mask as it comes (no annotation, no burst), and every later round corrects
it as above.  Only a model that never saw slices 25-29 gives held-out figures: the shipped
``builtin:em-membranes`` trained on all 30 slices, so compare with the held-out recipe's
model (``scripts/train_builtin_models.py`` leaves it in
``build/builtin-training/em-membranes/held-out-model``).

Usage: python benchmarks/interactive_loop.py [--rounds 10] [--brush-budget 0.05]
       [--min-region-pixels 200] [--corrections-only | --whole-slices] [--data DIR]
       [--start MODEL]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import tifffile
from skimage.measure import label

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
HELD_OUT = slice(25, 30)
CLASSES = ("background", "membrane")
STROKES_PER_CLASS = 6
STROKE_LENGTH = 40


def scribbles(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A few short horizontal strokes per class, kept inside that class's true pixels."""
    annotation = np.zeros(truth.shape, dtype=np.uint8)
    for value in (1, 2):
        ys, xs = np.nonzero(truth == value)
        for index in rng.choice(ys.size, STROKES_PER_CLASS, replace=False):
            row = ys[index]
            columns = np.arange(xs[index], min(xs[index] + STROKE_LENGTH, truth.shape[1]))
            inside = columns[truth[row, columns] == value]
            annotation[row, inside] = value
    return annotation


def corrections(truth: np.ndarray, predicted: np.ndarray, budget: int) -> np.ndarray:
    """Pixels of the largest wrong regions, with their true annotation, up to ``budget``."""
    regions = label(truth != predicted, connectivity=1)
    sizes = np.bincount(regions.ravel())
    sizes[0] = 0
    painted = np.zeros(truth.shape, dtype=bool)
    left = budget
    for region in np.argsort(sizes)[::-1]:
        if sizes[region] == 0 or left == 0:
            break
        ys, xs = np.nonzero(regions == region)
        take = min(left, ys.size)
        painted[ys[:take], xs[:take]] = True
        left -= take
    return painted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="correction rounds after round 0")
    parser.add_argument("--brush-budget", type=float, default=0.05, help="share of one slice")
    parser.add_argument(
        "--min-region-pixels",
        type=int,
        default=200,
        help="the user's 'Remove specks under' setting (0: keep every predicted region)",
    )
    parser.add_argument(
        "--corrections-only",
        action="store_true",
        help="learn the painted pixels only, not the rest of the corrected slices",
    )
    parser.add_argument(
        "--whole-slices",
        action="store_true",
        help="paint whole slices of ground truth instead of scribbles and corrections",
    )
    parser.add_argument("--seconds", type=float, help="burst length (default: the plugin's)")
    parser.add_argument("--start", help="start from this model folder or builtin:NAME")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared/data folder")
    args = parser.parse_args()

    from napari_dlbio.core.events import run_to_end
    from napari_dlbio.core.labels import with_reviewed_slices
    from napari_dlbio.core.masks import mask_from_probabilities
    from napari_dlbio.core.segmentation_config import SegmentationConfig
    from napari_dlbio.models.interactive import DEFAULT_BURST_SECONDS, FineTuner
    from napari_dlbio.models.segmentation import evaluate_segmentation, predict_segmentation
    from napari_dlbio.models.store import load_model_folder

    folder = args.data / "isbi2012"
    if not folder.is_dir():
        raise SystemExit(f"{folder} is missing; point --data at the shared data folder.")
    volume = tifffile.imread(folder / "train-volume.tif")
    truth = np.where(tifffile.imread(folder / "train-labels.tif") == 0, 2, 1).astype(np.uint8)
    seconds = args.seconds or DEFAULT_BURST_SECONDS
    slice_pixels = volume.shape[1] * volume.shape[2]
    budget = int(args.brush_budget * slice_pixels)
    rng = np.random.default_rng(0)

    training = volume[:25]
    annotation = np.zeros(training.shape, dtype=np.uint8)
    if args.start is None:
        annotation[0] = truth[0] if args.whole_slices else scribbles(truth[0], rng)
    recent = annotation > 0
    reviewed: dict[int, np.ndarray] = {}
    if args.start is None:
        config = SegmentationConfig.interactive(class_names=CLASSES)
        tuner = FineTuner(config.replace(min_region_pixels=args.min_region_pixels))
    else:
        start = load_model_folder(args.start)
        tuner = FineTuner(start.config.replace(min_region_pixels=args.min_region_pixels), start)
    rounds, network_only = [], []
    for round_index in range(args.rounds + 1):
        current = round_index % len(training)
        if round_index > 0:
            predicted = predict_segmentation(tuner.model, training[current]).mask[0] + 1
            if args.whole_slices:
                painted = np.ones(predicted.shape, dtype=bool)
            else:
                painted = corrections(truth[current], predicted, budget)
                if not args.corrections_only:
                    reviewed[current] = predicted - 1
            annotation[current][painted] = truth[current][painted]
            recent = np.zeros(annotation.shape, dtype=bool)
            recent[current] = painted
        started = time.perf_counter()
        if args.start is None or round_index > 0:  # a trained model's round 0: as it comes
            labels = with_reviewed_slices(annotation, reviewed)
            run_to_end(tuner.iter_burst(training, labels, seconds=seconds, recent=recent))
        predict_segmentation(tuner.model, training[current])  # what the user sees next
        round_seconds = time.perf_counter() - started
        prediction = predict_segmentation(tuner.model, volume[HELD_OUT])
        report = evaluate_segmentation(prediction.mask, truth[HELD_OUT], CLASSES)
        argmax = mask_from_probabilities(prediction.probabilities)
        network = evaluate_segmentation(argmax, truth[HELD_OUT], CLASSES)
        network_only.append(round(network["classes"]["membrane"]["iou"], 4))
        rounds.append(
            {
                "round": round_index,
                "slice": current,
                "annotated_percent": round(100 * np.count_nonzero(annotation) / slice_pixels, 2),
                "seconds": round(round_seconds, 2),
                "heldout_iou": round(report["classes"]["membrane"]["iou"], 4),
            }
        )
        row = rounds[-1]
        print(
            f"round {row['round']:>2}  slice {row['slice']:>2}  annotated "
            f"{row['annotated_percent']:>6.2f} % of a slice  {row['seconds']:>6.2f} s  "
            f"held-out membrane IoU {row['heldout_iou']:.4f} (network alone "
            f"{network_only[-1]:.4f})",
            flush=True,
        )
    print(
        json.dumps(
            {
                "burst_seconds": seconds,
                "brush_budget_percent_of_slice": 100 * args.brush_budget,
                "annotator": _annotator(args),
                "start": args.start or "scratch",
                "min_region_pixels": args.min_region_pixels,
                "max_round_seconds": max(r["seconds"] for r in rounds),
                "final_heldout_iou": rounds[-1]["heldout_iou"],
                "rounds": rounds,
                "network_only_heldout_iou": network_only,
            }
        )
    )


def _annotator(args: argparse.Namespace) -> str:
    if args.whole_slices:
        return "whole slices"
    if args.corrections_only:
        return "corrections only"
    return "corrections, the rest of each corrected slice taken as right"


if __name__ == "__main__":
    main()
