"""``dlbio train|predict|evaluate`` for segmentation models (U-Nets).

Standard output carries results (a summary line, or the evaluation JSON); progress and
notices go to standard error so scripts can parse standard output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dlbio.cli._cluster import cluster_client
from napari_dlbio.cli._outputs import (
    SliceWrite,
    open_probabilities,
    output_scale,
    refuse_existing_outputs,
    write_mask,
)
from napari_dlbio.cli._progress import ProgressPrinter
from napari_dlbio.cli._signals import cancel_on_interrupt
from napari_dlbio.cli.objects import (
    ObjectOutput,
    object_scores,
    object_settings,
    pixel_size,
    scores_text,
)
from napari_dlbio.core.config import Task
from napari_dlbio.core.errors import ConfigError, InputDataError
from napari_dlbio.core.events import (
    CancelToken,
    Event,
    Finished,
    Notice,
    RunState,
    SlicePredicted,
    run_to_end,
)
from napari_dlbio.core.io import ImageStack, read_label_stack, read_stack
from napari_dlbio.core.labels import annotation_from_dense, parse_label_values
from napari_dlbio.core.masks import mask_from_probabilities
from napari_dlbio.core.normalisation import image_channels
from napari_dlbio.core.segmentation_config import SegmentationConfig

if TYPE_CHECKING:
    from napari_dlbio.cli.engine import RemoteModel
    from napari_dlbio.models.store import ModelFolder


def train(args: argparse.Namespace) -> int:
    """``dlbio train`` for segmentation: read, train (or fine-tune), save the model folder.

    One worker of a multi-worker cluster (``TF_CONFIG``, or ``srun`` with several tasks)
    trains its share; only the chief writes the model folder and checkpoints.
    """
    from napari_dlbio.models.distribute import find_cluster
    from napari_dlbio.models.segmentation import iter_train_segmentation
    from napari_dlbio.models.store import check_destination, load_model_folder, save_model_folder

    if not args.labels:
        raise InputDataError(
            "Segmentation training needs --labels: a label stack of the same size as the images."
        )
    out = check_destination(args.out)  # a wrong --out is found now, not after training
    cluster = find_cluster()
    initial = load_model_folder(args.from_model, Task.SEGMENTATION) if args.from_model else None
    config = _training_config(args, initial)
    printer = ProgressPrinter(sys.stderr, quiet=args.quiet)
    if cluster is not None:
        printer(Notice(cluster.describe()))
    stack = _read_stack(args.images, printer)
    annotations = _read_annotations(args.labels, args.label_values, config.class_names, printer)
    _check_labels_fit(stack, annotations)
    images = stack.data
    if initial is None:
        # Only a trained model has channels that images must fit: a new network is built
        # for the images it learns from (grey, or colour), whatever the settings say.
        channels = image_channels(images)
        if args.config and channels != config.input_channels:
            printer(
                Notice(
                    f"The new model takes {channels} channel(s), as the images have (grey "
                    f"saved as RGB counts as 1), not the {config.input_channels} of {args.config}."
                )
            )
        config = config.replace(input_channels=channels)
    cancel = CancelToken()
    chief = cluster is None or cluster.is_chief  # only the chief writes files
    checkpoints = out.parent / f".{out.name}.checkpoints"
    with cancel_on_interrupt(cancel):
        result = run_to_end(
            iter_train_segmentation(
                images,
                annotations,
                config,
                cancel=cancel,
                initial=initial,
                checkpoint_dir=checkpoints if chief else None,
            ),
            printer,
        )
    if result.fit.best_epoch is None:
        sys.stderr.write("dlbio: stopped before the first epoch ended; no model was saved.\n")
        return 1
    if cluster is not None and not cluster.is_chief:
        sys.stdout.write(
            f"Trained as worker {cluster.index + 1} of {len(cluster.workers)} (best epoch "
            f"{result.fit.best_epoch}; {result.fit.stop_reason.value}); the chief saves {out}.\n"
        )
        return 0
    folder = result.model
    save_model_folder(out, folder.model, folder.task, folder.config, folder.history, folder.metrics)
    shutil.rmtree(checkpoints, ignore_errors=True)
    summary = f"Saved {out} (best epoch {result.fit.best_epoch}"
    if "val_iou" in folder.metrics:
        summary += f", validation IoU {folder.metrics['val_iou']:.3f}"
    sys.stdout.write(summary + f"; {result.fit.stop_reason.value}).\n")
    return 0


def predict(args: argparse.Namespace) -> int:
    """``dlbio predict`` for segmentation: write the mask (probabilities, objects) as TIFF,
    or as OME-Zarr for an ``--out`` / ``--probabilities`` ending in ``.zarr``.

    Slices are predicted and written one at a time, so volumes larger than memory work
    (TIFFs beyond a size are read memory-mapped); so are their objects, unless they are
    found through the stack.
    """
    out = Path(args.out)
    probabilities_path = Path(args.probabilities) if args.probabilities else None
    refuse_existing_outputs((out, probabilities_path), args.images, overwrite=args.overwrite)
    model = _load_model(args)
    printer = ProgressPrinter(sys.stderr, quiet=args.quiet)
    images = _read_images(args.images, printer)
    scale = output_scale(args.images, pixel_size(args))
    class_names = tuple(model.config.class_names)
    objects = None
    if args.instances:
        objects = ObjectOutput(
            Path(args.instances), model.config, object_settings(args), images, scale[0]
        )
    cancel = CancelToken()
    try:
        with cancel_on_interrupt(cancel), cluster_client(args) as client, ExitStack() as files:
            write_probabilities = None
            if probabilities_path is not None:
                write_probabilities = files.enter_context(
                    open_probabilities(
                        probabilities_path,
                        shape=images.shape[:3],
                        class_names=class_names,
                        scale=scale,
                        overwrite=args.overwrite,
                    )
                )
            object_files = on_slice = None
            if objects is not None:
                object_files = files.enter_context(objects.open())
                on_slice = objects.slice_step(object_files)
            masks = _mask_pages(
                _prediction_events(args, model, images, client, cancel),
                printer,
                write_probabilities,
                model.config.min_region_pixels,
                on_slice,
            )
            write_mask(
                out,
                masks,
                shape=images.shape[:3],
                class_names=class_names,
                scale=scale,
                overwrite=args.overwrite,
            )
            if objects is not None:
                objects.finish(object_files)
    except _PredictionStopped:
        sys.stderr.write("dlbio: prediction stopped; nothing was written.\n")
        return 1
    written = [str(path) for path in (out, probabilities_path) if path is not None]
    if objects is not None:
        counts = ", ".join(f"{n} {kind}" for kind, n in object_files.counts.items())
        written.append(f"the objects in {objects.folder} ({counts or 'none found'})")
    sys.stdout.write(f"Wrote {' and '.join(written)}.\n")
    return 0


def _load_model(args: argparse.Namespace) -> ModelFolder | RemoteModel:
    """The model folder, with ``--min-region-pixels`` in place of its own setting if given
    (with ``--engine``: the model loaded in the engine, its settings read from there)."""
    if getattr(args, "engine", None):
        from napari_dlbio.cli.engine import load_remote_model

        return load_remote_model(args)
    from napari_dlbio.models.store import load_model_folder

    model = load_model_folder(args.model, Task.SEGMENTATION)
    if args.min_region_pixels is None:
        return model
    config = model.config.replace(min_region_pixels=args.min_region_pixels)
    return dataclasses.replace(model, config=config)


def _prediction_events(
    args: argparse.Namespace,
    model: ModelFolder | RemoteModel,
    images: np.ndarray,
    client: Any,
    cancel: CancelToken,
) -> Iterator[Event]:
    """The slices predicted here, by the dask cluster of ``client`` when there is one, or
    by the engine the model was loaded in (``--engine``)."""
    if getattr(args, "engine", None):
        return model.iter_predict_slices(images, cancel=cancel)
    if client is None:
        from napari_dlbio.models.segmentation import iter_predict_slices

        return iter_predict_slices(model, images, cancel=cancel)
    from napari_dlbio.models.distributed_prediction import iter_predict_slices_distributed

    return iter_predict_slices_distributed(args.model, images, client, cancel=cancel)


class _PredictionStopped(Exception):
    """The user stopped the prediction (Ctrl+C): no file may be kept."""


def _mask_pages(
    job: Iterator[Event],
    printer: ProgressPrinter,
    write_probabilities: SliceWrite | None,
    min_region_pixels: int,
    on_slice: Callable[[int, np.ndarray], None] | None = None,
) -> Iterator[np.ndarray]:
    """Masks of the slices as they are predicted; their probabilities are written as well.

    ``on_slice(index, probabilities)`` sees each slice's probabilities (to find objects).
    """
    for event in job:
        if isinstance(event, SlicePredicted):
            if write_probabilities is not None:
                write_probabilities(event.index, event.probabilities)
            if on_slice is not None:
                on_slice(event.index, event.probabilities)
            yield mask_from_probabilities(event.probabilities, min_region_pixels)
        elif isinstance(event, Finished) and event.state is not RunState.DONE:
            raise _PredictionStopped
        else:
            printer(event)


def evaluate(args: argparse.Namespace) -> int:
    """``dlbio evaluate`` for segmentation: per-class IoU / Dice against ground truth, and
    for dense ground truth the object scores (V_rand / V_info of cells, F1 of objects)."""
    from napari_dlbio.models.segmentation import evaluate_segmentation, iter_predict_segmentation

    if not args.labels:
        raise InputDataError("Evaluation needs --labels: the ground truth of the images.")
    model = _load_model(args)
    class_names = model.config.class_names
    printer = ProgressPrinter(sys.stderr, quiet=args.quiet or args.json)
    stack = _read_stack(args.images, printer)
    annotation = _read_annotations(args.labels, args.label_values, class_names, printer)
    _check_labels_fit(stack, annotation)
    prediction = run_to_end(iter_predict_segmentation(model, stack.data), printer)
    report = evaluate_segmentation(prediction.mask, annotation, class_names)
    objects, notes = object_scores(
        model.config, annotation, prediction.probabilities, stack.data, object_settings(args)
    )
    for note in notes:
        printer(Notice(note))
    if objects:
        report["objects"] = objects
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(_report_table(report))
        sys.stdout.write("".join(f"{line}\n" for line in scores_text(objects)))
    return 0


def _training_config(args: argparse.Namespace, initial: Any) -> SegmentationConfig:
    """Config from --config (or --from's, or the defaults), then flags on top."""
    if args.config:
        config = SegmentationConfig.from_file(args.config)
    elif initial is not None:
        config = initial.config
    else:
        config = SegmentationConfig()
        if args.label_values:
            config = config.replace(class_names=_class_names(parse_label_values(args.label_values)))
    changes: dict[str, Any] = {}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.time_budget is not None:
        changes["time_budget_s"] = args.time_budget
    if args.boundary_classes is not None:
        changes["boundary_classes"] = tuple(args.boundary_classes)
    return config.replace(**changes) if changes else config


def _class_names(mapping: dict[int, str]) -> tuple[str, ...]:
    """Class names of a label mapping: "background" first, the others in order given."""
    names = list(dict.fromkeys(mapping.values()))
    if "background" in names:
        names.remove("background")
        names.insert(0, "background")
    if len(names) < 2:
        raise ConfigError(
            f"--label-values names only the class {names[0]!r}; a segmentation needs a "
            'background and at least one structure, e.g. "255=background,0=membrane".'
        )
    return tuple(names)


def _read_stack(path: str, printer: ProgressPrinter) -> ImageStack:
    """:func:`read_stack`, telling the user what to know about how the file was read."""
    stack = read_stack(path)
    for note in stack.notes:
        printer(Notice(note))
    return stack


def _check_labels_fit(images: ImageStack, labels: np.ndarray) -> None:
    if labels.shape != images.data.shape[:3]:
        raise InputDataError(
            f"The labels have shape {labels.shape} but the images have shape "
            f"{images.data.shape}; give the labels of these images."
            + "".join(f" {note}" for note in images.notes)
        )


def _read_annotations(
    path: str, label_values: str | None, class_names: tuple[str, ...], printer: ProgressPrinter
) -> np.ndarray:
    """Labels as an annotation: mapped with --label-values, or taken as they are."""
    stack = read_label_stack(path)
    for note in stack.notes:
        printer(Notice(note))
    labels = np.asarray(stack.data)
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        raise InputDataError(
            f"{path} holds {labels.dtype} values; labels must be whole numbers "
            "(one class value per pixel)."
        )
    if label_values:
        return annotation_from_dense(labels, parse_label_values(label_values), class_names)
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 255):
        raise InputDataError(
            f"{path} holds values {int(labels.min())}..{int(labels.max())}; without "
            "--label-values labels must be annotations (0 = not annotated, 1 = background, "
            "2 and up = the other classes). Map dense labels with --label-values."
        )
    return labels.astype(np.uint8, copy=False)


def _read_images(paths: list[str], printer: ProgressPrinter) -> np.ndarray:
    """One stack, or several files of equal size stacked as slices."""
    stacks = [_read_stack(path, printer).data for path in paths]
    if len(stacks) == 1:
        return stacks[0]
    shapes = {stack.shape[1:] for stack in stacks}
    if len(shapes) > 1:
        raise InputDataError(
            "The images have different sizes; predict them one at a time or give a single stack."
        )
    return np.concatenate(stacks)


def _report_table(report: dict[str, Any]) -> str:
    lines = [f"pixel accuracy {_figure(report['pixel_accuracy'])}", ""]
    lines.append(f"{'class':<24} {'IoU':>7} {'Dice':>7} {'pixels':>12}")
    for name, figures in report["classes"].items():
        lines.append(
            f"{name:<24} {_figure(figures['iou']):>7} {_figure(figures['dice']):>7} "
            f"{figures['pixels']:>12}"
        )
    return "\n".join(lines) + "\n"


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
