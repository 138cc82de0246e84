"""Headless entry point ``dlbio``: train, predict and evaluate without a screen.

``dlbio train|predict|evaluate`` dispatch on ``--task`` (training) or on the task recorded
in the model folder (prediction, evaluation); ``builtin:NAME`` names a model shipped with
the package wherever a model folder is asked for, and ``dlbio models`` lists them.  Errors
meant for the user are printed as one clear line with exit code 2; Ctrl+C stops training
after the current batch and still saves the best weights.  TensorFlow's own C++ log lines
(CUDA and CPU feature notices that read like errors) stay hidden unless ``--verbose`` is
given.  ``dlbio engine`` serves models over a socket, and ``dlbio predict --engine`` predicts
on such an engine (:mod:`napari_dlbio.cli.engine`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from napari_dlbio import __version__
from napari_dlbio.cli._cluster import add_cluster_options, uses_cluster
from napari_dlbio.cli._object_options import add_object_options, wants_objects
from napari_dlbio.cli.engine import add_engine_command, add_engine_options
from napari_dlbio.cli.export import add_export_command
from napari_dlbio.core.errors import DlbioError

# The model store refuses larger config.json files too.
_MAX_CONFIG_BYTES = 10 * 2**20
_MODEL_HELP = "model folder, or builtin:NAME for a built-in model (see dlbio models)"


def build_parser() -> argparse.ArgumentParser:
    """The ``dlbio`` argument parser (all sub-commands)."""
    parser = argparse.ArgumentParser(
        prog="dlbio",
        description="Train, predict and evaluate U-Nets and image classifiers on bioimages.",
    )
    parser.add_argument("--version", action="version", version=f"napari-dlbio {__version__}")
    _add_verbose_option(parser, default=False)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a new model or fine-tune a saved one")
    train.add_argument("--task", choices=["segment", "classify"], default="segment")
    train.add_argument(
        "--images", required=True, help="image stack, folder of slices, or class folder"
    )
    train.add_argument("--labels", help="label stack for segmentation (same shape as the images)")
    train.add_argument(
        "--label-values", help="map label values to classes, e.g. '255=background,0=membrane'"
    )
    train.add_argument("--out", required=True, help="model folder to write")
    train.add_argument("--config", help="JSON file with training settings")
    train.add_argument("--epochs", type=int, help="number of epochs")
    train.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this long")
    train.add_argument(
        "--boundary-classes",
        nargs="+",
        metavar="CLASS",
        help="segmentation: classes that separate objects (membranes); their objects are the "
        "regions they enclose. Other classes are objects in themselves (default)",
    )
    train.add_argument(
        "--from",
        dest="from_model",
        metavar="MODEL",
        help="start from this model folder or built-in model (builtin:NAME): fine-tune it, "
        "or, for a classifier and images of other classes, train a new top for them",
    )
    train.add_argument(
        "--weights", help="local backbone weights file (classification transfer learning)"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_verbose_option(train)

    predict = commands.add_parser("predict", help="predict masks or classes with a model folder")
    predict.add_argument("--model", required=True, help=_MODEL_HELP)
    predict.add_argument(
        "--images", required=True, nargs="+", help="image stack, folder, files or zarr store"
    )
    predict.add_argument(
        "--out",
        required=True,
        help="mask: a TIFF, or an OME-Zarr store for a name ending in .zarr (segmentation); "
        "a CSV (classification)",
    )
    predict.add_argument(
        "--probabilities",
        help="also write the class probabilities: a TIFF, or OME-Zarr for a name ending in .zarr",
    )
    predict.add_argument(
        "--overwrite",
        action="store_true",
        help="segmentation: replace existing outputs (only once the new ones are complete)",
    )
    predict.add_argument("--cam", metavar="CAM_DIR", help="write Grad-CAM maps (classification)")
    _add_speck_option(predict)
    add_object_options(predict, files=True)
    add_cluster_options(predict)
    add_engine_options(predict)
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_verbose_option(predict)

    evaluate = commands.add_parser("evaluate", help="compare predictions with ground truth")
    evaluate.add_argument("--model", required=True, help=_MODEL_HELP)
    evaluate.add_argument("--images", required=True, help="image stack or class folder")
    evaluate.add_argument("--labels", help="ground-truth label stack (segmentation)")
    evaluate.add_argument("--label-values", help="map label values to classes")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    _add_speck_option(evaluate)
    add_object_options(evaluate, files=False)
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_verbose_option(evaluate)

    models = commands.add_parser("models", help="list the built-in models")
    models.add_argument("--json", action="store_true", help="print a JSON list of objects")
    _add_verbose_option(models)

    _add_verbose_option(add_export_command(commands))
    _add_verbose_option(add_engine_command(commands))
    return parser


def _add_verbose_option(
    parser: argparse.ArgumentParser, default: object = argparse.SUPPRESS
) -> None:
    """``--verbose`` before or after the command; a command's own copy adds no default.

    Without the suppressed default a command would reset ``dlbio --verbose train`` to False.
    """
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=default,
        help="also show TensorFlow's own log lines (GPU discovery, CUDA and CPU notices)",
    )


def _add_speck_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--min-region-pixels",
        type=int,
        metavar="N",
        help="segmentation: regions smaller than N pixels become background "
        "(default: the model's setting)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dlbio``; return the process exit code."""
    _print_any_file_name()
    args = build_parser().parse_args(argv)
    if args.verbose:
        from napari_dlbio.models._tf import show_tensorflow_logs

        show_tensorflow_logs()
    try:
        return _dispatch(args)
    except DlbioError as error:
        sys.stderr.write(f"dlbio: error: {error}\n")
        return 2
    except MemoryError:
        # A traceback would hide the one thing the user can change.
        sys.stderr.write(
            "dlbio: error: out of memory. Lower batch_size, patch_size or tile_size in the "
            "--config settings, crop the images, or use a computer with more memory.\n"
        )
        return 2


