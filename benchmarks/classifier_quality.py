"""Classifier quality on real PlantVillage leaf photos, and where its Grad-CAM looks.

Either trains the built-in leaf model's network (``ClassifierConfig(input_size=128,
filters=24)``, only the time budget set) on the 15 PlantVillage classes (60 photos each):
the engine holds out a stratified 20 % (seed 0) for validation and keeps the weights of the
epoch with the lowest validation loss, and those validation photos are scored; or, with
``--model DIR``, scores an existing model folder (``builtin:NAME`` too) on every photo of
``--images`` (a class folder; give one the model did not train on).  Reports:

- accuracy over the 15 classes, and healthy vs diseased accuracy obtained by grouping the
  15-class predictions (a class is healthy when its name contains "healthy");
- the class activation map (:func:`napari_dlbio.models.gradcam.grad_cam`) of the predicted
  class on every scored photo: the share of the map's mass on leaf pixels, and the share of
  the map's strongest fifth of pixels that lies on the leaf, next to the leaf's share of the
  photo.  ``cam_leaf_concentration`` divides the mean mass share by the mean leaf share
  (1 = no better than a uniform map).  The same figures for a map that knows nothing, a
  centred isotropic Gaussian with sigma a quarter of the photo's side
  (:data:`BLOB_SIGMA_FRACTION`), give the ``blob_`` keys: the leaf is centred in these
  photos, so an explanation must beat that blob to show it looked at the leaf
  (``cam_beats_blob_share``: the share of photos where the map's leaf mass share is higher
  than the blob's).  An explanation must also depend on the class it explains, or it would
  be a leaf detector: ``cam_second_class_correlation`` is the mean Pearson correlation, over
  the photos, between the map of the predicted class and the map of the class with the
  second highest probability (1 = the same map whichever class is asked for).  Leaf pixels
  come from a simple segmentation: chroma (max - min of R, G, B; the backgrounds are grey)
  thresholded with Otsu, opened, closed, holes filled, largest component kept.  It misses
  some pale lesions and shadowed leaf parts, which lowers every measured share;
- training and prediction speed, Grad-CAM time and the process's peak memory.

Prints a readable table; the last line is one JSON object of the figures (training figures
of a ``--model`` come from its folder; ``images_per_s_train`` is then null).

Usage: python benchmarks/classifier_quality.py [--budget SECONDS] [--data DIR]
       python benchmarks/classifier_quality.py --model DIR [--images CLASS_FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import closing, disk, opening

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DLBIO_DATA", REPO.parent / "shared" / "data"))
BLOB_SIGMA_FRACTION = 0.25
"""Sigma of the centred Gaussian baseline map, as a fraction of the photo's shorter side."""


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


def centred_blob(shape: tuple[int, int], sigma_fraction: float = BLOB_SIGMA_FRACTION) -> np.ndarray:
    """A centred isotropic Gaussian map, sigma ``sigma_fraction`` of the shorter side, in (0, 1]."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    sigma = sigma_fraction * min(height, width)
    squared = (yy - (height - 1) / 2) ** 2 + (xx - (width - 1) / 2) ** 2
    return np.exp(-squared / (2 * sigma**2)).astype(np.float32)


def leaf_shares(cam: np.ndarray, leaf: np.ndarray) -> tuple[float, float] | None:
    """Share of the map's mass on the leaf, and of its strongest fifth of pixels (``None``
    for an empty map)."""
    if cam.sum() <= 0:
        return None
    peak = cam >= np.quantile(cam, 0.8)
    return (
        float(cam[leaf].sum() / cam.sum()),
        float(np.count_nonzero(peak & leaf) / np.count_nonzero(peak)),
    )


def healthy_groups(class_names: tuple[str, ...]) -> np.ndarray:
    """1 for each healthy class (name contains "healthy"), 0 for the diseased ones."""
    return np.array(["healthy" in name.lower() for name in class_names], dtype=np.int64)


def trained_model(images: Path, budget: float) -> tuple[Any, Any, np.ndarray, dict[str, Any]]:
    """Train the built-in leaf network on a class folder; return the model, the data, the
    engine's validation indices and the training figures."""
    from napari_dlbio.core.class_dataset import load_class_folder, stratified_split
    from napari_dlbio.core.classifier_config import ClassifierConfig
    from napari_dlbio.core.events import EpochEnded, run_to_end
    from napari_dlbio.models.classification import iter_train_classifier

    config = ClassifierConfig(input_size=128, filters=24, time_budget_s=budget)
    started = time.perf_counter()
    data = load_class_folder(images, config.input_size)
    load_seconds = time.perf_counter() - started
    config = config.replace(class_names=data.class_names)
    print(
        f"{len(data.paths)} photos of {len(data.class_names)} classes; training for up to "
        f"{budget:.0f} s"
    )

    def show(event: object) -> None:
        if isinstance(event, EpochEnded):
            figures = {key: round(value, 3) for key, value in event.metrics.items()}
            print(f"  epoch {event.epoch:>3}  loss {event.loss:.3f}  {figures}", flush=True)

    result = run_to_end(iter_train_classifier(data.images, data.class_indices, config), show)
    fit = result.fit
    epochs_run = len(fit.history["loss"])
    steps = int(np.ceil((1 - config.validation_fraction) * len(data.paths) / config.batch_size))
    # The engine's own split (same function, same seed) gives the validation photos.
    _, validation = stratified_split(
        data.class_indices, config.validation_fraction, result.model.config.seed
    )
    figures = {
        "model": "trained here",
        "train_seconds": round(fit.seconds, 1),
        "epochs": epochs_run,
        "best_epoch": fit.best_epoch,
        "images_per_s_train": round(epochs_run * steps * config.batch_size / fit.seconds, 1),
        "load_seconds": round(load_seconds, 1),
    }
    return result.model, data, validation, figures


