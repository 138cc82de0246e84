"""Classifier quality on real PlantVillage leaf photos with the default settings.

Trains the default classifier (``ClassifierConfig()``, only the time budget set) on the 15
PlantVillage classes (60 photos each): the engine holds out a stratified 20 % (seed 0) for
validation and keeps the weights of the epoch with the lowest validation loss.  Reports:

- validation accuracy over the 15 classes, and healthy vs diseased accuracy obtained by
  grouping the 15-class predictions (a class is healthy when its name contains "healthy");
- Grad-CAM of the predicted class on every validation photo: the share of CAM mass on leaf
  pixels, and the share of the map's strongest fifth of pixels that lies on the leaf, next
  to the leaf's share of the photo (the final feature map is 6 x 6, so the up-sampled map
  spreads some mass just past the leaf's edge).  Leaf pixels come from a simple
  segmentation: chroma (max - min of R, G, B; the backgrounds are grey) thresholded with
  Otsu, opened, closed, holes filled, largest component kept.  It misses some pale lesions,
  which lowers the measured share;
- training and prediction speed, Grad-CAM time and the process's peak memory.

Prints a readable table; the last line is one JSON object of the figures.

Usage: python benchmarks/classifier_quality.py [--budget SECONDS] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import closing, disk, opening

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))


def leaf_mask(photo: np.ndarray) -> np.ndarray:
    """Boolean leaf pixels of a PlantVillage photo (coloured leaf on a grey background)."""
    pixels = photo.astype(np.float32)
    chroma = ndi.uniform_filter(pixels.max(axis=2) - pixels.min(axis=2), 5)
    mask = chroma > threshold_otsu(chroma)
    mask = ndi.binary_fill_holes(closing(opening(mask, disk(3)), disk(7)))
    labels, count = ndi.label(mask)
    if count == 0:
        return mask
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1


def healthy_groups(class_names: tuple[str, ...]) -> np.ndarray:
    """1 for each healthy class (name contains "healthy"), 0 for the diseased ones."""
    return np.array(["healthy" in name.lower() for name in class_names], dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    args = parser.parse_args()

    from napari_dlbio.core.class_dataset import load_class_folder, stratified_split
    from napari_dlbio.core.classifier_config import ClassifierConfig
    from napari_dlbio.core.events import EpochEnded, run_to_end
    from napari_dlbio.core.io import read_image
    from napari_dlbio.core.metrics import classification_report
    from napari_dlbio.models.classification import iter_train_classifier, predict_classifier
    from napari_dlbio.models.gradcam import grad_cam

    config = ClassifierConfig(time_budget_s=args.budget)
    started = time.perf_counter()
    data = load_class_folder(args.data / "plantvillage", config.input_size)
    load_seconds = time.perf_counter() - started
    config = config.replace(class_names=data.class_names)
    print(
        f"{len(data.paths)} photos of {len(data.class_names)} classes read and resized to "
        f"{config.input_size} px in {load_seconds:.1f} s; training for up to {args.budget:.0f} s"
    )

    def show(event: object) -> None:
        if isinstance(event, EpochEnded):
            figures = {key: round(value, 3) for key, value in event.metrics.items()}
            print(f"  epoch {event.epoch:>3}  loss {event.loss:.3f}  {figures}", flush=True)

    result = run_to_end(iter_train_classifier(data.images, data.class_indices, config), show)
    model, fit = result.model, result.fit
    epochs_run = len(fit.history["loss"])
    steps = int(np.ceil(0.8 * len(data.paths) / config.batch_size))
    train_images = epochs_run * steps * config.batch_size

    # The engine's own split (same function, same seed) gives the validation photos.
    _, validation = stratified_split(
        data.class_indices, config.validation_fraction, model.config.seed
    )
    truth = data.class_indices[validation]
    started = time.perf_counter()
    prediction = predict_classifier(model, data.images[validation])
    predict_seconds = time.perf_counter() - started
    report = classification_report(truth, prediction.predicted, data.class_names)
    groups = healthy_groups(data.class_names)
    grouped = float(np.mean(groups[truth] == groups[prediction.predicted]))

    cam_shares, peak_shares, leaf_shares, cam_seconds = [], [], [], []
    for index, predicted in zip(validation, prediction.predicted, strict=True):
        photo = read_image(data.paths[index])
        started = time.perf_counter()
        cam = grad_cam(model, photo, int(predicted))
        cam_seconds.append(time.perf_counter() - started)
        leaf = leaf_mask(photo)
        leaf_shares.append(float(leaf.mean()))
        if cam.sum() > 0:
            cam_shares.append(float(cam[leaf].sum() / cam.sum()))
            peak = cam >= np.quantile(cam, 0.8)
            peak_shares.append(float(np.count_nonzero(peak & leaf) / np.count_nonzero(peak)))

    figures = {
        "accuracy_15_class": round(report["accuracy"], 4),
        "accuracy_healthy_vs_diseased": round(grouped, 4),
        "healthy_vs_diseased_method": "grouped 15-class predictions",
        "train_seconds": round(fit.seconds, 1),
        "epochs": epochs_run,
        "best_epoch": fit.best_epoch,
        "validation_images": int(validation.size),
        "cam_leaf_mass_share": round(float(np.mean(cam_shares)), 4),
        "cam_top_fifth_on_leaf": round(float(np.mean(peak_shares)), 4),
        "leaf_area_share": round(float(np.mean(leaf_shares)), 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "images_per_s_train": round(train_images / fit.seconds, 1),
        "images_per_s_predict": round(validation.size / predict_seconds, 1),
        # The first map also traces the Grad-CAM graph; the median is the steady cost.
        "gradcam_ms_per_image": round(1000 * float(np.median(cam_seconds)), 1),
        "load_seconds": round(load_seconds, 1),
        "input_size": config.input_size,
    }
    print()
    print(f"{'class':<44} {'precision':>9} {'recall':>7} {'images':>7}")
    for name, row in report["classes"].items():
        precision = "n/a" if row["precision"] is None else f"{row['precision']:.3f}"
        print(f"{name:<44} {precision:>9} {row['recall']:>7.3f} {row['support']:>7}")
    print()
    for key, value in figures.items():
        print(f"{key:<30} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