def _print_any_file_name() -> None:
    """Let standard output print file names that are not valid UTF-8.

    Python reads such names with lone surrogates ("caf\\udce9"); a strict UTF-8 stream
    would then fail on the summary line after the work is done.  They are written back
    as the bytes they came from, as ``ls`` prints them.
    """
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "export":
        from napari_dlbio.cli.export import export

        return export(args)
    if args.command == "engine":
        from napari_dlbio.cli.engine import serve

        return serve(args)
    from napari_dlbio.cli import classification, segmentation

    if args.command == "models":
        return _list_builtin_models(args.json)
    if args.command == "train":
        if args.task == "classify" and args.boundary_classes:
            from napari_dlbio.core.errors import InputDataError

            raise InputDataError(
                "--boundary-classes is for segmentation; image classes have no objects."
            )
        engine = classification if args.task == "classify" else segmentation
        return engine.train(args)
    if args.command == "predict" and (args.engine or args.authkey_file):
        # The model lives with the engine: its task is read there, not here.
        from napari_dlbio.cli.engine import refuse_options_beside_engine

        refuse_options_beside_engine(args)
        return segmentation.predict(args)
    task = _model_task(args.model)
    _refuse_options_of_the_other_task(args, task)
    engine = classification if task == "classification" else segmentation
    return engine.predict(args) if args.command == "predict" else engine.evaluate(args)


def _refuse_options_of_the_other_task(args: argparse.Namespace, task: str) -> None:
    """An option the model's task has no use for is an error, not silently ignored."""
    from napari_dlbio.core.errors import InputDataError

    if task == "classification" and getattr(args, "min_region_pixels", None) is not None:
        raise InputDataError(
            f"--min-region-pixels is for segmentation models; {args.model} is a classifier."
        )
    if task == "classification" and wants_objects(args):
        raise InputDataError(
            f"{args.model} is a classifier: it names a class per image and has no objects. "
            "--instances and the object settings are for segmentation models."
        )
    if task == "classification" and getattr(args, "overwrite", False):
        raise InputDataError(
            f"--overwrite is for segmentation outputs; {args.model} is a classifier. "
            "Choose a new --out name or move the old file away."
        )
    if task == "classification" and uses_cluster(args):
        raise InputDataError(
            f"--workers and --scheduler are for segmentation models; {args.model} is a "
            "classifier: classify the images without them."
        )
    if task != "classification" and getattr(args, "cam", None):
        raise InputDataError(
            f"--cam (Grad-CAM maps) is for classification models; {args.model} is a "
            "segmentation model: its uncertainty comes with --probabilities."
        )


def _list_builtin_models(as_json: bool) -> int:
    """``dlbio models``: name, task, classes, size and summary of every built-in model."""
    import json

    from napari_dlbio.core.builtin_models import builtin_models

    models = builtin_models()
    if as_json:
        sys.stdout.write(json.dumps([model.to_dict() for model in models], indent=2) + "\n")
        return 0
    for model in models:
        classes = ", ".join(model.classes[:4])
        if len(model.classes) > 4:
            classes += f" and {len(model.classes) - 4} more"
        sys.stdout.write(
            f"{model.reference}\n  {model.summary}\n  {model.task.value}; "
            f"{len(model.classes)} classes: {classes}; {model.size_bytes / 2**20:.1f} MB\n"
            f"  card: {model.path / 'README.md'}\n"
        )
    if not models:
        sys.stdout.write("No built-in models are installed.\n")
    return 0


def _model_task(model_dir: str) -> str:
    """The task a model folder or bioimage.io package (.zip) was made for, read without
    loading TensorFlow."""
    import json
    import zipfile
    from pathlib import Path

    from napari_dlbio.core.bioimageio_rdf import package_task, read_package_rdf
    from napari_dlbio.core.builtin_models import model_folder_path
    from napari_dlbio.core.errors import ModelFolderError

    package = Path(model_dir)
    if package.suffix.lower() == ".zip" or (package.is_file() and zipfile.is_zipfile(package)):
        return package_task(read_package_rdf(package)).value
    config_path = model_folder_path(model_dir) / "config.json"
    try:
        # A regular file of sane size only: a device or a huge file is no model description.
        if not config_path.is_file() or config_path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ValueError(config_path)
        return str(json.loads(config_path.read_text(encoding="utf-8"))["task"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise ModelFolderError(
            f"{model_dir} is not a napari-dlbio model folder (no readable config.json)."
        ) from None