def saved_model(folder: str, images: Path) -> tuple[Any, Any, np.ndarray, dict[str, Any]]:
    """Load a model folder and every photo of a class folder with the model's classes."""
    from napari_dlbio.core.class_dataset import load_class_folder
    from napari_dlbio.core.config import Task
    from napari_dlbio.models.classification import classifier_config
    from napari_dlbio.models.store import load_model_folder

    model = load_model_folder(folder, Task.CLASSIFICATION)
    config = classifier_config(model)
    started = time.perf_counter()
    data = load_class_folder(images, config.input_size, config.input_channels)
    load_seconds = time.perf_counter() - started
    if data.class_names != config.class_names:
        raise SystemExit(
            f"The sub-folders of {images} are not the model's classes {config.class_names}."
        )
    print(f"{len(data.paths)} photos of {len(data.class_names)} classes; scoring {folder}")
    figures = {
        "model": str(folder),
        "train_seconds": model.metrics.get("train_seconds"),
        "epochs": model.metrics.get("epochs_run"),
        "best_epoch": model.metrics.get("best_epoch"),
        "images_per_s_train": None,
        "load_seconds": round(load_seconds, 1),
    }
    return model, data, np.arange(len(data.paths)), figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    parser.add_argument("--model", help="score this model folder instead of training one")
    parser.add_argument(
        "--images", type=Path, help="class folder of photos (default DATA/plantvillage)"
    )
    args = parser.parse_args()
    images = args.images or args.data / "plantvillage"

    from napari_dlbio.core.io import read_image
    from napari_dlbio.core.metrics import classification_report
    from napari_dlbio.models.classification import predict_classifier
    from napari_dlbio.models.gradcam import grad_cam

    if args.model:
        model, data, scored, training = saved_model(args.model, images)
    else:
        model, data, scored, training = trained_model(images, args.budget)

    truth = data.class_indices[scored]
    started = time.perf_counter()
    prediction = predict_classifier(model, data.images[scored])
    predict_seconds = time.perf_counter() - started
    report = classification_report(truth, prediction.predicted, data.class_names)
    groups = healthy_groups(data.class_names)
    grouped = float(np.mean(groups[truth] == groups[prediction.predicted]))

    shares: dict[str, list[tuple[float, float]]] = {"cam": [], "blob": []}
    leaf_area, cam_seconds, beats_blob, correlations = [], [], [], []
    for index, predicted, probabilities in zip(
        scored, prediction.predicted, prediction.probabilities, strict=True
    ):
        photo = read_image(data.paths[index])
        started = time.perf_counter()
        cam = grad_cam(model, photo, int(predicted))
        cam_seconds.append(time.perf_counter() - started)
        leaf = leaf_mask(photo)
        leaf_area.append(float(leaf.mean()))
        found = {
            name: leaf_shares(heatmap, leaf)
            for name, heatmap in (("cam", cam), ("blob", centred_blob(cam.shape)))
        }
        for name, row in found.items():
            if row is not None:
                shares[name].append(row)
        if found["cam"] is not None:
            beats_blob.append(found["cam"][0] > found["blob"][0])
        second = grad_cam(model, photo, int(np.argsort(probabilities)[-2]))
        if cam.std() > 0 and second.std() > 0:
            correlations.append(float(np.corrcoef(cam.ravel(), second.ravel())[0, 1]))
    mass = {name: float(np.mean([m for m, _ in rows])) for name, rows in shares.items()}
    peak = {name: float(np.mean([p for _, p in rows])) for name, rows in shares.items()}
    leaf_area_share = float(np.mean(leaf_area))

    figures = {
        "accuracy_15_class": round(report["accuracy"], 4),
        "accuracy_healthy_vs_diseased": round(grouped, 4),
        "healthy_vs_diseased_method": "grouped 15-class predictions",
        **training,
        "validation_images": int(scored.size),
        "cam_leaf_mass_share": round(mass["cam"], 4),
        "cam_top_fifth_on_leaf": round(peak["cam"], 4),
        "leaf_area_share": round(leaf_area_share, 4),
        "cam_leaf_concentration": round(mass["cam"] / leaf_area_share, 3),
        "blob_leaf_mass_share": round(mass["blob"], 4),
        "blob_top_fifth_on_leaf": round(peak["blob"], 4),
        "blob_leaf_concentration": round(mass["blob"] / leaf_area_share, 3),
        "blob_sigma_fraction": BLOB_SIGMA_FRACTION,
        "cam_beats_blob_share": round(float(np.mean(beats_blob)), 4),
        "cam_second_class_correlation": round(float(np.mean(correlations)), 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "images_per_s_predict": round(scored.size / predict_seconds, 1),
        # The first map also traces the Grad-CAM graph; the median is the steady cost.
        "gradcam_ms_per_image": round(1000 * float(np.median(cam_seconds)), 1),
        "input_size": int(data.images.shape[1]),
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
