"""``dlbio train|predict|evaluate`` for image classifiers.

Standard output carries results (a summary line, the evaluation JSON or table); progress,
notices and the list of skipped files go to standard error so scripts can parse standard
output.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlbio.cli._progress import ProgressPrinter
from napari_dlbio.cli._signals import cancel_on_interrupt
from napari_dlbio.core.class_dataset import (
    ClassDataset,
    load_class_folder,
    load_images,
    skipped_text,
)
from napari_dlbio.core.classifier_config import ClassifierConfig
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import InputDataError
from napari_dlbio.core.events import CancelToken, Notice, run_to_end
from napari_dlbio.core.io import IMAGE_SUFFIXES, OutputExistsError, atomic_file, natural_key

if TYPE_CHECKING:
    from napari_dlbio.models.classification import ClassPrediction


def train(args: argparse.Namespace) -> int:
    """``dlbio train --task classify``: read a class folder, train, save the model folder.

    With ``--from``, a folder of the model's classes (all or some) fine-tunes it; a folder
    with any class the model never learned trains a new top for the folder's classes on
    the model's network (transfer learning).
    """
    from napari_dlbio.models.classification import iter_train_classifier
    from napari_dlbio.models.store import check_destination, load_model_folder, save_model_folder

    check_destination(args.out)
    printer = ProgressPrinter(sys.stderr, quiet=args.quiet)
    initial = load_model_folder(args.from_model, Task.CLASSIFICATION) if args.from_model else None
    config = _training_config(args, initial)
    network = config if initial is None else initial.config  # --from keeps its input
    data = load_class_folder(args.images, network.input_size, network.input_channels)
    # The engine reads the indices in these names and decides: fine-tune or a new top.
    config = config.replace(class_names=data.class_names)
    if initial is not None:
        _say_if_new_classes(data.class_names, initial.config.class_names, printer)
    if data.skipped:
        printer(Notice(skipped_text(data.skipped)))
    out = Path(args.out)
    checkpoints = out.parent / f".{out.name}.checkpoints"
    cancel = CancelToken()
    with cancel_on_interrupt(cancel):
        result = run_to_end(
            iter_train_classifier(
                data.images,
                data.class_indices,
                config,
                cancel=cancel,
                initial=initial,
                backbone_weights=args.weights,
                checkpoint_dir=checkpoints,
            ),
            printer,
        )
    if result.fit.best_epoch is None:
        sys.stderr.write("dlbio: stopped before the first epoch ended; no model was saved.\n")
        return 1
    folder = result.model
    save_model_folder(out, folder.model, folder.task, folder.config, folder.history, folder.metrics)
    shutil.rmtree(checkpoints, ignore_errors=True)
    summary = f"Saved {out} (best epoch {result.fit.best_epoch}"
    if folder.metrics.get("val_accuracy") is not None:
        summary += f", validation accuracy {folder.metrics['val_accuracy']:.3f}"
    sys.stdout.write(summary + f"; {result.fit.stop_reason.value}).\n")
    return 0


def predict(args: argparse.Namespace) -> int:
    """``dlbio predict`` for classifiers: a CSV of classes, optionally Grad-CAM TIFFs."""
    from napari_dlbio.models.classification import iter_predict_classifier
    from napari_dlbio.models.store import load_model_folder

    out = Path(args.out)
    if out.exists():
        raise OutputExistsError(f"{out} already exists; choose a new file name.")
    printer = ProgressPrinter(sys.stderr, quiet=args.quiet)
    model = load_model_folder(args.model, Task.CLASSIFICATION)
    config = model.config
    sources = _image_files(args.images)
    cam_names = _cam_names(sources, Path(args.cam)) if args.cam else {}
    images, paths, skipped = load_images(
        [path for path, _ in sources], config.input_size, config.input_channels
    )
    skipped = _listing_skips(args.images) + skipped
    if skipped:
        printer(Notice(skipped_text(skipped)))
    if not paths:
        raise InputDataError("None of the given files could be read as an image.")
    cancel = CancelToken()
    with cancel_on_interrupt(cancel):
        prediction = run_to_end(iter_predict_classifier(model, images, cancel=cancel), printer)
    if prediction is None:
        sys.stderr.write("dlbio: prediction stopped; nothing was written.\n")
        return 1
    _write_csv(out, paths, prediction, config.class_names)
    message = f"Wrote {out} ({len(paths)} images)"
    if args.cam:
        _write_cams(model, paths, prediction.predicted, cam_names, printer)
        message += f" and Grad-CAM maps to {args.cam}"
    sys.stdout.write(message + ".\n")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``dlbio evaluate`` for classifiers: accuracy, precision, recall, confusion matrix."""
    from napari_dlbio.models.classification import evaluate_classifier
    from napari_dlbio.models.store import load_model_folder

    printer = ProgressPrinter(sys.stderr, quiet=args.quiet or args.json)
    model = load_model_folder(args.model, Task.CLASSIFICATION)
    config = model.config
    data = load_class_folder(args.images, config.input_size, config.input_channels)
    if data.skipped:
        printer(Notice(skipped_text(data.skipped)))
    images, labels = _known_classes(data, config.class_names, printer)
    report = evaluate_classifier(model, images, labels)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(_report_table(report))
    return 0


def _training_config(args: argparse.Namespace, initial: Any) -> ClassifierConfig:
    """Config from --config (or --from's, or the defaults), then flags on top."""
    if args.config:
        config = ClassifierConfig.from_file(args.config)
    elif initial is not None:
        config = initial.config
    else:
        config = ClassifierConfig()
    changes: dict[str, Any] = {}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.time_budget is not None:
        changes["time_budget_s"] = args.time_budget
    return config.replace(**changes) if changes else config


def _say_if_new_classes(
    folder_classes: Sequence[str], model_classes: Sequence[str], printer: ProgressPrinter
) -> None:
    """Tell the user why the model gets a new top: the folder's classes it never learned."""
    new = [name for name in folder_classes if name not in model_classes]
    if new:
        printer(
            Notice(
                f"The image folder has classes the model never learned "
                f"({', '.join(new)}; the model knows {', '.join(model_classes)}), so the "
                f"model is transferred to the folder's {len(folder_classes)} classes."
            )
        )


def _known_classes(
    data: ClassDataset, class_names: Sequence[str], printer: ProgressPrinter
) -> tuple[np.ndarray, np.ndarray]:
    """Images of the classes the model knows, with indices in the model's class order."""
    index_of = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in data.class_names if name not in index_of]
    if unknown:
        counts = np.bincount(data.class_indices, minlength=len(data.class_names))
        listed = ", ".join(
            f"'{name}' ({counts[data.class_names.index(name)]} images)" for name in unknown
        )
        printer(
            Notice(
                f"Skipped classes the model never learned: {listed}. "
                f"The model knows: {', '.join(class_names)}."
            )
        )
    mapping = np.array([index_of.get(name, -1) for name in data.class_names])
    labels = mapping[data.class_indices]
    keep = labels >= 0
    if not keep.any():
        raise InputDataError(
            f"No sub-folder of the image folder is named after a class of this model "
            f"({', '.join(class_names)}); name the class folders as in training."
        )
    return data.images[keep], labels[keep]


def _image_files(arguments: Sequence[str]) -> list[tuple[Path, Path]]:
    """Every image file to predict, with the folder its CAM name is relative to."""
    files: list[tuple[Path, Path]] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(
                (p for p in path.rglob("*") if p.is_file() and _is_image(p)),
                key=lambda p: natural_key(str(p.relative_to(path))),
            )
            files.extend((p, path) for p in found)
        elif path.exists():
            files.append((path, path.parent))
        else:
            raise InputDataError(f"{path} does not exist; give image files or folders.")
    if not files:
        raise InputDataError(
            f"No image files found in {', '.join(arguments)} (looked for "
            f"{', '.join(sorted(IMAGE_SUFFIXES))})."
        )
    return files


def _listing_skips(arguments: Sequence[str]) -> tuple[tuple[Path, str], ...]:
    """Non-image files inside the given folders, so the user sees they were left out."""
    skipped = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            skipped.extend(
                (p, f"not an image file (extension '{p.suffix}')")
                for p in sorted(path.rglob("*"))
                if p.is_file() and not _is_image(p) and not p.name.startswith(".")
            )
    return tuple(skipped)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _cam_names(sources: Sequence[tuple[Path, Path]], cam_dir: Path) -> dict[Path, Path]:
    """A TIFF path per image: its path under the given folder, with ``.tif``, in CAM_DIR."""
    names: dict[Path, Path] = {}
    taken: set[Path] = set()
    for path, root in sources:
        target = cam_dir / path.relative_to(root).with_suffix(".tif")
        stem, number = target.with_suffix(""), 2
        while target in taken:
            target = stem.with_name(f"{stem.name}-{number}").with_suffix(".tif")
            number += 1
        if target.exists():
            raise OutputExistsError(f"{target} already exists; choose a new or empty CAM folder.")
        taken.add(target)
        names[path] = target
    return names


def _write_csv(
    out: Path, paths: Sequence[Path], prediction: ClassPrediction, class_names: Sequence[str]
) -> None:
    """path, predicted_class, probability, seen_in_training: one row per image, written
    atomically (``seen_in_training``: the model was trained on this very image).

    File names that are not valid UTF-8 are written as their original bytes, so every
    path in the table names its file exactly.
    """
    with (
        atomic_file(out) as partial,
        partial.open("w", newline="", encoding="utf-8", errors="surrogateescape") as stream,
    ):
        writer = csv.writer(stream)
        writer.writerow(["path", "predicted_class", "probability", "seen_in_training"])
        rows = zip(
            paths,
            prediction.predicted,
            prediction.probabilities,
            prediction.seen_in_training,
            strict=True,
        )
        for path, index, row, seen in rows:
            writer.writerow([str(path), class_names[index], f"{row[index]:.6f}", str(bool(seen))])


def _write_cams(
    model: Any,
    paths: Sequence[Path],
    predicted: np.ndarray,
    names: dict[Path, Path],
    printer: ProgressPrinter,
) -> None:
    """Grad-CAM of the predicted class of every image, as a float32 TIFF of its size."""
    import tifffile

    from napari_dlbio.core.events import TileDone
    from napari_dlbio.core.io import read_image
    from napari_dlbio.models.gradcam import grad_cam

    for done, (path, index) in enumerate(zip(paths, predicted, strict=True), start=1):
        cam = grad_cam(model, read_image(path), int(index))
        # Under a temporary name first, so a full disk leaves no half-written map.
        with atomic_file(names[path]) as partial:
            tifffile.imwrite(partial, cam, metadata={"class": model.config.class_names[index]})
        printer(TileDone(done, len(paths)))


def _report_table(report: dict[str, Any]) -> str:
    lines = [f"accuracy {_figure(report['accuracy'])}", ""]
    width = max([24, *(len(name) for name in report["classes"])])
    lines.append(f"{'class':<{width}} {'precision':>9} {'recall':>7} {'images':>7}")
    for name, figures in report["classes"].items():
        lines.append(
            f"{name:<{width}} {_figure(figures['precision']):>9} "
            f"{_figure(figures['recall']):>7} {figures['support']:>7}"
        )
    return "\n".join(lines) + "\n"


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
